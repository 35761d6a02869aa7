"""Checkpoint files and key layouts: read any supported checkpoint safely, map it onto its family's
one canonical layout (CLIP: OpenAI's `clip.model.CLIP.state_dict()`), and write it back out in
any format that family has.

This package knows no models: it works on `dict[str, Tensor]` and configs only. What it knows
about each family is one `FamilyLayout` in `families.FAMILY_LAYOUTS`. See docs/checkpoints.md and
docs/families.md.
"""

from .errors import CheckpointError
from .families import (
    FAMILY_LAYOUTS,
    FamilyLayout,
    check_config,
    check_config_limits,
    describe,
    detect_family,
    expected_shapes,
    family_layout,
    hf_config_to_config,
    infer_config,
    layout_of,
)
from .hf import clip_config_to_hf_config, hf_config_to_clip_config
from .layouts import FORMATS, detect_format, from_canonical, to_canonical
from .limits import local_path_exists, read_json
from .open_clip import clip_config_to_open_clip_config, open_clip_config_to_clip_config
from .reading import Checkpoint, declared_config, read_checkpoint
from .towers import key_tower
from .validation import NonFiniteWeightsError, check_weights
from .writing import write_checkpoint

__all__ = [
    "FAMILY_LAYOUTS",
    "FORMATS",
    "Checkpoint",
    "CheckpointError",
    "FamilyLayout",
    "NonFiniteWeightsError",
    "check_config",
    "check_config_limits",
    "check_weights",
    "clip_config_to_hf_config",
    "clip_config_to_open_clip_config",
    "declared_config",
    "describe",
    "detect_family",
    "detect_format",
    "expected_shapes",
    "family_layout",
    "from_canonical",
    "hf_config_to_clip_config",
    "hf_config_to_config",
    "infer_config",
    "key_tower",
    "layout_of",
    "local_path_exists",
    "open_clip_config_to_clip_config",
    "read_checkpoint",
    "read_json",
    "to_canonical",
    "write_checkpoint",
]
