"""transformers' CLIP API on clipforge: `from clipforge.compat.transformers import CLIPModel, CLIPProcessor`
instead of `from transformers import CLIPModel, CLIPProcessor`.

    model = CLIPModel.from_pretrained("openai/clip-vit-base-patch32")      # or a local directory
    processor = CLIPProcessor.from_pretrained("openai/clip-vit-base-patch32")
    inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=image, return_tensors="pt", padding=True)
    outputs = model(**inputs)
    probs = outputs.logits_per_image.softmax(dim=1)

`from_pretrained` takes a transformers CLIP directory or hub id (resolved offline-first, see
docs/weights.md), and, since the loading is clipforge's, any other file clipforge reads. The model
is clipforge's `ClipModel` re-classed in place (no wrapper: the canonical state dict is kept) with
transformers' call conventions: `model(input_ids=, pixel_values=, attention_mask=)` returns an
output with `logits_per_image`, `logits_per_text`, `text_embeds`, `image_embeds` (normalized);
`get_text_features` / `get_image_features` return the projected features as tensors (as
transformers 4.x did).

Differences from transformers, on purpose:
- the processor tokenizes with clipforge's tokenizer: OpenAI's ids (transformers' own differs from
  OpenAI on a few rare inputs: curly quotes, some entities; docs/tokenizer.md);
- `attention_mask` is accepted and not needed: CLIP's causal text tower pools at the end token, so
  padding after it never changes the features;
- `return_tensors` must be "pt"; `return_loss=True` is refused (train with `clipforge train`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from clipforge.errors import InvalidInputError
from clipforge.image import Preprocess
from clipforge.models import ClipModel
from clipforge.text import Tokenizer
from clipforge.text.tokenizer import END_OF_TEXT_ID

__all__ = ["CLIPModel", "CLIPProcessor", "CLIPOutput", "BatchFeature"]

PathLike = Union[str, "os.PathLike[str]"]


class BatchFeature(dict):
    """What the processor returns: a dict of tensors with attribute access and `.to(device)`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Union[str, torch.device]) -> "BatchFeature":
        return BatchFeature({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class CLIPOutput(BatchFeature):
    """`logits_per_image` [n_images, n_texts], `logits_per_text`, `text_embeds`, `image_embeds` (normalized)."""


class CLIPModel(ClipModel):
    """`ClipModel` with transformers' CLIPModel call conventions. Adds no parameters or buffers."""

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: PathLike, *, torch_dtype: Optional[torch.dtype] = None,
        device_map: Optional[str] = None, local_files_only: Optional[bool] = None, **kwargs: Any,
    ) -> "CLIPModel":
        import clipforge

        _no_unsupported(kwargs, "CLIPModel.from_pretrained")
        model, _, _ = clipforge.load(os.fspath(pretrained_model_name_or_path), dtype=torch_dtype,
                                     device=device_map if device_map not in (None, "auto") else None,
                                     offline=True if local_files_only else None)
        model.__class__ = cls
        return model  # type: ignore[return-value]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **_: Any) -> torch.Tensor:
        """[batch, projection_dim] projected (not normalized) text features."""
        return self.encode_text(input_ids.to(self.token_embedding.weight.device))

    def get_image_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        """[batch, projection_dim] projected (not normalized) image features."""
        return self.encode_image(pixel_values.to(self.token_embedding.weight.device))

    def forward(  # type: ignore[override]
        self, input_ids: Optional[torch.Tensor] = None, pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None, return_loss: bool = False, **_: Any,
    ) -> CLIPOutput:
        if return_loss:
            raise InvalidInputError("return_loss=True is not supported: train with `clipforge train`")
        if input_ids is None or pixel_values is None:
            raise InvalidInputError("CLIPModel needs both input_ids and pixel_values (use get_text_features / "
                                    "get_image_features for one side)")
        image_embeds = torch.nn.functional.normalize(self.get_image_features(pixel_values), dim=-1)
        text_embeds = torch.nn.functional.normalize(self.get_text_features(input_ids), dim=-1)
        logits_per_image = self.logits(image_embeds, text_embeds)
        return CLIPOutput(logits_per_image=logits_per_image, logits_per_text=logits_per_image.t(),
                          text_embeds=text_embeds, image_embeds=image_embeds)


class CLIPProcessor:
    """Tokenizer + image processor of a transformers CLIP directory, with transformers' call signature."""

    def __init__(self, tokenizer: Tokenizer, image_processor: Preprocess, model_max_length: int = 77) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_max_length = model_max_length

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, *, local_files_only: Optional[bool] = None,
                        **kwargs: Any) -> "CLIPProcessor":
        """Reads preprocessor_config.json (or processor_config.json) and tokenizer_config.json of a
        transformers CLIP directory or hub id; the model weights are not loaded."""
        from clipforge.checkpoint_formats.reading import hf_preprocess_config

        _no_unsupported(kwargs, "CLIPProcessor.from_pretrained")
        directory = _directory(pretrained_model_name_or_path, offline=True if local_files_only else None)
        preprocess = hf_preprocess_config(directory)
        if preprocess is None:
            raise InvalidInputError(f"{directory}: no preprocessor_config.json or processor_config.json (is it a CLIP directory?)")
        tokenizer_config: dict[str, Any] = {}
        if (directory / "tokenizer_config.json").is_file():
            tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        context = int(tokenizer_config.get("model_max_length") or 77)
        context = context if context <= 4096 else 77  # transformers writes a huge number for "no limit"
        pad = tokenizer_config.get("pad_token", "<|endoftext|>")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        tokenizer = Tokenizer(context_length=context, pad_token_id=END_OF_TEXT_ID if pad == "<|endoftext|>" else 0)
        return cls(tokenizer, Preprocess(preprocess), model_max_length=context)

    def __call__(
        self, text: Union[str, Sequence[str], None] = None, images: Any = None, return_tensors: str = "pt",
        padding: Union[bool, str] = False, truncation: Optional[bool] = None, max_length: Optional[int] = None,
        **kwargs: Any,
    ) -> BatchFeature:
        if return_tensors != "pt":
            raise InvalidInputError(f"return_tensors={return_tensors!r}: clipforge returns torch tensors only (\"pt\")")
        if text is None and images is None:
            raise InvalidInputError("give text, images or both")
        out = BatchFeature()
        if text is not None:
            out.update(self._tokenize(text, padding, truncation, max_length))
        if images is not None:
            images = images if isinstance(images, (list, tuple)) else [images]
            out["pixel_values"] = torch.stack([self.image_processor(image) for image in images])
        return out

    def _tokenize(self, text: Union[str, Sequence[str]], padding: Union[bool, str], truncation: Optional[bool],
                  max_length: Optional[int]) -> dict[str, torch.Tensor]:
        texts = [text] if isinstance(text, str) else list(text)
        length = max_length or self.model_max_length
        ids = self.tokenizer(texts, context_length=length, truncate=True)  # a longer text cannot run anyway
        real = (ids == self.tokenizer.eot_token_id).int().argmax(dim=1) + 1  # tokens up to the (first) end token
        if padding in (True, "longest"):
            ids = ids[:, : int(real.max())]
        elif padding in (False, "do_not_pad"):
            if len(set(real.tolist())) > 1:
                raise InvalidInputError("texts of different lengths need padding=True (or \"max_length\")")
            ids = ids[:, : int(real.max())]
        elif padding != "max_length":
            raise InvalidInputError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        mask = (torch.arange(ids.shape[1])[None, :] < real[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask}


def _directory(name_or_path: PathLike, *, offline: Optional[bool]) -> Path:
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    from clipforge import hub_cache

    return hub_cache.resolve_hf_repo_dir(os.fspath(name_or_path), offline=offline)


def _no_unsupported(kwargs: dict[str, Any], where: str) -> None:
    harmless = {"revision", "cache_dir", "trust_remote_code", "use_fast", "low_cpu_mem_usage", "attn_implementation"}
    unknown = sorted(set(kwargs) - harmless)
    if unknown:
        raise TypeError(f"{where}() got arguments clipforge does not support: {unknown}")
