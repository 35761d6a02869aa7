"""OpenAI's `clip` package API on clipforge: `from clipforge.compat import clip` instead of `import clip`.

    model, preprocess = clip.load("ViT-B/32", device=device)
    image = preprocess(Image.open("CLIP.png")).unsqueeze(0).to(device)
    text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)
    logits_per_image, logits_per_text = model(image, text)

Differences from OpenAI's package, on purpose:
- the model is fp32 on every device (OpenAI's is fp16 on CUDA); call `model.half()` for fp16;
- `jit=True` is refused: clipforge makes no TorchScript models (use `torch.compile(model)` for speed);
- weights resolve offline-first (see docs/weights.md): `download_root` is used as clipforge's cache
  directory, which holds OpenAI's `.pt` files under their own names exactly as ~/.cache/clip does;
- the default `device` (None) is decided when `load` is called, not when the module is imported.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from clipforge.errors import ClipforgeError, ClipforgeRuntimeError, InvalidInputError
from clipforge.image import Preprocess
from clipforge.models import ClipModel
from clipforge.text import Tokenizer

__all__ = ["load", "tokenize", "available_models", "OpenAIClipModel", "TokenizeError"]


class TokenizeError(ClipforgeError, RuntimeError, ValueError):
    """A text does not fit the context (OpenAI raises RuntimeError; clipforge's tokenizer ValueError)."""


class OpenAIClipModel(ClipModel):
    """`ClipModel` plus the read-only attributes scripts take from OpenAI's `clip.model.CLIP`.

    It adds no parameters or buffers, so `state_dict()` keys stay OpenAI's. `visual.input_resolution`
    is set on the image tower by `load`.
    """

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def vocab_size(self) -> int:
        return self.config.text.vocab_size


def available_models() -> list[str]:
    """The names OpenAI's `clip.available_models()` returns, e.g. "ViT-B/32", "RN50", "ViT-L/14@336px"."""
    from clipforge.model_zoo import OPENAI_MODEL_NAMES

    return list(OPENAI_MODEL_NAMES)


def load(
    name: str,
    device: Union[str, torch.device, None] = None,
    jit: bool = False,
    download_root: Optional[str] = None,
) -> tuple[OpenAIClipModel, Preprocess]:
    """Load a model by OpenAI name (`available_models()`) or from a checkpoint path: `(model, preprocess)`.

    `device=None` means CUDA when available, else CPU (OpenAI's default, decided at call time).
    The model is in eval mode; `preprocess` turns a PIL image into `[3, S, S]` as OpenAI's does.
    """
    import clipforge
    from clipforge.model_zoo import OPENAI_MODEL_NAMES

    if jit:
        raise InvalidInputError(
            "clipforge.compat.clip.load(jit=True) is not supported: clipforge makes no TorchScript models. "
            "Use jit=False (the default; same outputs) and torch.compile(model) if you want a compiled model."
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name in OPENAI_MODEL_NAMES:
        model, preprocess, _ = clipforge.load(
            OPENAI_MODEL_NAMES[name], weights="openai", device=device, cache_dir=download_root
        )
    elif Path(os.fspath(name)).expanduser().exists():
        model, preprocess, _ = clipforge.load(name, device=device)
    else:
        raise ClipforgeRuntimeError(f"Model {name} not found; available models = {available_models()}")
    return _as_openai_model(model), preprocess


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: LongTensor [n_texts, context_length]; raises on a too-long text unless `truncate`.

    Like OpenAI's tokenizer, a literal "<|endoftext|>" typed in a text becomes the special token
    (see docs/tokenizer.md), so ids match `clip.tokenize` exactly.
    """
    try:
        return _tokenizer()(texts, context_length=context_length, truncate=truncate)
    except ValueError as e:
        raise TokenizeError(str(e)) from None


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Tokenizer:
    return Tokenizer(special_tokens="openai")  # built on first use, not at import


def _as_openai_model(model: ClipModel) -> OpenAIClipModel:
    # Re-class in place rather than wrap: a wrapper would prefix every state_dict key ("model.").
    model.__class__ = OpenAIClipModel
    model.visual.input_resolution = model.config.image_size  # plain int attribute, as OpenAI's VisionTransformer
    return model  # type: ignore[return-value]
