"""One entry point per direction between a file's key layout and the canonical layout.

Each family has one canonical layout (`families.FAMILY_LAYOUTS`); CLIP's is exactly
`clip.model.CLIP.state_dict()` (OpenAI): key names, shapes and orientation, BatchNorm running
stats included. `to_canonical` checks its result is complete and
self-consistent (every key of the inferred architecture present, nothing else, shapes agreeing),
so an unknown or missing key fails here, listed, rather than later inside a model.
"""

from __future__ import annotations

from typing import Literal

import torch

from .errors import CheckpointError
from .families import CLIP_LAYOUT, family_layout
from .open_clip import strip_wrapper_prefixes

LayoutFormat = Literal["openai", "open_clip", "hf", "clipforge"]
FORMATS: tuple[str, ...] = ("openai", "open_clip", "hf", "clipforge")


def detect_format(state_dict: dict[str, torch.Tensor]) -> Literal["openai", "open_clip", "hf"]:
    """Which layout a CLIP state dict's keys follow (see `families._clip_detect_format`); for any
    family, `families.detect_family`."""
    fmt = CLIP_LAYOUT.detect_format(list(state_dict))
    if fmt is None:
        keys = list(state_dict)
        raise CheckpointError(f"unrecognized state-dict layout (not OpenAI, open_clip or transformers CLIP); first keys: {keys[:8]}")
    return fmt  # type: ignore[return-value]


def to_canonical(
    state_dict: dict[str, torch.Tensor], format: str, validate: bool = True, family: str = "clip"
) -> dict[str, torch.Tensor]:
    """Map a state dict in `format`'s layout onto `family`'s canonical layout (exact; no arithmetic).

    Training-wrapper prefixes (`module.`, `_orig_mod.`) are removed for every format. With
    `validate`, the result must be exactly the key set and shapes of the architecture its shapes
    describe (see `infer_config`), else `CheckpointError` lists what is missing or unexpected.
    Families whose config cannot be read off shapes are validated later, against their config.
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
    layout = family_layout(family)
    reader = layout.readers.get(format)
    if reader is None:
        raise CheckpointError(f"clipforge reads {family} checkpoints in {sorted(layout.readers)} layouts, not {format!r}")
    out = reader(strip_wrapper_prefixes(state_dict))
    if validate and layout.infer_config is not None:
        layout.check_config(out, layout.infer_config(out))
    return out


def from_canonical(state_dict: dict[str, torch.Tensor], format: str, family: str = "clip") -> dict[str, torch.Tensor]:
    """Map a canonical state dict onto `format`'s layout (exact; the inverse of `to_canonical`)."""
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
    layout = family_layout(family)
    writer = layout.writers.get(format)
    if writer is None:
        raise CheckpointError(f"clipforge writes {family} checkpoints in {sorted(layout.writers)} layouts, not {format!r}")
    return writer(state_dict)
