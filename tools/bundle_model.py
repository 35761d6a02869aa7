"""Pack a trained model into the package as the bundled default (`clipforge.load()` with no arguments).

    python tools/bundle_model.py runs/clipforge-mini/final.safetensors data/openclipart

Writes src/clipforge/bundled/: the weights in fp16 (half the size; clipforge.load casts them back to
fp32 parameters), the zero-shot classes (names + templates) and a few public-domain sample images
from the data set's test split with their captions, for `clipforge demo`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch

from clipforge.checkpoint_formats import read_checkpoint, write_checkpoint
from clipforge.configs import ModelRecord, Provenance

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "clipforge" / "bundled"
SAMPLES_PER_CLASS = 1
SAMPLE_CLASSES = ("animals", "food and drink", "transportation", "people", "tools", "maps and geography",
                  "games and recreation", "signs and symbols")


def main(weights: str, data_dir: str) -> None:
    data = Path(data_dir)
    checkpoint = read_checkpoint(Path(weights))
    state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    BUNDLED.mkdir(parents=True, exist_ok=True)
    record = checkpoint.record or ModelRecord.default(checkpoint.clipforge_config)
    record = record.replace(provenance=Provenance("clipforge", "recipes/clipforge-mini.toml", architecture_name="clipforge-mini"))
    write_checkpoint(state, record, BUNDLED / "clipforge-mini.safetensors", "clipforge")

    classes = json.loads((data / "classes.json").read_text())
    (BUNDLED / "classes.json").write_text(json.dumps(
        {"classnames": classes["classnames"], "templates": classes["templates"], "provenance": classes["provenance"]},
        indent=2) + "\n")

    samples_dir = BUNDLED / "samples"
    shutil.rmtree(samples_dir, ignore_errors=True)
    samples_dir.mkdir()
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    chosen = []
    for name in SAMPLE_CLASSES:
        label = classes["classnames"].index(name)
        # The first test image of the class whose caption is not a generic icon/keyword list.
        for row in sorted(rows, key=lambda r: r["image"]):
            if row["label"] == label and len(row["caption"].split()) >= 2 and row not in chosen:
                chosen.append(row)
                break
    records = []
    for row in chosen:
        target = samples_dir / Path(row["image"]).name
        shutil.copyfile(data / row["image"], target)
        records.append({"image": target.name, "caption": row["caption"], "class": classes["classnames"][row["label"]],
                        "creator": row["creator"], "source": row["source"]})
    (samples_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    # What the demo tells a new user about this model: measured on the held-out test split, as bundled (fp16).
    import clipforge
    from clipforge.evaluation import evaluate

    model, preprocess, tokenizer = clipforge.load()
    metrics = evaluate(model, preprocess, tokenizer, data / "test.jsonl", data / "classes.json", progress=False)
    card = {
        "name": "clipforge-mini",
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": "recipes/clipforge-mini.toml",
        "trained_on": "the OpenClipArt image-caption set built from Debian's openclipart packages (5,500 drawings)",
        "test_split": {k: round(float(metrics[k]), 4) for k in (
            "zero_shot_top1", "zero_shot_mean_per_class_top1", "zero_shot_chance_uniform", "zero_shot_chance_majority",
            "image_to_text_R@1", "text_to_image_R@1")},
    }
    (BUNDLED / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    size = (BUNDLED / "clipforge-mini.safetensors").stat().st_size
    print(f"bundled {weights} ({size / 1e6:.1f} MB) with {len(records)} samples into {BUNDLED}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
