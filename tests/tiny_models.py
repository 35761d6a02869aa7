"""The tiny random models the tests use, defined once, and a flat-keyword helper for training configs."""

from __future__ import annotations

from typing import Any

from clipforge.configs import ClipConfig, TextConfig, VisionTransformerConfig
from clipforge.train.config import TrainConfig, nest_fields

# A ViT at 32 px with a 77-token text tower: what embed/search/interrogate/evaluate tests load and run.
TINY = ClipConfig(
    embed_dim=32,
    vision=VisionTransformerConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
    text=TextConfig(context_length=77, width=64, heads=2, layers=2),
)

# The training tests' model (a 16-token context keeps steps fast), as the dict a TOML file would hold.
TINY_TRAIN = {
    "embed_dim": 32,
    "vision": {"kind": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    "text": {"context_length": 16, "width": 32, "heads": 2, "layers": 2},
}


def train_config(**fields: Any) -> TrainConfig:
    """A TrainConfig from flat keywords (`lr=1e-3, train="x.csv", out_dir=...`): each name goes to
    the one section that has it, as with `clipforge train --set`; `architecture` defaults to TINY_TRAIN."""
    if "init" not in fields:
        fields.setdefault("architecture", TINY_TRAIN)
    return TrainConfig.from_dict(nest_fields(fields))


def train_config_dict(**fields: Any) -> dict:
    """The nested dict of `train_config(**fields)` (what a JSON config file holds)."""
    return train_config(**fields).to_dict()
