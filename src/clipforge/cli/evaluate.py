"""`clipforge evaluate`: zero-shot and retrieval metrics of a model on a data set split (optionally a report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clipforge.cli.common import add_model_arguments, load_model
from clipforge.errors import InvalidInputError, MissingFileError

EXAMPLE = """examples:
  clipforge evaluate --model ViT-B-32 --weights openai --data data/openclipart
  clipforge evaluate --model checkpoints/last.safetensors --data data/openclipart --split val --report out/eval

--data is a folder made by `clipforge dataset openclipart` (SPLIT.jsonl and classes.json inside).
Metrics: zero-shot top-1/top-5 over classes.json (with chance levels), image->text and
text->image recall@1/5/10 over the split's pairs.
"""


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `clipforge evaluate`."""
    p = subparsers.add_parser(
        "evaluate",
        help="zero-shot and retrieval metrics on a data set split",
        description="Evaluate a model on a split of an image–caption data set.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="DIR", help="data set folder (with SPLIT.jsonl, classes.json)")
    p.add_argument("--split", default="test", help="split name: DIR/SPLIT.jsonl (default test)")
    p.add_argument("--classes", metavar="FILE", help="classes JSON for zero-shot (default DIR/classes.json if present)")
    p.add_argument("--report", metavar="OUT_DIR", help="also write OUT_DIR/report.md")
    p.add_argument("--curves", metavar="JSONL", help="training log to plot in the report")
    p.add_argument("--batch-size", type=int, default=128, help="images (and texts) per batch (default 128)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.evaluation import evaluate, write_report

    split = Path(args.data) / f"{args.split}.jsonl"
    if not split.is_file():
        raise MissingFileError(f"{split} not found (build the data set with `clipforge dataset openclipart --out {args.data}`)")
    if args.curves and not args.report:
        raise InvalidInputError("--curves needs --report OUT_DIR")
    model, preprocess, tokenizer = load_model(args)
    metrics = evaluate(
        model, preprocess, tokenizer, split, Path(args.classes) if args.classes else None,
        batch_size=args.batch_size, num_workers=args.workers, progress=sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            is_count = key.startswith("n_") or "_n_" in key
            print(f"{key:<{width}}  {int(value)}" if is_count else f"{key:<{width}}  {value:.4f}")
    if args.report:
        path = write_report(metrics, args.report, curves_jsonl=args.curves)
        print(f"clipforge evaluate: wrote {path}", file=sys.stderr)
    return 0
