"""What every family's model class has in common: the output of `encode_image_full`, the tower
selection for one-tower models, and the token-features helper vision-language models use.

The public model API (docs/families.md) that tasks, the CLI, encoding and export rely on, for
every family: `config`, `record`, `dtype`, `towers`, `encode_image`, `encode_text`,
`encode_image_full`, `image_tokens`, `logits`, `probabilities`, `pair_probabilities`, `forward`,
`example_tokens`, `set_grad_checkpointing`. Anything else (`text_final_norm`, `encode_text_full`
for Stable Diffusion) belongs to one family and tasks that use it say so.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Optional

import torch

from clipforge.errors import InvalidInputError

Towers = Literal["both", "image", "text"]
TOWERS: tuple[str, ...] = ("both", "image", "text")


class TowerNotLoadedError(InvalidInputError):
    """The model was loaded with one tower only and the other one was asked for."""


def check_towers(towers: str) -> str:
    if towers not in TOWERS:
        raise InvalidInputError(f"towers must be one of {TOWERS}, got {towers!r}")
    return towers


def require_tower(model: torch.nn.Module, tower: str) -> None:
    """Raise TowerNotLoadedError unless `model` holds `tower` ("image" or "text")."""
    if model.towers not in ("both", tower):
        other = "image" if tower == "text" else "text"
        raise TowerNotLoadedError(
            f"this model was loaded with the {other} tower only (tower={other!r}); its {tower} tower was never "
            f"read: load it with tower='both' or tower={tower!r}"
        )


class ImageOutput(NamedTuple):
    """What `encode_image_full` returns, for every family.

    hidden_states: [embeddings, after block 1, ..., after block L], each [batch, tokens, width],
        with no final norm; index -2 is the penultimate block's output. Equal to transformers'
        `CLIPVisionModel` / `SiglipVisionModel` `hidden_states` (for CLIP the first entry is after
        `ln_pre`, as there). None unless asked for.
    last_hidden_state: as the family's reference vision model returns it (CLIP: the last block's
        tokens *without* ln_post, as transformers' CLIPVisionModel; SigLIP: after post_layernorm).
    pooled: [batch, width] the image summary before any projection (CLIP: ln_post of the class token;
        SigLIP: the attention-pool head's output), transformers' `pooler_output`.
    image_embeds: [batch, embed_dim], what `encode_image` returns.
    num_prefix_tokens: tokens before the patch grid (CLIP ViT: 1, the class token; SigLIP: 0).
    """

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    image_embeds: torch.Tensor
    hidden_states: Optional[list[torch.Tensor]]
    num_prefix_tokens: int


def image_tokens(model: torch.nn.Module, pixels: torch.Tensor, layer: int = -2, drop_class_token: bool = True) -> torch.Tensor:
    """Per-patch image features as LLaVA-style vision-language models consume them:
    `hidden_states[layer]` (default -2, the penultimate block's output), with no final norm and,
    with `drop_class_token`, without the tokens before the patch grid.

    For CLIP this is transformers' `vision_feature_layer=-2, vision_feature_select_strategy="default"`
    (LLaVA 1.5): [batch, grid**2, width]. SigLIP has no class token, so nothing is dropped (what
    LLaVA-OneVision's "full" strategy gives for its SigLIP tower). `drop_class_token=False` keeps
    every token ("full").
    """
    out = model.encode_image_full(pixels, output_hidden_states=True)
    hidden = out.hidden_states
    if not -len(hidden) <= layer < len(hidden):
        raise InvalidInputError(f"layer {layer} is out of range: the image tower has {len(hidden)} hidden states "
                                f"(embeddings and {len(hidden) - 1} blocks)")
    states = hidden[layer]
    return states[:, out.num_prefix_tokens:] if drop_class_token else states


class ClipOutput(NamedTuple):
    """Unpacks as `logits_per_image, logits_per_text = model(pixels, tokens)`."""

    logits_per_image: torch.Tensor  # [n_images, n_texts]
    logits_per_text: torch.Tensor  # [n_texts, n_images]


class SoftmaxContrastiveHead:
    """The joint head of every family trained with CLIP's contrastive softmax (CLIP, Chinese-CLIP,
    XLM-R, EVA02, MobileCLIP): a mixin for models with `config.max_logit_scale`, `logit_scale`,
    `encode_image` and `encode_text`. SigLIP has its own (sigmoid, with a bias)."""

    # The contrastive loss this family is trained with (clipforge.train's default for it):
    # "clip" = the symmetric softmax (InfoNCE) at exp(logit_scale).
    loss_kind = "clip"

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] logits of L2-normalized features: the learned temperature exp(logit_scale)
        times the cosine similarity (computed in the features' dtype)."""
        scale = self.logit_scale.exp().to(image_features.dtype)
        return scale * image_features @ text_features.t()

    def probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] how well each text fits each image, as this model was trained to score it:
        for CLIP's contrastive loss a softmax over the texts (each row sums to 1)."""
        return self.logits(image_features, text_features).softmax(dim=-1)

    def pair_probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> Optional[torch.Tensor]:
        """[n] the probability that image i matches text i, judged on that pair alone, where the model's
        training defines one (SigLIP's sigmoid). CLIP's contrastive softmax only compares texts with
        each other, so it defines none: None."""
        return None

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> ClipOutput:
        image = self.encode_image(pixels, normalize=True)
        text = self.encode_text(tokens, normalize=True)
        logits_per_image = self.logits(image, text)
        return ClipOutput(logits_per_image, logits_per_image.t())

    def clamp_logit_scale(self) -> None:
        """Clamp the learned temperature at max_logit_scale (100), as the references do after each step."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))
