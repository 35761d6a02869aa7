"""Checkpoint files and key layouts: read any CLIP checkpoint safely, map it onto one canonical
layout (OpenAI's `clip.model.CLIP.state_dict()`), and write it back out in any format.

This package knows no models: it works on `dict[str, Tensor]` and `ClipConfig` only.
See docs/checkpoints.md.
"""

from .errors import CheckpointError
from .hf import clip_config_to_hf_config, hf_config_to_clip_config
from .infer_config import (
    check_config,
    check_config_limits,
    describe,
    expected_shapes,
    infer_config,
)
from .layouts import FORMATS, detect_format, from_canonical, to_canonical
from .limits import local_path_exists, read_json
from .open_clip import clip_config_to_open_clip_config, open_clip_config_to_clip_config
from .reading import Checkpoint, declared_config, read_checkpoint
from .validation import NonFiniteWeightsError, check_weights
from .writing import write_checkpoint

__all__ = [
    "FORMATS",
    "Checkpoint",
    "CheckpointError",
    "NonFiniteWeightsError",
    "check_config",
    "check_config_limits",
    "check_weights",
    "clip_config_to_hf_config",
    "clip_config_to_open_clip_config",
    "declared_config",
    "describe",
    "detect_format",
    "expected_shapes",
    "from_canonical",
    "hf_config_to_clip_config",
    "infer_config",
    "local_path_exists",
    "open_clip_config_to_clip_config",
    "read_checkpoint",
    "read_json",
    "to_canonical",
    "write_checkpoint",
]
