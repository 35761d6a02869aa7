"""MobileCLIP-B's image tower (Vasu et al. 2024, "MobileCLIP: Fast Image-Text Models through
Multi-Modal Reinforced Training"; MobileCLIP2, Faghri et al. 2025), in the form open_clip runs it
(timm's `vit_base_mci_224`).

It is OpenAI's ViT with three changes:
- the patches come from a convolutional stem, not one 16x16 conv: conv 4x4/4 -> BatchNorm -> GELU,
  conv 2x2/2 -> BatchNorm -> GELU, conv 2x2/2 (with bias) to the model width;
- the learned position embedding covers the patch tokens only; the class token is prepended after;
- no LayerNorm before the blocks; LayerNorm eps 1e-6; exact GELU; the class token goes through the
  final LayerNorm and a linear head with bias.
The blocks are clipforge's shared pre-norm transformer (nn/layers.py); timm's fused qkv is the
same [3 * width, width] matrix (q, k, v order) as its `in_proj_weight`.

BatchNorm runs with its stored statistics (eval mode), as the reference does at inference; no
reparameterisation is involved for this tower.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from clipforge.configs import MobileClipVisionConfig
from clipforge.nn import LayerNorm, Transformer

__all__ = ["MobileClipViT"]


class ConvBNGELU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=kernel, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MobileClipViT(nn.Module):
    """[batch, 3, S, S] pixels -> [batch, embed_dim]: conv stem, positions, class token, blocks,
    final LayerNorm, the class token through the head."""

    def __init__(self, config: MobileClipVisionConfig, embed_dim: int):
        super().__init__()
        self.config = config
        width, stem = config.width, config.stem_width
        self.stem = nn.Sequential(
            ConvBNGELU(3, stem, 4, config.batch_norm_eps),
            ConvBNGELU(stem, stem, 2, config.batch_norm_eps),
            nn.Conv2d(stem, width, kernel_size=2, stride=2),
        )
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, config.grid_size**2, width))  # patches only
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_width, "gelu",
                                       config.layer_norm_eps)
        self.norm = LayerNorm(width, eps=config.layer_norm_eps)
        self.head = nn.Linear(width, embed_dim)

    @property
    def grad_checkpointing(self) -> bool:
        return self.transformer.grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self.transformer.grad_checkpointing = enable

    def initialize_parameters(self) -> None:
        """timm's ViT initialisation (truncated normal, std 0.02), for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for block in self.transformer.resblocks:
            nn.init.trunc_normal_(block.attn.in_proj_weight, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """[batch, 3, S, S] -> [batch, 1 + grid**2, width]: the tokens the first block reads."""
        x = self.stem(pixels)  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)  # [batch, grid**2, width]
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)

    def forward_full(
        self, pixels: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(tokens after the final norm, pooled class token, embedding, [embeddings, block 1, ...] or None)."""
        x = self.embed(pixels)
        hidden = None
        if output_hidden_states:
            x, hidden = self.transformer(x, output_hidden_states=True)
        else:
            x = self.transformer(x)
        x = self.norm(x)
        pooled = x[:, 0]  # [batch, width]
        return x, pooled, self.head(pooled), hidden

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_full(pixels)[2]
