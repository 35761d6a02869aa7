"""One entry point per direction between a file's key layout and the canonical layout.

The canonical layout is exactly `clip.model.CLIP.state_dict()` (OpenAI): key names, shapes and
orientation, BatchNorm running stats included. `to_canonical` checks its result is complete and
self-consistent (every key of the inferred architecture present, nothing else, shapes agreeing),
so an unknown or missing key fails here, listed, rather than later inside a model.
"""

from __future__ import annotations

from typing import Literal

import torch

from .errors import CheckpointError
from .hf import canonical_to_hf, hf_to_canonical
from .infer_config import check_config, infer_config
from .open_clip import (
    canonical_to_open_clip,
    open_clip_to_canonical,
    strip_wrapper_prefix,
    strip_wrapper_prefixes,
)
from .openai import canonical_to_openai, openai_to_canonical

LayoutFormat = Literal["openai", "open_clip", "hf", "clipforge"]
FORMATS: tuple[str, ...] = ("openai", "open_clip", "hf", "clipforge")


def detect_format(state_dict: dict[str, torch.Tensor]) -> Literal["openai", "open_clip", "hf"]:
    """Which layout a state dict's keys follow.

    OpenAI's and open_clip's default layouts are the same; "open_clip" is returned only when
    something open_clip-specific shows (training-wrapper prefixes, `text.` nesting, `logit_bias`,
    the `attn_mask` buffer TorchScript exports of open_clip models keep),
    "openai" otherwise.
    """
    keys = list(state_dict)
    bare = [strip_wrapper_prefix(k) for k in keys]
    if any(k.startswith(("vision_model.", "text_model.")) for k in bare):
        return "hf"
    if bare != keys or {"logit_bias", "attn_mask"} & set(bare) or any(k.startswith("text.") for k in bare):
        return "open_clip"
    if any(k.startswith("visual.") for k in bare) or "token_embedding.weight" in bare:
        return "openai"
    raise CheckpointError(f"unrecognized state-dict layout (not OpenAI, open_clip or transformers CLIP); first keys: {keys[:8]}")


def to_canonical(state_dict: dict[str, torch.Tensor], format: str, validate: bool = True) -> dict[str, torch.Tensor]:
    """Map a state dict in `format`'s layout onto the canonical layout (exact; no arithmetic).

    Training-wrapper prefixes (`module.`, `_orig_mod.`) are removed for every format. With
    `validate`, the result must be exactly the key set and shapes of the architecture its shapes
    describe (see `infer_config`), else `CheckpointError` lists what is missing or unexpected.
    """
    sd = strip_wrapper_prefixes(state_dict)
    if format == "hf":
        out = hf_to_canonical(sd)
    elif format == "open_clip":
        out = openai_to_canonical(open_clip_to_canonical(sd))
    elif format in ("openai", "clipforge"):
        out = openai_to_canonical(sd)
    else:
        raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
    if validate:
        check_config(out, infer_config(out))
    return out


def from_canonical(state_dict: dict[str, torch.Tensor], format: str) -> dict[str, torch.Tensor]:
    """Map a canonical state dict onto `format`'s layout (exact; the inverse of `to_canonical`)."""
    if format == "hf":
        return canonical_to_hf(state_dict)
    if format == "open_clip":
        return canonical_to_open_clip(state_dict)
    if format in ("openai", "clipforge"):
        return canonical_to_openai(state_dict)
    raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
