"""Vision Transformer image tower (Dosovitskiy et al. 2020, as used by CLIP: Radford et al. 2021)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from clipforge.configs import Activation, VisionTransformerConfig
from clipforge.nn import LayerNorm, Transformer


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionTransformerConfig, output_dim: int, activation: Activation, eps: float):
        super().__init__()
        self.cfg = cfg
        scale = cfg.width**-0.5
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid_size**2 + 1, cfg.width))
        self.ln_pre = LayerNorm(cfg.width, eps=eps)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.ln_post = LayerNorm(cfg.width, eps=eps)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, output_dim))

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [batch, grid**2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [batch, 1, width]
        x = torch.cat([cls, x], dim=1)  # [batch, grid**2 + 1, width]
        return x + self.positional_embedding.to(x.dtype)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.embed_patches(pixels))
        x = self.transformer(x)
        x = self.ln_post(x[:, 0])  # the class token is the image summary: [batch, width]
        return x @ self.proj  # [batch, output_dim]

    def forward_full(
        self, pixels: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(last block's tokens [batch, grid**2 + 1, width] without ln_post, pooled [batch, width],
        embeddings [batch, output_dim], hidden states [after ln_pre, block 1, ..., block L] or None)."""
        x = self.ln_pre(self.embed_patches(pixels))
        hidden = None
        if output_hidden_states:
            x, hidden = self.transformer(x, output_hidden_states=True)
        else:
            x = self.transformer(x)
        pooled = self.ln_post(x[:, 0])
        return x, pooled, pooled @ self.proj, hidden
