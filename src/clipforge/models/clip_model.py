"""CLIP: an image tower and a causal text transformer projected into one space (Radford et al. 2021).

The text tower is inherited from `CausalTextTransformer` (token_embedding, positional_embedding,
transformer, ln_final, text_projection at the top level) rather than held in a submodule: that keeps
the model's own state dict in OpenAI's key layout, which is clipforge's one canonical checkpoint
layout, and lets a text-only encoder (Stable Diffusion's) be that same class on its own.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import ClipConfig, ModelRecord, ResNetConfig
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.text_transformer import (
    CausalTextTransformer,
    init_transformer,
)
from clipforge.models.vision_transformer import VisionTransformer


class ClipOutput(NamedTuple):
    """Unpacks as `logits_per_image, logits_per_text = model(pixels, tokens)`."""

    logits_per_image: torch.Tensor  # [n_images, n_texts]
    logits_per_text: torch.Tensor  # [n_texts, n_images]


class ClipModel(CausalTextTransformer):
    """An image tower and the causal text tower (inherited: its parameters sit at the top level of the
    state dict, OpenAI's layout) projected into one space, with a learned temperature."""

    def __init__(self, config: ClipConfig):
        super().__init__(config.text, config.embed_dim, config.activation, config.layer_norm_eps)
        self.config = config
        # The numerics that travel with the weights (preprocessing, tokenizer, provenance): set by
        # clipforge.load from the file; a model built here gets the documented defaults.
        self.record = ModelRecord.default(config)
        eps = config.layer_norm_eps
        if isinstance(config.vision, ResNetConfig):
            self.visual: nn.Module = ModifiedResNet(config.vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(config.vision, config.embed_dim, config.activation, eps)

        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation, for training from scratch (loading weights overwrites it)."""
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
        self.transformer.grad_checkpointing = enable
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enable

    # ---- image tower -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim] image embeddings."""
        features = self.visual(pixels.to(self.dtype))
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
