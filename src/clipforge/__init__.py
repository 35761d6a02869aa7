"""clipforge: a faithful, fast, offline-first CLIP library.

Public entry points are imported lazily so that `import clipforge` (and `clipforge --help`) stay
fast and do not import torch until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "clipforge.loading",
    "save": "clipforge.loading",
    "list_models": "clipforge.model_zoo",
    "tokenize": "clipforge.text",
    "Tokenizer": "clipforge.text",
    "Preprocess": "clipforge.image",
    "ClipModel": "clipforge.models",
    "ClipConfig": "clipforge.configs",
    "ClipforgeError": "clipforge.errors",
    "encode_prompt": "clipforge.tasks.diffusion_conditioning",
    "load_prompt_encoder": "clipforge.tasks.prompt_encoder",
    "clip_score": "clipforge.tasks.scoring",
    "encode_texts": "clipforge.encoding",
    "encode_images": "clipforge.encoding",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
