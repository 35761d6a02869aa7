"""EVA-02's vision transformer (Fang et al. 2023, "EVA-02: A Visual Representation for Neon Genesis"),
as the image tower of EVA02-CLIP (Sun et al. 2023, "EVA-CLIP: Improved Training Techniques for CLIP
at Scale"), in the form open_clip runs it (timm's `Eva` with `eva02_*_clip_*` arguments).

What differs from OpenAI's ViT (vision_transformer.py):
- 2D rotary position embeddings (RoPE) on the queries and keys of the patch tokens (the class token
  is left unrotated), on top of the learned absolute position embedding;
- separate q / k / v projections, k without bias, and a LayerNorm on the attention output before
  its projection ("scale_attn_inner");
- a SwiGLU MLP with a LayerNorm between the gated product and the output projection (sub-LN);
- no LayerNorm before the blocks, one after them; class-token pooling; a linear head with bias.
Parameter names follow timm's (`blocks.N.attn.q_proj`, `blocks.N.mlp.fc1_g`, ...) so the key map
from open_clip's files is a prefix change.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import EvaVisionConfig

__all__ = ["EvaVisionTransformer", "rope_sin_cos"]


def rope_sin_cos(config: EvaVisionConfig, device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[grid**2, head_dim] sines and cosines of EVA-02's 2D rotary embedding (timm's RotaryEmbeddingCat,
    "cat" type, index grid, interleaved pairs).

    Each head dimension pair (2i, 2i+1) is rotated by the angle position * band: the first half of the
    pairs uses the row index, the second half the column index. Positions are grid indices rescaled
    onto the pretraining grid (`rope_ref_grid`), so a 224px B/16 model (14x14 patches) rotates by
    i * 16 / 14. Computed in float32 with the reference's operations, in its order.
    """
    head_dim = config.width // config.heads
    num_bands = head_dim // 4
    exponent = torch.arange(0, num_bands, 1, dtype=torch.int64, device=device).to(torch.float32) / num_bands
    bands = 1.0 / (config.rope_temperature ** exponent)  # [num_bands]
    grid = config.grid_size
    t = torch.arange(grid, dtype=torch.int64, device=device).to(torch.float32) / grid * config.rope_ref_grid
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    coords = torch.stack([rows, cols], dim=-1)  # [grid, grid, 2]
    angles = coords.unsqueeze(-1) * bands  # [grid, grid, 2, num_bands]
    sin = angles.sin().flatten(-2).flatten(0, -2)  # [grid**2, head_dim / 2]
    cos = angles.cos().flatten(-2).flatten(0, -2)
    return sin.repeat_interleave(2, -1), cos.repeat_interleave(2, -1)  # [grid**2, head_dim]


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]: the 90-degree turn of each (even, odd) pair."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, prefix: int) -> torch.Tensor:
    """Rotate the [batch, heads, tokens, head_dim] states of every token after the first `prefix` ones."""
    patches = x[:, :, prefix:]
    rotated = (patches * cos + _rotate_pairs(patches) * sin).to(x.dtype)
    return torch.cat([x[:, :, :prefix], rotated], dim=2)


class EvaAttention(nn.Module):
    def __init__(self, width: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width, bias=False)  # EVA has no key bias
        self.v_proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)  # on the attention output, before the projection
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)  # [batch, heads, tokens, head_dim]

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q, k = apply_rope(q, sin, cos, prefix=1).type_as(v), apply_rope(k, sin, cos, prefix=1).type_as(v)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, width)  # [batch, tokens, width]
        return self.proj(self.norm(out))


class SwiGLU(nn.Module):
    """silu(x W_g) * (x W_x), LayerNorm'd, then projected back (timm's SwiGLU with norm_layer)."""

    def __init__(self, width: int, hidden: int, eps: float):
        super().__init__()
        self.fc1_g = nn.Linear(width, hidden)
        self.fc1_x = nn.Linear(width, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.silu(self.fc1_g(x)) * self.fc1_x(x)))


class EvaBlock(nn.Module):
    def __init__(self, config: EvaVisionConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm1 = nn.LayerNorm(config.width, eps=eps)
        self.attn = EvaAttention(config.width, config.heads, eps)
        self.norm2 = nn.LayerNorm(config.width, eps=eps)
        self.mlp = SwiGLU(config.width, config.mlp_width, eps)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), sin, cos)
        return x + self.mlp(self.norm2(x))


class EvaVisionTransformer(nn.Module):
    """[batch, 3, S, S] pixels -> [batch, embed_dim]: patches + class token + positions, RoPE blocks,
    final LayerNorm, the class token through the head."""

    def __init__(self, config: EvaVisionConfig, embed_dim: int):
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embed = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, config.grid_size**2 + 1, width))
        self.blocks = nn.ModuleList([EvaBlock(config) for _ in range(config.layers)])
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.head = nn.Linear(width, embed_dim)
        self.grad_checkpointing = False

    def initialize_parameters(self) -> None:
        """timm's initialisation (truncated normal, std 0.02), for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """[batch, 3, S, S] -> [batch, 1 + grid**2, width]: the tokens the first block reads."""
        x = self.patch_embed(pixels)  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [batch, grid**2, width]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x + self.pos_embed.to(x.dtype)

    def forward_full(
        self, pixels: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(tokens after the final norm, pooled class token, embedding, [embeddings, block 1, ...] or None)."""
        x = self.embed(pixels)
        sin, cos = rope_sin_cos(self.config, device=x.device)
        hidden = [x] if output_hidden_states else None
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, sin, cos, use_reentrant=False)
            else:
                x = block(x, sin, cos)
            if hidden is not None:
                hidden.append(x)
        x = self.norm(x)
        pooled = x[:, 0]  # [batch, width]: the class token
        return x, pooled, self.head(pooled), hidden

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_full(pixels)[2]
