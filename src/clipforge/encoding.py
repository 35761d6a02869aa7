"""Batch encoding, one way for every task, the CLI and evaluation: texts, pixels or image files in,
float32 embeddings out.

The rules, in one place: the model computes in its own dtype on its own device; features are cast
to float32 *before* they are L2-normalised (normalising fp16 features in fp16 loses digits); batches
are cut in order, so results do not depend on the batch size; bad image files are reported by
index and reason, never raised. Only the public model API is used (`encode_image`, `encode_text`).

`model_fingerprint` is the one description of a model's identity (stored by `embed`, `index`,
the interrogation cache): its config, an exact digest of its weights, and a probe text embedding
for a tolerant comparison across devices and dtypes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clipforge.errors import InvalidInputError
from clipforge.image import ImageLoadError, ImageSource, iter_image_batches

__all__ = [
    "encode_texts",
    "encode_tokens",
    "encode_pixels",
    "encode_images",
    "EncodedImages",
    "model_device",
    "model_fingerprint",
    "model_difference",
    "weights_digest",
]

PROBE_TEXT = "a photo of a red car parked next to a tree"


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _finish(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    features = features.float()
    return F.normalize(features, dim=-1) if normalize else features


def _bar(total: int, desc: Optional[str], enabled: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, file=sys.stderr)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], texts: Sequence[str], *,
    batch_size: int = 256, normalize: bool = True, progress: bool = False, desc: Optional[str] = "encoding texts",
) -> torch.Tensor:
    """[len(texts), embed_dim] float32 text embeddings on the model's device."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    device = model_device(model)
    chunks = []
    with _bar(len(texts), desc, progress and len(texts) > batch_size, "text") as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            chunks.append(_finish(model.encode_text(tokenizer(batch).to(device)), normalize))
            bar.update(len(batch))
    if not chunks:
        return torch.empty(0, model.config.embed_dim, device=device)
    return torch.cat(chunks)


@torch.no_grad()
def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor, *, batch_size: int = 256, normalize: bool = True) -> torch.Tensor:
    """[n, embed_dim] float32 text embeddings of token ids [n, context], on the model's device."""
    if tokens.dim() != 2:
        raise InvalidInputError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
    device = model_device(model)
    if len(tokens) == 0:
        return torch.empty(0, model.config.embed_dim, device=device)
    return torch.cat([_finish(model.encode_text(chunk.to(device)), normalize) for chunk in tokens.split(batch_size)])


@torch.no_grad()
def encode_pixels(model: torch.nn.Module, pixels: torch.Tensor, *, batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
    """[n, embed_dim] float32 image embeddings of preprocessed pixels [n, 3, S, S], on the model's device."""
    if pixels.dim() != 4:
        raise InvalidInputError(f"pixels must be [batch, 3, S, S], got shape {tuple(pixels.shape)}")
    device = model_device(model)
    if len(pixels) == 0:
        return torch.empty(0, model.config.embed_dim, device=device)
    return torch.cat([_finish(model.encode_image(chunk.to(device)), normalize) for chunk in pixels.split(batch_size)])


@dataclass
class EncodedImages:
    features: torch.Tensor  # [len(indices), embed_dim] float32, on the model's device
    indices: list[int]  # positions in the input of the rows of `features`
    errors: list[tuple[int, str, ImageLoadError]] = field(default_factory=list)  # (position, name, error)


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, preprocess: Any, images: Sequence[ImageSource], *,
    batch_size: int = 64, num_workers: Optional[int] = None, normalize: bool = True, progress: bool = False,
    desc: Optional[str] = "encoding images", on_batch: Optional[Callable[[int], None]] = None,
) -> EncodedImages:
    """Decode, preprocess (in `num_workers` DataLoader processes) and encode image files or ImageRefs.

    Unreadable images are left out and listed in `errors`; `on_batch(n)` is called with the number
    of inputs each batch accounted for (for an outer progress bar).
    """
    device = model_device(model)
    chunks: list[torch.Tensor] = []
    indices: list[int] = []
    errors: list[tuple[int, str, ImageLoadError]] = []
    with _bar(len(images), desc, progress, "image") as bar:
        for batch in iter_image_batches(images, preprocess, batch_size=batch_size, num_workers=num_workers,
                                        pin_memory=device.type == "cuda"):
            errors.extend(batch.errors)
            if len(batch):
                chunks.append(_finish(model.encode_image(batch.pixels.to(device, non_blocking=True)), normalize))
                indices.extend(batch.indices)
            bar.update(len(batch) + len(batch.errors))
            if on_batch is not None:
                on_batch(len(batch) + len(batch.errors))
    features = torch.cat(chunks) if chunks else torch.empty(0, model.config.embed_dim, device=device)
    return EncodedImages(features, indices, errors)


# ---- the model's identity ----------------------------------------------------------------------


def weights_digest(model: torch.nn.Module, samples_per_tensor: int = 1024) -> str:
    """sha256 of the model's config, and of the name, shape, dtype and a strided sample of every tensor.

    Exact, so it can name a cache file; sampling up to `samples_per_tensor` values per tensor costs
    milliseconds even for ViT-bigG and still tells apart any two checkpoints (fine-tuning moves
    practically every weight).
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    h.update(json.dumps(config_dict, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            stride = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::stride][:samples_per_tensor].to(device="cpu", dtype=torch.float32).contiguous()
            h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: Any, tokenizer: Callable) -> dict[str, Any]:
    """The model's config, its exact `weights_digest`, and its embedding of a fixed probe text.

    The digest names caches exactly; the probe vector is compared with a tolerance
    (`model_difference`), since a device or dtype change moves the digits but not the model.
    """
    probe = encode_texts(model, tokenizer, [PROBE_TEXT], progress=False)[0].cpu()
    return {
        "config": _json_shaped(model.config.to_dict()),
        "weights_digest": weights_digest(model),
        "probe_text": PROBE_TEXT,
        "probe": [round(x, 6) for x in probe.tolist()],
    }


def _json_shaped(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists): a config held in memory and the same
    config read from index.json / run config must compare equal (FastViT configs hold tuples)."""
    return json.loads(json.dumps(value))


def model_difference(a: dict[str, Any], b: dict[str, Any], min_cosine: float = 0.99) -> Optional[str]:
    """None when two fingerprints describe the same model, else a sentence saying how they differ."""
    config_a, config_b = _json_shaped(a.get("config", {})), _json_shaped(b.get("config", {}))
    if config_a != config_b:
        keys = sorted(k for k in set(config_a) | set(config_b) if config_a.get(k) != config_b.get(k))
        return f"the model configs differ (in {', '.join(keys)})"
    if a.get("weights_digest") and a.get("weights_digest") == b.get("weights_digest"):
        return None
    pa, pb = np.asarray(a.get("probe", []), np.float64), np.asarray(b.get("probe", []), np.float64)
    if pa.shape != pb.shape or pa.size == 0:
        return "the probe embeddings have different sizes"
    cosine = float(pa @ pb / (np.linalg.norm(pa) * np.linalg.norm(pb) + 1e-12))
    if cosine < min_cosine:
        return f"same config but different weights (probe embeddings agree to cosine {cosine:.3f} < {min_cosine})"
    return None
