"""open_clip's API on clipforge: `from clipforge.compat import open_clip` instead of `import open_clip`.

    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    text_features = model.encode_text(tokenizer(["a cat"]))
    image_features, text_features, logit_scale = model(image, text)

The model is an `OpenClipModel`: clipforge's `ClipModel` re-classed in place (no wrapper, so the
state_dict keys stay the canonical ones, which are open_clip's) whose `forward(image, text)` returns
open_clip's `(image_features, text_features, logit_scale.exp())` (normalized features) or, with
`output_dict=True`, the same as a dict. `ClipModel.forward` returns `(logits_per_image,
logits_per_text)` instead, which is why the adapter exists.

Differences from open_clip, on purpose:
- `("ViT-B-32", pretrained="openai")` builds the QuickGELU model the weights were trained with
  (open_clip 3.x builds GELU for the plain name and only warns);
- `preprocess_train` is `clipforge.image.augment.TrainTransform` (open_clip's training transform:
  RandomResizedCrop(scale 0.9-1), RGB, normalize), random from torch's global RNG like torchvision's;
- precision "fp16"/"bf16" casts every parameter (open_clip keeps LayerNorm weights in fp32);
  clipforge's LayerNorm computes in fp32 either way;
- the tokenizer reads a typed "<start_of_text>"/"<end_of_text>" as plain text (open_clip's
  SimpleTokenizer turns them into special tokens); all other texts get identical ids;
- options that change the architecture (force_image_size, force_patch_dropout, ...) are refused
  with an error rather than ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from clipforge.errors import InvalidInputError
from clipforge.image import Preprocess
from clipforge.image.augment import TrainTransform
from clipforge.models import ClipModel
from clipforge.models.vision_transformer import VisionTransformer
from clipforge.text import Tokenizer

__all__ = [
    "OpenClipModel",
    "create_model",
    "create_model_and_transforms",
    "get_tokenizer",
    "tokenize",
    "list_pretrained",
    "list_models",
]

HF_HUB_PREFIX = "hf-hub:"

_PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "amp": torch.float32,  # amp = fp32 weights + autocast at use time, as in open_clip
    "amp_bf16": torch.float32,
    "amp_bfloat16": torch.float32,
    "fp16": torch.float16,
    "pure_fp16": torch.float16,
    "bf16": torch.bfloat16,
    "pure_bf16": torch.bfloat16,
}

# open_clip options accepted only at their default value (anything else changes what is built).
_DEFAULT_ONLY: dict[str, Any] = {
    "force_custom_text": False,
    "force_patch_dropout": None,
    "force_image_size": None,
    "force_context_length": None,
    "force_preprocess_cfg": None,
    "image_resize_mode": None,
    "pretrained_image": False,
    "pretrained_text": True,
    "pretrained_image_path": None,
    "pretrained_text_path": None,
    "weights_only": True,
    "aug_cfg": None,
}


class OpenClipModel(ClipModel):
    """`ClipModel` with open_clip's forward. Adds no parameters or buffers."""

    output_dict: bool = False

    def forward(  # type: ignore[override]
        self, image: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None
    ) -> Union[tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor], dict[str, Any]]:
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.output_dict:
            return {"image_features": image_features, "text_features": text_features, "logit_scale": self.logit_scale.exp()}
        return image_features, text_features, self.logit_scale.exp()


def create_model(
    model_name: str,
    pretrained: Optional[str] = None,
    load_weights: bool = True,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    *,
    cache_dir: Optional[str] = None,
    output_dict: Optional[bool] = None,
    require_pretrained: bool = False,
    **kwargs: Any,
) -> OpenClipModel:
    """open_clip's `create_model`: an architecture name plus a weights tag, a checkpoint path, or none.

    `pretrained=None` (or `load_weights=False`) gives random weights; a file path is read with
    `model_name` as its architecture; `model_name="hf-hub:org/repo"` loads that hub repo. The model
    is in eval mode on `device` in the dtype `precision` names.
    """
    model, _ = _create(model_name, pretrained, load_weights, precision, device, jit, force_quick_gelu,
                       cache_dir=cache_dir, output_dict=output_dict, require_pretrained=require_pretrained, **kwargs)
    return model


def create_model_and_transforms(
    model_name: str,
    pretrained: Optional[str] = None,
    load_weights: bool = True,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    *,
    image_mean: Optional[Sequence[float]] = None,
    image_std: Optional[Sequence[float]] = None,
    image_interpolation: Optional[str] = None,
    cache_dir: Optional[str] = None,
    output_dict: Optional[bool] = None,
    **kwargs: Any,
) -> tuple[OpenClipModel, TrainTransform, Preprocess]:
    """open_clip's `create_model_and_transforms`: `(model, preprocess_train, preprocess_val)`.

    `preprocess_train` is open_clip's training transform (random resized crop at scale 0.9-1, RGB,
    normalize; `clipforge.image.augment.TrainTransform`, drawing from torch's global RNG), and
    `preprocess_val` the evaluation transform (resize the shortest side, center crop, normalize).
    `image_mean`, `image_std` and `image_interpolation` override the weights' own preprocessing
    numbers, as in open_clip.
    """
    model, preprocess = _create(model_name, pretrained, load_weights, precision, device, jit, force_quick_gelu,
                                cache_dir=cache_dir, output_dict=output_dict, **kwargs)
    overrides: dict[str, Any] = {}
    if image_mean is not None:
        overrides["mean"] = tuple(float(v) for v in image_mean)
    if image_std is not None:
        overrides["std"] = tuple(float(v) for v in image_std)
    if image_interpolation is not None:
        overrides["interpolation"] = image_interpolation
    if overrides:
        preprocess = Preprocess(dataclasses.replace(preprocess.config, **overrides))
    config = preprocess.config
    train = TrainTransform(config.image_size, config.mean, config.std, interpolation=config.interpolation)
    return model, train, preprocess


