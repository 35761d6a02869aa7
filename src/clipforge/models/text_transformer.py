"""The causal text transformer of CLIP (Radford et al. 2021): byte-pair tokens -> pooled at the first
end-of-text token -> projected. It is ClipModel's text tower (ClipModel inherits it, so its
parameters keep OpenAI's top-level key names) and, on its own, the text encoder Stable Diffusion
pipelines condition on.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import Activation, TextConfig
from clipforge.errors import InvalidInputError
from clipforge.models.family import require_tower
from clipforge.nn import LayerNorm, Transformer
from clipforge.nn.layers import TokenPacking

__all__ = ["CausalTextTransformer", "TextOutput", "init_transformer"]


class TextOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [batch, length, width], after ln_final
    pooled: torch.Tensor  # [batch, width]: last_hidden_state at the end-of-text token
    text_embeds: Optional[torch.Tensor]  # [batch, embed_dim]: pooled @ text_projection (None without one)
    hidden_states: Optional[list[torch.Tensor]]  # [embeddings, block 1, ..., block L], before ln_final


def init_transformer(tower: Transformer) -> None:
    """OpenAI's initialisation of a residual attention stack."""
    proj_std = (tower.width**-0.5) * ((2 * len(tower.resblocks)) ** -0.5)
    attn_std = tower.width**-0.5
    fc_std = (2 * tower.width) ** -0.5
    for block in tower.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.zeros_(block.attn.in_proj_bias)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.zeros_(block.attn.out_proj.bias)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class CausalTextTransformer(nn.Module):
    """token_embedding, positional_embedding, transformer (causal), ln_final, text_projection.

    `embed_dim=None` builds the tower without a projection (transformers' CLIPTextModel, Stable
    Diffusion 1.x's encoder): `encode_text_full(...).text_embeds` is then None. `build=False` leaves
    the tower out (its attributes are None): an image-only ClipModel (`towers="image"`).
    """

    def __init__(
        self, text: TextConfig, embed_dim: Optional[int], activation: Activation, eps: float, build: bool = True
    ) -> None:
        super().__init__()
        self.text_config = text
        if not build:
            self.token_embedding = self.positional_embedding = self.transformer = None  # type: ignore[assignment]
            self.ln_final = self.text_projection = None  # type: ignore[assignment]
            return
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.transformer = Transformer(text.width, text.layers, text.heads, text.mlp_width, activation, eps)
        self.ln_final = LayerNorm(text.width, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(text.width, embed_dim)) if embed_dim is not None else None

    def initialize_text_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        init_transformer(self.transformer)
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=self.text_config.width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's floating parameters."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    # ---- text tower --------------------------------------------------------------------------
    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the first end-of-text token per row (OpenAI: argmax, as eot is the largest id)."""
        is_eot = tokens == self.text_config.eot_token_id
        return torch.where(is_eot.any(dim=-1), is_eot.int().argmax(dim=-1), tokens.argmax(dim=-1))

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if self.token_embedding is None:
            require_tower(self, "text")
        if tokens.dim() != 2:
            raise InvalidInputError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.positional_embedding.shape[0]:
            raise InvalidInputError(
                f"tokens have length {tokens.shape[1]}, the model's context length is "
                f"{self.positional_embedding.shape[0]}"
            )

    def encode_text_full(self, tokens: torch.Tensor, output_hidden_states: bool = False) -> TextOutput:
        """Run the text tower over every position and return per-token states and the pooled embedding.

        This is what Stable Diffusion conditioning needs (all 77 positions); `encode_text` is the fast
        way to get only the pooled embedding.
        """
        self._check_tokens(tokens)
        eot = self.eot_positions(tokens)
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]].to(self.dtype)
        if output_hidden_states:
            x, hidden = self.transformer(x, is_causal=True, output_hidden_states=True)
        else:
            x, hidden = self.transformer(x, is_causal=True), None
        x = self.ln_final(x)  # [batch, length, width]
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]  # [batch, width]
        projected = pooled @ self.text_projection if self.text_projection is not None else None
        return TextOutput(x, pooled, projected, hidden)

    def text_final_norm(self, hidden_state: torch.Tensor) -> torch.Tensor:
        """The text tower's final LayerNorm, for hidden states taken from an inner layer (Stable
        Diffusion 2's "penultimate layer + final norm", and CLIP skip)."""
        return self.ln_final(hidden_state)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, context] token ids -> [batch, embed_dim] text embeddings.

        Only the tokens up to each row's end-of-text token are computed: under the causal mask nothing
        after it can reach the pooled position, so the padding is skipped (TokenPacking) and the
        result equals running all positions. The last block computes only the end-of-text token.
        """
        self._check_tokens(tokens)
        packing = TokenPacking.from_lengths(self.eot_positions(tokens) + 1)
        real_tokens = packing.pack(tokens[:, : packing.padded_length])
        x = self.token_embedding(real_tokens) + self.positional_embedding[packing.positions].to(self.dtype)
        last = self.transformer(x, is_causal=True, packing=packing, last_token_only=True)  # [batch, width]
        features = self.ln_final(last)
        if self.text_projection is not None:
            features = features @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features
