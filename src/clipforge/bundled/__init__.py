"""Data shipped inside the package: the default model's weights, its zero-shot classes, sample images.

Built by tools/bundle_model.py from a run of recipes/clipforge-mini.toml (see docs/training.md).
The sample images are public-domain clip-art from Debian's openclipart-png (see docs/data.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def classes() -> dict[str, Any]:
    """{"classnames": [...], "templates": [...], "provenance": str} of the OpenClipArt zero-shot benchmark."""
    return json.loads((HERE / "classes.json").read_text(encoding="utf-8"))


def samples() -> list[dict[str, Any]]:
    """The sample images: [{"path": Path, "caption": str, "class": str, "creator": str, "source": str}, ...]."""
    folder = HERE / "samples"
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [{**row, "path": folder / row.pop("image")} for row in rows]


def model_card() -> dict[str, Any]:
    """What the bundled model is and how well it does, measured when it was bundled (tools/bundle_model.py)."""
    return json.loads((HERE / "model_card.json").read_text(encoding="utf-8"))
