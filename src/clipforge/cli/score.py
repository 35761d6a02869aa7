"""`clipforge score`: CLIP score of image files against captions (see clipforge.tasks.scoring).

torch and the model code are imported inside the command, so `clipforge --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clipforge.cli.common import (
    add_image_arguments,
    add_model_arguments,
    image_inputs,
    json_text,
    load_model,
    printable,
)
from clipforge.errors import InvalidInputError

EPILOG = """examples:
  clipforge score --model ViT-B-32 --weights openai cat.png dog.png --texts "a cat" "a dog"
  clipforge score --model path/to/hf_dir *.png --texts "a red rose" --definition paper --json

definitions: torchmetrics = max(100 * mean cos, 0), one number for all pairs (torchmetrics' CLIPScore);
paper = 2.5 * max(cos, 0) per pair (Hessel et al. 2021); paper_prefix = paper with "A photo depicts " before
each caption; probability = the model's own per-pair match probability (SigLIP's sigmoid; CLIP has none).
Pairs are (IMAGES[i], texts[i]); a single caption is scored against every image.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `score` on the `clipforge` command's subparsers."""
    p = subparsers.add_parser(
        "score", help="CLIP score of images against captions",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_image_arguments(p)
    p.add_argument("--texts", nargs="+", required=True, metavar="TEXT",
                   help="one caption per image, or one for all (give it after the images)")
    add_model_arguments(p)
    p.add_argument("--definition", default="torchmetrics", choices=["torchmetrics", "paper", "paper_prefix", "probability"])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from clipforge.image import ImageLoadError, load_image
    from clipforge.tasks.scoring import clip_score

    items = image_inputs(args)
    if len(args.texts) not in (1, len(items)):
        raise InvalidInputError(f"got {len(items)} images and {len(args.texts)} texts: give one text per image, or one")
    all_texts = list(args.texts) * (len(items) if len(args.texts) == 1 else 1)
    paths, images, texts = [], [], []
    for item, text in zip(items, all_texts):
        try:
            images.append(load_image(item.image_source()))
        except ImageLoadError as err:  # reported and skipped; the other pairs are still scored
            print(f"clipforge score: skipped {printable(item.path)}: {printable(err.reason)} [{err.code}]", file=sys.stderr)
            continue
        paths.append(item.path)
        texts.append(text)
    if not images:
        raise InvalidInputError("no readable image to score")
    model, preprocess, tokenizer = load_model(args)
    scores = clip_score(model, images, texts, definition=args.definition, preprocess=preprocess, tokenizer=tokenizer)

    result: dict[str, Any] = {"model": args.model, "definition": args.definition}
    if scores.dim() == 0:  # torchmetrics: one aggregate for all pairs
        result["score"] = float(scores)
    else:
        result["scores"] = [
            {"image": path, "text": text, "score": float(s)} for path, text, s in zip(paths, texts, scores)
        ]
        result["mean"] = float(scores.mean())
    if args.json:
        print(json_text(result))
    elif "score" in result:
        print(f"{result['score']:.4f}\t({args.definition}, {len(images)} pairs)")
    else:
        for row in result["scores"]:
            print(f"{row['score']:.4f}\t{printable(row['image'])}\t{printable(row['text'])}")
        print(f"{result['mean']:.4f}\tmean ({args.definition}, {len(images)} pairs)")
    return 0
