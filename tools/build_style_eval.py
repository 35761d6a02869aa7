"""Re-render the OpenClipArt *test* split in drawing styles the training images never have.

    python tools/build_style_eval.py data/openclipart data/openclipart-styles
    clipforge evaluate --data data/openclipart-styles --split line     # and --split flat

Why: the bundled model trains only on OpenClipArt's own renders. To see whether it learned what
drawings show rather than how this collection draws them, the held-out test drawings (never
trained on) are rendered again from their SVG sources with a CSS stylesheet that overrides every
element's paint (librsvg's `rsvg-convert --stylesheet`, Debian package librsvg2-bin):
* `line`: no fills, black 2 px strokes — line art;
* `flat`: every shape filled one steel blue with thin black strokes — a flat single-colour silhouette.
Each is scaled so its long side is the data set's image size and centred on white, as the data set
builder does. Output: `<out>/<style>.jsonl` (the test split's records with the new images),
`<out>/classes.json` (copied), `<out>/images/<style>/...`, `<out>/README.md` (how it was made).
Zero-shot balanced accuracy is `zero_shot_mean_per_class_top1` in `clipforge evaluate`'s output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

STYLES = {
    "line": "* { fill: none !important; stroke: #000000 !important; stroke-width: 2px !important; }\n",
    "flat": "* { fill: #3a6ea5 !important; stroke: #000000 !important; stroke-width: 1px !important; }\n",
}
RENDER_TIMEOUT_S = 20


def svg_root() -> Path:
    """The unpacked openclipart-svg package in the clipforge cache (made by `clipforge dataset openclipart`)."""
    from clipforge.datasets.openclipart import locate_sources

    return locate_sources().svg_dir


def render(svg: Path, css: Path, out: Path, size: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        try:
            subprocess.run(
                ["rsvg-convert", "-s", str(css), "-w", str(size), "-h", str(size), "-a", "-b", "white", str(svg), "-o", str(raw)],
                check=True, timeout=RENDER_TIMEOUT_S, capture_output=True,
            )
            image = Image.open(raw).convert("RGB")
        except (subprocess.SubprocessError, OSError):
            return False
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return True


def main(data_dir: str, out_dir: str) -> None:
    if shutil.which("rsvg-convert") is None:
        sys.exit("rsvg-convert is missing: apt-get install librsvg2-bin")
    data, out = Path(data_dir), Path(out_dir)
    size = json.loads((data / "build_info.json").read_text())["params"]["image_size"]
    records = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines() if line.strip()]
    svgs = svg_root()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "classes.json", out / "classes.json")
    from tqdm import tqdm

    counts = {}
    for style, css_text in STYLES.items():
        css = out / f"{style}.css"
        css.write_text(css_text)
        kept = []
        for record in tqdm(records, desc=style, unit="svg"):
            rel = record["source"].split("/png/", 1)[1]
            image = Path("images") / style / rel
            if render(svgs / (rel[: -len(".png")] + ".svg"), css, out / image, size):
                kept.append({**record, "image": image.as_posix()})
        (out / f"{style}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        counts[style] = (len(kept), len(records))
    lines = [
        "# OpenClipArt test split, re-rendered in other styles",
        "",
        "Made by `tools/build_style_eval.py` from the test split of `clipforge dataset openclipart`",
        "(drawings never trained on), with `rsvg-convert --stylesheet STYLE.css` (librsvg2-bin).",
        "",
        "| style | stylesheet | rendered |",
        "|---|---|---:|",
    ]
    for style, (kept, total) in counts.items():
        lines.append(f"| {style} | `{STYLES[style].strip()}` | {kept} / {total} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
