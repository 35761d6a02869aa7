"""BERT-style text encoder (Devlin et al. 2019; RoBERTa: Liu et al. 2019; XLM-R: Conneau et al. 2020):
the text tower of Chinese-CLIP (RoBERTa-wwm in BERT's layout) and of open_clip's multilingual CLIP.

Unlike CLIP's causal text tower: post-LayerNorm blocks (x = ln(x + f(x))), a LayerNorm on the
embeddings, bidirectional attention with padding masked out as keys, token-type embeddings (all
type 0 here, as transformers uses when none are given), and pooling that is the config's choice.

Parameter names follow clipforge's CLIP layers (`attn.in_proj_weight`, `mlp.c_fc`, ...); the
checkpoint key maps (checkpoint_formats/bert.py) take transformers' BERT names onto them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import BertTextConfig
from clipforge.errors import InvalidInputError
from clipforge.nn import LayerNorm
from clipforge.nn.layers import MLP, SelfAttention


class PostNormBlock(nn.Module):
    """BERT's block: x = ln_1(x + attn(x)); x = ln_2(x + mlp(x))."""

    def __init__(self, cfg: BertTextConfig):
        super().__init__()
        self.attn = SelfAttention(cfg.width, cfg.heads)
        self.ln_1 = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.width, cfg.mlp_width, cfg.activation)
        self.ln_2 = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: [batch, length, width]; key_mask: [batch, 1, 1, length], True where a token may be attended to."""
        batch, length, width = x.shape
        heads = self.attn.heads
        qkv = self.attn.project_qkv(x).view(batch, length, 3, heads, width // heads)  # [b, n, 3, h, d]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # [b, h, n, d]
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        x = self.ln_1(x + self.attn.out_proj(attended))
        return self.ln_2(x + self.mlp(x))


class BertTextEncoder(nn.Module):
    """token ids [batch, length] -> pooled text features [batch, width] (no projection: the CLIP
    model owns that, as its shape differs between families)."""

    def __init__(self, cfg: BertTextConfig):
        super().__init__()
        if cfg.positions not in ("absolute", "roberta") or cfg.pooling not in ("first", "mean"):
            raise InvalidInputError(f"unknown positions {cfg.positions!r} or pooling {cfg.pooling!r}")
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)
        self.token_type_embedding = nn.Embedding(cfg.type_vocab_size, cfg.width)
        self.ln_embed = LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList([PostNormBlock(cfg) for _ in range(cfg.layers)])

    def position_ids(self, real: torch.Tensor) -> torch.Tensor:
        """[batch, length] position ids of the tokens, `real` being True at non-padding tokens."""
        if self.cfg.positions == "roberta":
            # RoBERTa counts real tokens from pad_token_id + 1; padding sits at pad_token_id.
            return torch.cumsum(real.long(), dim=1) * real.long() + self.cfg.pad_token_id
        return torch.arange(real.shape[1], device=real.device).expand_as(real)

    def forward_tokens(
        self, tokens: torch.Tensor, hidden_states: Optional[list[torch.Tensor]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(last hidden states [batch, length, width], real-token mask [batch, length]). With a list
        `hidden_states`, appends the embeddings (after their LayerNorm) and each block's output
        (transformers' BERT `hidden_states`)."""
        if tokens.dim() != 2:
            raise InvalidInputError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.max_positions - (self.cfg.pad_token_id + 1 if self.cfg.positions == "roberta" else 0):
            raise InvalidInputError(f"{tokens.shape[1]} tokens per text exceed this encoder's position table")
        real = tokens != self.cfg.pad_token_id  # the attention mask transformers' tokenizers give
        x = (self.token_embedding(tokens)
             + self.token_type_embedding(torch.zeros_like(tokens))
             + self.position_embedding(self.position_ids(real)))
        x = self.ln_embed(x)  # [batch, length, width]
        # Padding is never attended to; a padding query still attends to the real tokens (as transformers).
        key_mask = real[:, None, None, :]  # [batch, 1, 1, length]
        if hidden_states is not None:
            hidden_states.append(x)
        for block in self.layers:
            x = block(x, key_mask)
            if hidden_states is not None:
                hidden_states.append(x)
        return x, real

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.forward_tokens(tokens))

    def pool(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Last hidden states [batch, length, width] -> the text's summary [batch, width]."""
        if self.cfg.pooling == "first":
            return x[:, 0]  # [CLS]: [batch, width]
        weights = real.to(x.dtype).unsqueeze(-1)  # [batch, length, 1]
        return (x * weights).sum(dim=1) / weights.sum(dim=1)  # mean over real tokens: [batch, width]


def example_tokens(cfg: BertTextConfig, first_id: int, last_id: int, batch: int = 2,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[batch, context_length] ids shaped like real text: `first_id`, random ids, `last_id` at varying
    positions, then padding (for tracing, export and conversion checks)."""
    context = cfg.context_length
    # Word ids above the special ones where the vocabulary has room (BERT and XLM-R put them first).
    low = min(max(first_id, last_id, cfg.pad_token_id) + 1, cfg.vocab_size - 1)
    tokens = torch.randint(low, cfg.vocab_size, (batch, context), generator=generator)
    tokens[tokens == cfg.pad_token_id] = first_id  # padding only at the end of a row
    tokens[:, 0] = first_id
    for row in range(batch):
        end = min(context - 1, 4 + 5 * row)
        tokens[row, end] = last_id
        tokens[row, end + 1:] = cfg.pad_token_id
    return tokens
