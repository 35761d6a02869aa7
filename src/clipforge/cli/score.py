"""`clipforge score`: CLIP score of image files against captions (see clipforge.tasks.scoring).

torch and the model code are imported inside the command, so `clipforge --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EPILOG = """examples:
  clipforge score --model ViT-B-32 --weights openai cat.png dog.png --texts "a cat" "a dog"
  clipforge score --model path/to/hf_dir *.png --texts "a red rose" --definition paper --json

definitions: torchmetrics = max(100 * mean cos, 0), one number for all pairs (torchmetrics' CLIPScore);
paper = 2.5 * max(cos, 0) per pair (Hessel et al. 2021); paper_prefix = paper with "A photo depicts " before
each caption. Pairs are (IMAGES[i], texts[i]); a single caption is scored against every image.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `score` on the `clipforge` command's subparsers."""
    p = subparsers.add_parser(
        "score", help="CLIP score of images against captions",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--texts", nargs="+", required=True, metavar="TEXT",
                   help="one caption per image, or one for all (give it after the images)")
    p.add_argument("--model", required=True, help="named architecture, checkpoint file/dir or hub id")
    p.add_argument("--weights", help="weights tag for a named architecture (e.g. openai)")
    p.add_argument("--definition", default="torchmetrics", choices=["torchmetrics", "paper", "paper_prefix"])
    p.add_argument("--device", help="torch device (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import clipforge
    from clipforge.image import load_image
    from clipforge.tasks.scoring import clip_score

    if len(args.texts) not in (1, len(args.images)):
        raise ValueError(f"got {len(args.images)} images and {len(args.texts)} texts: give one text per image, or one")
    model, preprocess, tokenizer = clipforge.load(args.model, args.weights, device=args.device)
    images = [load_image(path) for path in args.images]
    texts = list(args.texts) * (len(images) if len(args.texts) == 1 else 1)
    scores = clip_score(model, images, texts, definition=args.definition, preprocess=preprocess, tokenizer=tokenizer)

    result: dict[str, Any] = {"model": args.model, "definition": args.definition}
    if scores.dim() == 0:  # torchmetrics: one aggregate for all pairs
        result["score"] = float(scores)
    else:
        result["scores"] = [
            {"image": path, "text": text, "score": float(s)} for path, text, s in zip(args.images, texts, scores)
        ]
        result["mean"] = float(scores.mean())
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif "score" in result:
        print(f"{result['score']:.4f}\t({args.definition}, {len(images)} pairs)")
    else:
        for row in result["scores"]:
            print(f"{row['score']:.4f}\t{row['image']}\t{row['text']}")
        print(f"{result['mean']:.4f}\tmean ({args.definition}, {len(images)} pairs)")
    return 0
