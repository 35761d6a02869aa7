"""Transformer building blocks shared by both towers.

Parameter names follow OpenAI's CLIP (`attn.in_proj_weight`, `mlp.c_fc`, `ln_1`, ...) so that the
model's own state dict is the canonical checkpoint layout. Tensors are batch-first [batch, seq, width]
(OpenAI's code is sequence-first; the weights do not care).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from clipforge.configs import Activation


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, so fp16/bf16 inference keeps fp32 statistics (as OpenAI's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: Activation) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}; expected 'quick_gelu' or 'gelu'")


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (nn.MultiheadAttention's parameter layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [batch, length, 3 * width]
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [batch, heads, length, head_width]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: Activation):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: Activation, eps: float):
        super().__init__()
        self.ln_1 = LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), is_causal=is_causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: Activation, eps: float):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_width, activation, eps) for _ in range(layers)]
        )
        self.grad_checkpointing = False

    def forward(
        self, x: torch.Tensor, is_causal: bool = False, output_hidden_states: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks; with output_hidden_states also return [input, after block 1, ..., after block L]."""
        hidden = [x] if output_hidden_states else []
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, is_causal, use_reentrant=False)
            else:
                x = block(x, is_causal=is_causal)
            if output_hidden_states:
                hidden.append(x)
        return (x, hidden) if output_hidden_states else x
