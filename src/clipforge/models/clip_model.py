"""CLIP: an image tower and a causal text transformer projected into one space (Radford et al. 2021).

The text tower is inherited from `CausalTextTransformer` (token_embedding, positional_embedding,
transformer, ln_final, text_projection at the top level) rather than held in a submodule: that keeps
the model's own state dict in OpenAI's key layout, which is clipforge's one canonical checkpoint
layout, and lets a text-only encoder (Stable Diffusion's) be that same class on its own.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import ClipConfig, ModelRecord, ResNetConfig
from clipforge.errors import InvalidInputError
from clipforge.models.family import (  # noqa: F401  (ClipOutput: importable from here, as before)
    ClipOutput,
    ImageOutput,
    SoftmaxContrastiveHead,
    Towers,
    check_towers,
    image_tokens,
    require_tower,
)
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.text_transformer import (
    CausalTextTransformer,
    init_transformer,
)
from clipforge.models.vision_transformer import VisionTransformer


class ClipModel(SoftmaxContrastiveHead, CausalTextTransformer):
    """An image tower and the causal text tower (inherited: its parameters sit at the top level of the
    state dict, OpenAI's layout) projected into one space, with a learned temperature.

    towers: "both", or "image" / "text" for a model holding one tower only (the other's parameters
    are never created; `clipforge.load(..., tower=...)` never reads them). `logit_scale` is kept in
    both.
    """

    def __init__(self, config: ClipConfig, towers: Towers = "both"):
        self.towers = check_towers(towers)
        super().__init__(config.text, config.embed_dim, config.activation, config.layer_norm_eps,
                         build=towers != "image")
        self.config = config
        # The numerics that travel with the weights (preprocessing, tokenizer, provenance): set by
        # clipforge.load from the file; a model built here gets the documented defaults.
        self.record = ModelRecord.default(config)
        eps = config.layer_norm_eps
        self.visual: Optional[nn.Module] = None
        if towers == "text":
            pass
        elif isinstance(config.vision, ResNetConfig):
            self.visual = ModifiedResNet(config.vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(config.vision, config.embed_dim, config.activation, eps)

        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation, for training from scratch (loading weights overwrites it)."""
        if self.token_embedding is not None:
            self.initialize_text_parameters()
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)  # each residual block starts as the identity
        if hasattr(self.visual, "transformer"):
            init_transformer(self.visual.transformer)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.transformer is not None:
            self.transformer.grad_checkpointing = enable
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enable

    # ---- image tower -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim] image embeddings."""
        require_tower(self, "image")
        features = self.visual(pixels.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_full(self, pixels: torch.Tensor, output_hidden_states: bool = False) -> ImageOutput:
        """The image tower's tokens as well as its embedding (see `ImageOutput`): hidden states equal to
        transformers' CLIPVisionModel's. ViT towers only: a ModifiedResNet has a feature map, not tokens."""
        require_tower(self, "image")
        if not isinstance(self.visual, VisionTransformer):
            raise InvalidInputError(
                "token features need a ViT image tower; this model's is OpenAI's ModifiedResNet (a feature map, "
                "not tokens): use encode_image"
            )
        last, pooled, embeds, hidden = self.visual.forward_full(pixels.to(self.dtype), output_hidden_states)
        return ImageOutput(last, pooled, embeds, hidden, num_prefix_tokens=1)

    def image_tokens(self, pixels: torch.Tensor, layer: int = -2, drop_class_token: bool = True) -> torch.Tensor:
        """LLaVA's image features: hidden_states[layer] (default -2), class token dropped, no ln_post
        ([batch, grid**2, width]); see `clipforge.models.family.image_tokens`."""
        return image_tokens(self, pixels, layer, drop_class_token)

    def example_tokens(self, batch: int = 2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[batch, context] token ids this model reads as real text would be (start token, random word
        ids, the end token at varying positions, padding): for tracing, export and conversion checks."""
        text = self.config.text
        context = text.context_length
        tokens = torch.randint(1, min(text.sot_token_id, text.eot_token_id), (batch, context), generator=generator)
        tokens[:, 0] = text.sot_token_id
        for row in range(batch):
            end = min(context - 1, 4 + 5 * row)
            tokens[row, end] = text.eot_token_id
            tokens[row, end + 1:] = text.pad_token_id
        return tokens

    # ---- both ----------------------------------------------------------------------------------
