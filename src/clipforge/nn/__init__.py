"""Shared layers: LayerNorm with fp32 statistics, activations, self-attention via SDPA, residual blocks."""

from clipforge.nn.layers import (
    MLP,
    LayerNorm,
    QuickGELU,
    ResidualAttentionBlock,
    SelfAttention,
    Transformer,
    make_activation,
)

__all__ = ["LayerNorm", "QuickGELU", "make_activation", "SelfAttention", "MLP", "ResidualAttentionBlock", "Transformer"]
