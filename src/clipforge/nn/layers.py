"""Transformer building blocks shared by both towers.

Parameter names follow OpenAI's CLIP (`attn.in_proj_weight`, `mlp.c_fc`, `ln_1`, ...) so that the
model's own state dict is the canonical checkpoint layout. Tensors are batch-first [batch, seq, width]
(OpenAI's code is sequence-first; the weights do not care).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from clipforge.configs import Activation
from clipforge.errors import InvalidInputError


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
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")  # transformers' "gelu_pytorch_tanh" (SigLIP)
    raise InvalidInputError(f"unknown activation {name!r}; expected 'quick_gelu', 'gelu' or 'gelu_tanh'")


@dataclass(frozen=True)
class TokenPacking:
    """Where the real tokens of a padded [batch, length] layout sit, for running without the padding.

    Per-token layers (LayerNorm, the projections, the MLP) then see only [n_real_tokens, width];
    attention alone goes back to the padded layout. With a causal mask and each row's real tokens
    first, no real token ever sees padding, so outputs at real positions are unchanged.
    """

    lengths: torch.Tensor  # [batch]: real tokens per row, at its start
    padded_length: int  # the longest row: the padded layout is [batch, padded_length]
    index: torch.Tensor  # [n_real_tokens]: their positions in the flattened [batch * length] layout

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor) -> "TokenPacking":
        padded_length = int(lengths.max())
        real = torch.arange(padded_length, device=lengths.device) < lengths[:, None]  # [batch, padded_length]
        return cls(lengths, padded_length, real.flatten().nonzero().squeeze(1))

    @property
    def batch(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def positions(self) -> torch.Tensor:
        """[n_real_tokens]: each real token's position within its row."""
        return self.index % self.padded_length

    @property
    def last_index(self) -> torch.Tensor:
        """[batch]: where each row's last real token sits in the packed layout."""
        return self.lengths.cumsum(0) - 1

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, length, ...] -> [n_real_tokens, ...]"""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[n_real_tokens, ...] -> [batch, length, ...], zeros at the padding."""
        out = x.new_zeros(self.batch * self.padded_length, *x.shape[1:])
        return out.index_copy(0, self.index, x).view(self.batch, self.padded_length, *x.shape[1:])


def attend(
    qkv: torch.Tensor,
    heads: int,
    is_causal: bool = False,
    packing: Optional[TokenPacking] = None,
    last_token_only: bool = False,
) -> torch.Tensor:
    """Multi-head attention of fused q/k/v projections; returns the heads merged, before out_proj.

    qkv: [batch, length, 3 * width] -> [batch, length, width], or with `packing`
    [n_real_tokens, 3 * width] -> [n_real_tokens, width]. last_token_only (causal, with packing):
    the output only at each row's last real token, [batch, width]; every token is still a key and value.
    """
    if packing is not None:
        qkv = packing.unpack(qkv)
    batch, length, width = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    qkv = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each [batch, heads, length, head_width]
    if last_token_only:
        if packing is None or not is_causal:
            raise InvalidInputError("last_token_only needs a causal mask and a TokenPacking")
        last = packing.lengths - 1
        q = q[torch.arange(batch, device=q.device), :, last].unsqueeze(2)  # [batch, heads, 1, head_width]
        visible = torch.arange(length, device=q.device) <= last[:, None]  # the causal mask's row
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])
        return out.reshape(batch, width)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    out = out.transpose(1, 2).reshape(batch, length, width)
    return packing.pack(out) if packing is not None else out


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (nn.MultiheadAttention's parameter layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise InvalidInputError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        is_causal: bool = False,
        packing: Optional[TokenPacking] = None,
        last_token_only: bool = False,
    ) -> torch.Tensor:
        """x: [batch, length, width], or [n_real_tokens, width] with `packing` (see `attend`)."""
        return self.out_proj(attend(self.project_qkv(x), self.heads, is_causal, packing, last_token_only))

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """The fused q/k/v projection: [..., width] -> [..., 3 * width]."""
        return F.linear(x, self.in_proj_weight, self.in_proj_bias)


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

    def forward(
        self,
        x: torch.Tensor,
        is_causal: bool = False,
        packing: Optional[TokenPacking] = None,
        last_token_only: bool = False,
    ) -> torch.Tensor:
        attended = self.attn(self.ln_1(x), is_causal=is_causal, packing=packing, last_token_only=last_token_only)
        if last_token_only:
            x = x[packing.last_index]  # type: ignore[union-attr]  # (attn checked it is set)
        x = x + attended
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
        self,
        x: torch.Tensor,
        is_causal: bool = False,
        output_hidden_states: bool = False,
        packing: Optional[TokenPacking] = None,
        last_token_only: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks; with output_hidden_states also return [input, after block 1, ..., after block L].

        With `packing`, x is [n_real_tokens, width] (see TokenPacking) and so is every output.
        With last_token_only the final block computes only each row's last real token: [batch, width].
        """
        hidden = [x] if output_hidden_states else []
        for i, block in enumerate(self.resblocks):
            last_only = last_token_only and i == len(self.resblocks) - 1
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, is_causal, packing, last_only, use_reentrant=False)
            else:
                x = block(x, is_causal=is_causal, packing=packing, last_token_only=last_only)
            if output_hidden_states:
                hidden.append(x)
        return (x, hidden) if output_hidden_states else x
