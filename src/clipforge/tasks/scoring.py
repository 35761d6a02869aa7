"""CLIP score: how well an image matches a caption (or two images, or two texts), as published.

Two definitions are in use and they give different numbers, so the caller picks one:

* ``"torchmetrics"`` — torchmetrics' ``CLIPScore`` / ``clip_score``: ``max(100 * mean_i cos_i, 0)``.
  The mean of the unclamped per-pair ``100 * cos`` is taken first, then clamped at 0 (its
  ``compute`` is ``max(sum / n, 0)``), and one number comes back for the whole set.
* ``"paper"`` — Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
  Captioning": ``2.5 * max(cos_i, 0)`` per pair (clamped per pair), one number per pair.
* ``"paper_prefix"`` — the same with the paper's prompt: every text is read as
  ``"A photo depicts " + text`` (as the authors' clipscore.py does).
* ``"probability"`` — the model's own probability that the pair matches, judged on that pair
  alone (``model.pair_probabilities``: SigLIP's sigmoid). Only for families whose training defines
  one; CLIP's softmax compares texts with each other, so a CLIP model refuses it.

``cos_i`` is the cosine between the two embeddings of pair ``i`` (pairs, not all-against-all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from PIL import Image

from clipforge.encoding import encode_pixels, encode_tokens
from clipforge.errors import InvalidInputError
from clipforge.image import Preprocess
from clipforge.models import ClipModel
from clipforge.text import Tokenizer, tokenizer_from_config

Definition = Literal["torchmetrics", "paper", "paper_prefix", "probability"]
Kind = Literal["image-text", "image-image", "text-text"]
ImageInput = Union[Image.Image, Sequence[Image.Image], torch.Tensor, Sequence[torch.Tensor]]
TextInput = Union[str, Sequence[str], torch.Tensor]

DEFINITIONS: tuple[str, ...] = ("torchmetrics", "paper", "paper_prefix", "probability")
KINDS: tuple[str, ...] = ("image-text", "image-image", "text-text")
PAPER_WEIGHT = 2.5  # w in CLIP-S = w * max(cos, 0); rescales the scores to roughly [0, 1]
PAPER_PREFIX = "A photo depicts "


def clip_score(
    model: ClipModel,
    images: Union[ImageInput, TextInput],
    texts: Union[ImageInput, TextInput],
    *,
    definition: Definition = "torchmetrics",
    preprocess: Optional[Preprocess] = None,
    tokenizer: Optional[Tokenizer] = None,
    kind: Kind = "image-text",
    batch_size: int = 64,
) -> torch.Tensor:
    """CLIP score of pairs ``(images[i], texts[i])``.

    Returns a 0-dim tensor for ``definition="torchmetrics"`` (its aggregate over all pairs) and a
    ``[n_pairs]`` tensor for ``"paper"`` / ``"paper_prefix"`` (the paper's per-caption score; its
    corpus-level number is ``.mean()``).

    kind: what the two arguments hold. "image-text" (default): images, texts. "image-image":
        both are images. "text-text": both are texts (the paper's prefix goes on both).
    images: PIL images, an integer (uint8) tensor of raw pixels [N, 3, H, W] / [3, H, W] or a list
        of such [3, H, W] tensors (run through ``preprocess``, as torchmetrics passes tensors to its
        processor), or a floating tensor [N, 3, S, S] that is already the model's input (used as is).
    texts: strings, or token ids [N, context] (not with "paper_prefix", which must add words).
    preprocess / tokenizer: pass the ones ``clipforge.load`` returned, so each set of weights is
        prepared as its own library does; the defaults are OpenAI's preprocessing at the model's
        image size and the standard tokenizer (truncating texts to the context, end token kept).
    A side of length 1 is compared with every item of the other side (torchmetrics would raise).
    """
    if definition not in DEFINITIONS:
        raise InvalidInputError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {KINDS}, got {kind!r}")
    first_kind, second_kind = kind.split("-")
    with torch.no_grad():
        a = _embed(model, images, first_kind, definition, preprocess, tokenizer, batch_size)
        b = _embed(model, texts, second_kind, definition, preprocess, tokenizer, batch_size)
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            raise InvalidInputError(f"expected as many {first_kind}s as {second_kind}s, got {len(a)} and {len(b)}")
        if len(a) == 0 or len(b) == 0:
            raise InvalidInputError("clip_score needs at least one pair")
        a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
        if definition == "probability":
            if kind != "image-text":
                raise InvalidInputError("definition='probability' scores image-text pairs only")
            a, b = torch.broadcast_tensors(a, b)
            probs = model.pair_probabilities(a, b)
            if probs is None:
                raise InvalidInputError(
                    f"this {model.record.family} model defines no per-pair probability (its training compares texts "
                    "with each other): use definition 'torchmetrics' or 'paper', or zero-shot classification"
                )
            return probs.float()
        cos = (a * b).sum(dim=-1)  # [n_pairs]
        return score_from_cosine(cos, definition)


def score_from_cosine(cos: torch.Tensor, definition: Definition = "torchmetrics") -> torch.Tensor:
    """Turn per-pair cosines [n] into the score of ``definition`` (see the module docstring)."""
    if definition == "torchmetrics":
        # torchmetrics averages the unclamped 100 * cos and clamps the mean, not each pair.
        mean = (100 * cos).mean(dim=0)
        return torch.maximum(mean, torch.zeros_like(mean))
    if definition in ("paper", "paper_prefix"):
        return PAPER_WEIGHT * cos.clamp(min=0)
    raise InvalidInputError(f"definition must be one of {DEFINITIONS}, got {definition!r}")


# ---- embedding either side ------------------------------------------------------------------------


def _embed(
    model: ClipModel,
    data: Union[ImageInput, TextInput],
    modality: str,
    definition: str,
    preprocess: Optional[Preprocess],
    tokenizer: Optional[Tokenizer],
    batch_size: int,
) -> torch.Tensor:
    if modality == "image":
        return encode_pixels(model, _pixels(model, data, preprocess), batch_size=batch_size, normalize=False)
    return encode_tokens(model, _tokens(model, data, definition, tokenizer), batch_size=batch_size, normalize=False)


def _pixels(model: ClipModel, images: ImageInput, preprocess: Optional[Preprocess]) -> torch.Tensor:
    """Model-ready pixels [N, 3, S, S] from PIL images, raw integer pixels or ready float pixels."""
    size = model.config.image_size
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        pixels = images.unsqueeze(0) if images.dim() == 3 else images
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise InvalidInputError(
                f"a floating-point image tensor is taken as preprocessed pixels [N, 3, {size}, {size}]; "
                f"got shape {tuple(images.shape)} (pass PIL images or uint8 pixels to have them preprocessed)"
            )
        return pixels
    preprocess = preprocess or Preprocess(model.record.preprocess)  # the model's own numerics
    if preprocess.image_size != size:
        raise InvalidInputError(f"preprocess makes {preprocess.image_size}px images, the model takes {size}px")
    if isinstance(images, Image.Image):
        images = [images]
    elif isinstance(images, torch.Tensor):
        if images.dim() not in (3, 4):
            raise InvalidInputError(f"image pixels must be [3, H, W] or [N, 3, H, W], got shape {tuple(images.shape)}")
        images = [images] if images.dim() == 3 else list(images)
    pils = [_to_pil(image, i) for i, image in enumerate(images)]
    return preprocess.batch(pils)


def _to_pil(image: Union[Image.Image, torch.Tensor], index: int) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor) and not image.is_floating_point() and image.dim() == 3 and image.shape[0] == 3:
        if image.min() < 0 or image.max() > 255:
            raise InvalidInputError(f"images[{index}]: integer pixels must lie in 0..255")
        # Raw pixels go through the same preprocessing as a decoded file would.
        return Image.fromarray(image.to(torch.uint8).permute(1, 2, 0).cpu().numpy(), mode="RGB")
    raise TypeError(
        f"images[{index}] is {type(image).__name__}"
        + (f" {tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else "")
        + "; expected a PIL image or integer pixels [3, H, W]"
    )


def _tokens(model: ClipModel, texts: TextInput, definition: str, tokenizer: Optional[Tokenizer]) -> torch.Tensor:
    if isinstance(texts, torch.Tensor):
        if definition == "paper_prefix":
            raise InvalidInputError("definition='paper_prefix' adds words to each text: pass strings, not token ids")
        if texts.dim() != 2:
            raise InvalidInputError(f"token ids must be [N, context], got shape {tuple(texts.shape)}")
        return texts
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if definition == "paper_prefix":
        texts = [PAPER_PREFIX + t for t in texts]
    tokenizer = tokenizer or tokenizer_from_config(model.record.tokenizer)  # the model's own (any family)
    return tokenizer(texts)
