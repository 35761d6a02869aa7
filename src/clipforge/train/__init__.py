"""clipforge.train: contrastive training and fine-tuning of clipforge models.

Its own package on top of the library (it imports clipforge; clipforge never imports it), and the
only place that touches torch.distributed. Entry points:

    from clipforge.train import TrainConfig, train, load_config
    result = train(load_config("run.toml", ["lr=1e-4"]))   # -> TrainResult
    clipforge train run.toml --set lr=1e-4                  # the same from the command line

See docs/training.md. Names are imported lazily so `import clipforge.train` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainConfig": "clipforge.train.config",
    "load_config": "clipforge.train.config",
    "train": "clipforge.train.loop",
    "TrainResult": "clipforge.train.loop",
    "forward_backward": "clipforge.train.step",
    "ConfigError": "clipforge.train.config",
    "ClipLoss": "clipforge.train.loss",
    "SigLipLoss": "clipforge.train.loss",
    "wise_ft": "clipforge.train.finetune",
    "freeze_tower": "clipforge.train.finetune",
    "TrainTransform": "clipforge.image.augment",
    "load_checkpoint": "clipforge.train.checkpointing",
    "write_shapes_dataset": "clipforge.train.synthetic",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipforge.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