def get_tokenizer(model_name: str = "", context_length: Optional[int] = None, **kwargs: Any) -> Tokenizer:
    """The tokenizer for `model_name`: a callable `tokenizer(texts) -> LongTensor [n, context_length]`
    that truncates long texts, as open_clip's does. Unknown architecture names are an error."""
    from clipforge.model_zoo import get_architecture

    kwargs.pop("cache_dir", None)
    if kwargs:
        raise TypeError(f"get_tokenizer() got unsupported arguments: {sorted(kwargs)}")
    default_context = 77
    if model_name and not model_name.startswith(HF_HUB_PREFIX):
        default_context = get_architecture(model_name.replace("/", "-")).text.context_length
    return Tokenizer(context_length=context_length or default_context)


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77) -> torch.Tensor:
    """open_clip's `tokenize`: LongTensor [n_texts, context_length], long texts truncated."""
    return _tokenizer()(texts, context_length=context_length)


def list_pretrained(as_str: bool = False) -> Union[list[tuple[str, str]], list[str]]:
    """(architecture, tag) pairs, open_clip style: QuickGELU weights are listed under both the plain
    name and the "-quickgelu" name (both load the QuickGELU model here)."""
    from clipforge.model_zoo import WEIGHTS

    pairs: list[tuple[str, str]] = []
    for record in WEIGHTS.values():
        pairs.append((record.base_arch, record.tag))
        if record.arch != record.base_arch:
            pairs.append((record.arch, record.tag))
    return [f"{arch}:{tag}" for arch, tag in pairs] if as_str else pairs


def list_models() -> list[str]:
    """Architecture names `create_model` accepts."""
    from clipforge.model_zoo import list_architectures

    return list_architectures()


# ---- internals ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer()  # built on first use, not at import


def _create(
    model_name: str,
    pretrained: Optional[str],
    load_weights: bool,
    precision: str,
    device: Union[str, torch.device],
    jit: bool,
    force_quick_gelu: bool,
    *,
    cache_dir: Optional[str],
    output_dict: Optional[bool],
    require_pretrained: bool = False,
    **kwargs: Any,
) -> tuple[OpenClipModel, Preprocess]:
    import clipforge

    _check_options(kwargs)
    if jit:
        raise InvalidInputError("jit=True is not supported: clipforge makes no TorchScript models (use torch.compile(model))")
    if precision not in _PRECISIONS:
        raise InvalidInputError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    dtype = _PRECISIONS[precision]
    if require_pretrained and (pretrained is None or not load_weights):
        raise InvalidInputError(f"require_pretrained=True but no pretrained weights were given for {model_name!r}")

    if model_name.startswith(HF_HUB_PREFIX):
        model, preprocess, _ = clipforge.load(model_name[len(HF_HUB_PREFIX):], device=device, dtype=dtype)
    else:
        name = model_name.replace("/", "-")  # open_clip accepts OpenAI's "ViT-B/32" spelling too
        if force_quick_gelu and not name.endswith("-quickgelu"):
            name += "-quickgelu"
        if pretrained is None or not load_weights:  # open_clip's meaning: a randomly initialised model
            model, preprocess, _ = clipforge.load(name, weights="none", device=device, dtype=dtype)
        elif Path(os.fspath(pretrained)).expanduser().exists():
            model, preprocess, _ = clipforge.load(pretrained, arch=name, device=device, dtype=dtype)
        else:
            model, preprocess, _ = clipforge.load(name, weights=pretrained, cache_dir=cache_dir, device=device, dtype=dtype)
    return _as_open_clip_model(model, bool(output_dict)), preprocess


def _check_options(kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - set(_DEFAULT_ONLY))
    if unknown:
        raise TypeError(f"unexpected arguments for clipforge.compat.open_clip: {unknown}")
    changed = {k: v for k, v in kwargs.items() if not _is_default(k, v)}
    if changed:
        raise InvalidInputError(
            f"clipforge.compat.open_clip does not support {changed}: these change the architecture or the "
            "training transforms, which clipforge does not build; leave them at open_clip's defaults"
        )


def _is_default(key: str, value: Any) -> bool:
    if key == "image_resize_mode" and value == "shortest":  # open_clip's own default for CLIP models
        return True
    if key == "aug_cfg" and not value:  # {} or an empty AugmentationCfg-like dict: no augmentation asked
        return True
    return value == _DEFAULT_ONLY[key]


def _as_open_clip_model(model: ClipModel, output_dict: bool) -> OpenClipModel:
    if not isinstance(model, ClipModel):
        # OpenClipModel is a ClipModel: re-classing another family's model would run the wrong forward.
        raise InvalidInputError(f"the open_clip drop-in API covers CLIP models; this is a {model.config.family} model: "
                                "use clipforge.load and the model's own methods")
    # Re-class in place rather than wrap: a wrapper module would prefix every state_dict key ("model.").
    model.__class__ = OpenClipModel
    model.output_dict = output_dict
    size = model.config.image_size
    # open_clip's towers expose their input size: a (h, w) tuple on the ViT, an int on the ResNet.
    model.visual.image_size = (size, size) if isinstance(model.visual, VisionTransformer) else size
    return model  # type: ignore[return-value]
