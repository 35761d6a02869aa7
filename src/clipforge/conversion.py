"""Convert a checkpoint between formats, checking the result numerically before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from clipforge.checkpoint_formats import from_canonical, read_checkpoint, to_canonical
from clipforge.errors import ClipforgeRuntimeError
from clipforge.loading import SaveFormat, build_model, load, save
from clipforge.models import ClipModel


@dataclass(frozen=True)
class ConversionReport:
    source: str
    destination: str
    format: str
    max_abs_diff: float  # largest |difference| over image features, text features and logits
    feature_scale: float  # largest |value| of the source's outputs, to read the difference against


def compare_models(a: ClipModel, b: ClipModel, seed: int = 0) -> tuple[float, float]:
    """Max abs difference of image/text features and logits on fixed random inputs, and the output scale."""
    gen = torch.Generator().manual_seed(seed)
    size = a.config.image_size
    pixels = torch.randn(2, 3, size, size, generator=gen)
    text = a.config.text
    tokens = torch.randint(1, text.eot_token_id - 1, (2, text.context_length), generator=gen)
    tokens[:, 0] = text.sot_token_id
    tokens[0, 9], tokens[1, text.context_length - 1] = text.eot_token_id, text.eot_token_id
    tokens[0, 10:] = text.pad_token_id
    diff, scale = 0.0, 0.0
    with torch.no_grad():
        for fn in (lambda m: m.encode_image(pixels.to(m.dtype)), lambda m: m.encode_text(tokens), lambda m: m(pixels, tokens)[0]):
            x, y = fn(a).float(), fn(b).float()
            diff = max(diff, (x - y).abs().max().item())
            scale = max(scale, x.abs().max().item())
    return diff, scale


def convert(
    source: Union[str, Path], destination: Union[str, Path], to: SaveFormat, *, arch: Optional[str] = None,
    rtol: float = 1e-5,
) -> ConversionReport:
    """Load `source`, convert to `to`, verify the converted weights give the same numbers, then write."""
    model, preprocess, _ = load(source, arch=arch)
    canonical = {k: v.detach() for k, v in model.state_dict().items()}
    if to != "clipforge":
        # Go through the target layout and back in memory: this is exactly what a reader of the file will see.
        canonical = to_canonical(from_canonical(canonical, to), to)
    converted = build_model(model.config, canonical, source=f"{source} as {to}").eval()
    diff, scale = compare_models(model, converted)
    if diff > rtol * max(scale, 1.0):
        raise ClipforgeRuntimeError(f"conversion of {source} to {to} changes outputs: max abs difference {diff:.3g} (scale {scale:.3g}); nothing written")
    save(converted, destination, format=to, preprocess=preprocess)
    # Read back what was written: it must hold exactly the tensors we checked.
    written = to_canonical(read_checkpoint(Path(destination)).state_dict, to)
    for key, tensor in canonical.items():
        if key not in written or not torch.equal(written[key], tensor):
            raise ClipforgeRuntimeError(f"{destination}: tensor {key!r} differs after writing")
    return ConversionReport(str(source), str(destination), to, diff, scale)
