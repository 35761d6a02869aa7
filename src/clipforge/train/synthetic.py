"""A tiny, learnable image-caption set: coloured shapes ("a red circle") drawn with PIL.

For smoke tests, demos and the training tests: a small model learns it in seconds on a CPU, and
zero-shot accuracy over its classes is a meaningful check (chance is 1 / len(classes)).
"""

from __future__ import annotations

import csv
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Literal, Union

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 210, 20)}
SHAPES = ("circle", "square", "triangle")


def shape_classes() -> list[str]:
    """Class names in a fixed order: "red circle", "red square", ..."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def draw_shape(colour: str, shape: str, size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.45, 0.75) * size
    cx, cy = rng.uniform(extent / 2, size - extent / 2), rng.uniform(extent / 2, size - extent / 2)
    box = (cx - extent / 2, cy - extent / 2, cx + extent / 2, cy + extent / 2)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    return image


def write_shapes_dataset(
    folder: Union[str, Path],
    n: int = 240,
    *,
    image_size: int = 32,
    seed: int = 0,
    format: Literal["csv", "jsonl", "webdataset"] = "csv",
    samples_per_shard: int = 64,
) -> Path:
    """Write `n` shape images with captions under `folder`; returns the CSV/JSONL file or the shard folder.

    Classes cycle so every class has n / 12 examples. CSV/JSONL rows hold relative paths
    ("images/000001.png"), resolved against the file's folder by the trainer.
    """
    folder = Path(folder)
    rng = random.Random(seed)
    classes = shape_classes()
    samples = []
    for i in range(n):
        colour, shape = classes[i % len(classes)].split()
        samples.append((f"{i:06d}", draw_shape(colour, shape, image_size, rng), f"a {colour} {shape}"))

    if format == "webdataset":
        shard_dir = folder / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        for s in range(0, n, samples_per_shard):
            with tarfile.open(shard_dir / f"{s // samples_per_shard:05d}.tar", "w") as tar:
                for key, image, caption in samples[s : s + samples_per_shard]:
                    buf = io.BytesIO()
                    image.save(buf, format="PNG")
                    for name, data in ((f"{key}.png", buf.getvalue()), (f"{key}.txt", caption.encode())):
                        member = tarfile.TarInfo(name)
                        member.size = len(data)
                        tar.addfile(member, io.BytesIO(data))
        return shard_dir

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for key, image, caption in samples:
        image.save(folder / "images" / f"{key}.png")
        rows.append({"image": f"images/{key}.png", "caption": caption})
    if format == "jsonl":
        path = folder / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    path = folder / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return path
