"""An independent zero-shot check for the bundled model: Tux Paint's stamps, mapped onto the OpenClipArt classes.

    python tools/build_stamp_eval.py data/openclipart data/tuxpaint-stamps
    clipforge evaluate --data data/tuxpaint-stamps --split stamps

Why: the style set (tools/build_style_eval.py) re-renders OpenClipArt's own held-out drawings, and
two of the bundled model's augmentations imitate its styles. Tux Paint's stamp collection (Debian
package tuxpaint-stamps-default, not used for training) is other artists' cartoon drawings. Its
folders that clearly correspond to a class are mapped onto it (CATEGORY_MAP); the rest are left out.
Some stamps were taken from the Open Clip Art Library: every stamp whose 9x8 difference hash is
within HASH_DISTANCE bits of any OpenClipArt image (any split) is dropped as a possible duplicate,
and the count is written to README.md. Zero-shot balanced accuracy is `zero_shot_mean_per_class_top1`
(over the classes present; chance is still 1/15: the model chooses among all 15).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "tuxpaint-stamps-default"
STAMPS = Path("usr/share/tuxpaint/stamps")
# Tux Paint folder (prefix) -> OpenClipArt class name.
CATEGORY_MAP = {
    "animals": "animals",
    "food": "food and drink",
    "plants": "plants",
    "vehicles": "transportation",
    "people": "people",
    "town/houses": "buildings",
    "town/monuments": "buildings",
    "town/roadsigns": "signs and symbols",
    "town/flags": "signs and symbols",
    "symbols/shapes": "shapes",
    "household/tools": "tools",
    "sports": "games and recreation",
    "symbols/chess": "games and recreation",
    "space/planets": "maps and geography",
    "space/moon": "maps and geography",
}
HASH_DISTANCE = 6


def dhash(image: Image.Image) -> int:
    gray = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def main(data_dir: str, out_dir: str) -> None:
    from tqdm import tqdm

    from clipforge.datasets.debian_packages import extract_deb, fetch_debs
    from clipforge.datasets.openclipart import default_cache_dir, render_image

    data, out = Path(data_dir), Path(out_dir)
    size = json.loads((data / "build_info.json").read_text())["params"]["image_size"]
    classes = json.loads((data / "classes.json").read_text())
    cache = default_cache_dir().parent / "tuxpaint"
    root = extract_deb(fetch_debs([PACKAGE], cache)[PACKAGE], cache / "unpacked") / STAMPS

    known = [dhash(Image.open(data / json.loads(line)["image"])) for split in ("train", "val", "test")
             for line in (data / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    known_arr = np.array(known, dtype=np.uint64)

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "classes.json", out / "classes.json")
    records, dropped, unreadable = [], 0, 0
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".svg") and not p.name.endswith("_mirror.png"))
    for src in tqdm(files, desc="stamps", unit="file"):
        rel = src.relative_to(root).as_posix()
        folder = next((f for f in CATEGORY_MAP if rel.startswith(f + "/")), None)
        if folder is None or (src.suffix == ".svg" and src.with_suffix(".png").exists()):
            continue
        dest = out / "images" / Path(rel).with_suffix(".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if src.suffix == ".svg":
                with tempfile.TemporaryDirectory() as tmp:
                    raw = Path(tmp) / "raw.png"
                    subprocess.run(["rsvg-convert", "-w", str(4 * size), "-a", str(src), "-o", str(raw)],
                                   check=True, timeout=20, capture_output=True)
                    render_image(raw, dest, size)
            else:
                render_image(src, dest, size)
        except Exception:  # noqa: BLE001 - a stamp we cannot render is counted and left out
            unreadable += 1
            continue
        h = np.uint64(dhash(Image.open(dest)))
        distances = np.array([bin(int(x)).count("1") for x in np.bitwise_xor(known_arr, h)])
        if distances.min() <= HASH_DISTANCE:
            dropped += 1
            dest.unlink()
            continue
        caption = Path(rel).stem.replace("_", " ").replace("-", " ")
        records.append({"image": dest.relative_to(out).as_posix(), "caption": caption,
                        "label": classes["classnames"].index(CATEGORY_MAP[folder]), "source": f"/{STAMPS}/{rel}"})
    (out / "stamps.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    per_class = {}
    for r in records:
        name = classes["classnames"][r["label"]]
        per_class[name] = per_class.get(name, 0) + 1
    lines = [
        "# Tux Paint stamps, mapped onto the OpenClipArt classes",
        "",
        f"Made by `tools/build_stamp_eval.py` from Debian's {PACKAGE} (never used for training).",
        f"{len(records)} stamps kept; {dropped} dropped as possible OpenClipArt duplicates (difference hash within "
        f"{HASH_DISTANCE} bits of an OpenClipArt image); {unreadable} could not be rendered.",
        "",
        "| class | stamps |",
        "|---|---:|",
        *[f"| {name} | {n} |" for name, n in sorted(per_class.items())],
        "",
        "Folder mapping: " + ", ".join(f"`{k}` -> {v}" for k, v in CATEGORY_MAP.items()) + ".",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if shutil.which("rsvg-convert") is None:
        sys.exit("rsvg-convert is missing: apt-get install librsvg2-bin")
    main(*sys.argv[1:3])
