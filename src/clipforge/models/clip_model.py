"""CLIP: an image tower and a causal text transformer projected into one space (Radford et al. 2021).

The text tower lives directly on `ClipModel` (token_embedding, positional_embedding, transformer,
ln_final, text_projection) rather than in a submodule: that keeps the model's own state dict in
OpenAI's key layout, which is clipforge's one canonical checkpoint layout.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import ClipConfig, ModelRecord, ResNetConfig
from clipforge.errors import InvalidInputError
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.vision_transformer import VisionTransformer
from clipforge.nn import LayerNorm, Transformer
from clipforge.nn.layers import TokenPacking


class ClipOutput(NamedTuple):
    """Unpacks as `logits_per_image, logits_per_text = model(pixels, tokens)`."""

    logits_per_image: torch.Tensor  # [n_images, n_texts]
    logits_per_text: torch.Tensor  # [n_texts, n_images]


class TextOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [batch, length, width], after ln_final
    pooled: torch.Tensor  # [batch, width]: last_hidden_state at the end-of-text token
    text_embeds: torch.Tensor  # [batch, embed_dim]: pooled @ text_projection
    hidden_states: Optional[list[torch.Tensor]]  # [embeddings, block 1, ..., block L], before ln_final


class ClipModel(nn.Module):
    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        # The numerics that travel with the weights (preprocessing, tokenizer, provenance): set by
        # clipforge.load from the file; a model built here gets the documented defaults.
        self.record = ModelRecord.default(config)
        eps = config.layer_norm_eps
        if isinstance(config.vision, ResNetConfig):
            self.visual: nn.Module = ModifiedResNet(config.vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(config.vision, config.embed_dim, config.activation, eps)

        text = config.text
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.transformer = Transformer(text.width, text.layers, text.heads, text.mlp_width, config.activation, eps)
        self.ln_final = LayerNorm(text.width, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation, for training from scratch (loading weights overwrites it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)  # each residual block starts as the identity
        for tower in (self.transformer, getattr(self.visual, "transformer", None)):
            if tower is None:
                continue
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
        nn.init.normal_(self.text_projection, std=self.config.text.width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enable

    # ---- image tower -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim] image embeddings."""
        features = self.visual(pixels.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    # ---- text tower --------------------------------------------------------------------------
    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the first end-of-text token per row (OpenAI: argmax, as eot is the largest id)."""
        is_eot = tokens == self.config.text.eot_token_id
        return torch.where(is_eot.any(dim=-1), is_eot.int().argmax(dim=-1), tokens.argmax(dim=-1))

    def _check_tokens(self, tokens: torch.Tensor) -> None:
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
        return TextOutput(x, pooled, pooled @ self.text_projection, hidden)

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
        features = self.ln_final(last) @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features

    # ---- both ----------------------------------------------------------------------------------
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] logits of L2-normalized features: the learned temperature exp(logit_scale)
        times the cosine similarity (computed in the features' dtype)."""
        scale = self.logit_scale.exp().to(image_features.dtype)
        return scale * image_features @ text_features.t()

    def probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] how well each text fits each image, as this model was trained to score it:
        for CLIP's contrastive loss a softmax over the texts (each row sums to 1)."""
        return self.logits(image_features, text_features).softmax(dim=-1)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> ClipOutput:
        image = self.encode_image(pixels, normalize=True)
        text = self.encode_text(tokens, normalize=True)
        logits_per_image = self.logits(image, text)
        return ClipOutput(logits_per_image, logits_per_image.t())

    def clamp_logit_scale(self) -> None:
        """Clamp the learned temperature at max_logit_scale (100), as the references do after each step."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))
