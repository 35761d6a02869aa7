"""`clipforge classify`: zero-shot classify image files against a list of labels.

Also holds the small helpers `clipforge compare` shares (label lists, image batches with errors
reported and skipped). torch and the model code are imported inside the functions, so
registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from clipforge.cli.common import add_model_arguments, load_model

if TYPE_CHECKING:
    from clipforge.image import ImageBatch, Preprocess

EXAMPLE = """examples:
  clipforge classify cat.jpg owl.png --labels "cat,dog,owl" --model ViT-B-32 --weights openai
  clipforge classify photos/*.jpg --labels-file imagenet.txt --model ViT-B-32.pt --templates simple \\
      --save-classifier imagenet-b32.safetensors --json
  clipforge classify more/*.jpg --classifier imagenet-b32.safetensors --model ViT-B-32.pt --top-k 1

Prompts: each label is put into every template ("a photo of a {}.") and the text embeddings are
averaged, as in OpenAI's notebook; probabilities are softmax(100 * cosine). Unreadable images are
reported on stderr (and as error entries with --json) and skipped; the exit code is 0 when at
least one image was classified.
"""

# ---- shared with `clipforge compare` --------------------------------------------------------------


def add_batch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="images (and texts) per batch (default 64)")


def read_list(inline: Optional[str], file: Optional[str], what: str) -> list[str]:
    """Items from a comma-separated string or a file with one per line (blank lines skipped)."""
    if file is not None:
        items = [line.strip() for line in Path(file).read_text(encoding="utf-8").splitlines()]
    elif inline is not None:
        items = [item.strip() for item in inline.split(",")]
    else:
        raise ValueError(f"no {what} given")
    items = [item for item in items if item]
    if not items:
        raise ValueError(f"the {what} list is empty")
    return items


def image_batches(
    paths: list[str], preprocess: "Preprocess", batch_size: int, command: str
) -> Iterator[tuple["ImageBatch", Any]]:
    """`(batch, progress_bar)` over `paths`; bad files are reported on stderr as they come.

    A progress bar (stderr, only on a terminal) appears when there is more than one batch of work.
    Small jobs decode in this process: starting DataLoader workers costs more than it saves.
    """
    from tqdm.auto import tqdm

    from clipforge.image import iter_image_batches

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    many = len(paths) > batch_size
    workers = None if many else 0
    with tqdm(total=len(paths), unit="image", disable=None if many else True, file=sys.stderr) as bar:
        for batch in iter_image_batches(paths, preprocess, batch_size=batch_size, num_workers=workers):
            for _, path, error in batch.errors:
                tqdm.write(f"clipforge {command}: skipped {path}: {error.reason} [{error.code}]", file=sys.stderr)
            yield batch, bar
            bar.update(len(batch.indices) + len(batch.errors))


def error_entry(path: str, error: Any) -> dict[str, Any]:
    return {"path": path, "error": {"code": error.code, "message": error.reason}}


# ---- classify -------------------------------------------------------------------------------------


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `clipforge classify`."""
    p = subparsers.add_parser(
        "classify",
        help="zero-shot classify images against labels",
        description="Zero-shot classify image files: which of the given labels fits each image best.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", help='comma-separated labels, e.g. "cat,dog,owl"')
    labels.add_argument("--labels-file", metavar="FILE", help="text file with one label per line")
    p.add_argument(
        "--templates", default="openai", metavar="openai|simple|none|FILE",
        help="prompt templates: OpenAI's 80 ImageNet templates (default), their 7-template subset, "
             "the bare label, or a file with one '{}' template per line",
    )
    p.add_argument("--top-k", type=int, default=5, help="labels shown per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    saved = p.add_mutually_exclusive_group()
    saved.add_argument("--save-classifier", metavar="FILE", help="also write the built classifier (.safetensors or .pt)")
    saved.add_argument("--classifier", metavar="FILE", help="use a classifier saved earlier (labels and templates come from it)")
    add_model_arguments(p)
    add_batch_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.tasks.zero_shot import ZeroShotClassifier, build_classifier, classify

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.classifier is not None:
        if args.labels is not None or args.labels_file is not None:
            raise ValueError("--classifier brings its own labels: leave out --labels/--labels-file")
        classifier = ZeroShotClassifier.load(args.classifier)
        model, preprocess, _ = load_model(args)
    else:
        if args.labels is None and args.labels_file is None:
            raise ValueError("give the labels: --labels \"cat,dog,owl\", --labels-file FILE or --classifier FILE")
        labels = read_list(args.labels, args.labels_file, "labels")
        templates = _templates(args.templates)
        model, preprocess, tokenizer = load_model(args)
        show_progress = sys.stderr.isatty() and len(labels) * len(templates) > args.batch_size
        classifier = build_classifier(
            model, tokenizer, labels, templates, batch_size=args.batch_size, progress=show_progress
        )
        if args.save_classifier:
            classifier.save(args.save_classifier)
            print(f"clipforge classify: wrote classifier ({len(classifier)} labels) to {args.save_classifier}", file=sys.stderr)

    paths = [os.fspath(p) for p in args.images]
    results: list[Optional[dict[str, Any]]] = [None] * len(paths)
    for batch, _ in image_batches(paths, preprocess, args.batch_size, "classify"):
        for index, path, error in batch.errors:
            results[index] = error_entry(path, error)
        if batch.indices:
            predictions = classify(model, classifier, batch.pixels, top_k=args.top_k)
            for index, top in zip(batch.indices, predictions):
                results[index] = {
                    "path": paths[index],
                    "predictions": [{"label": label, "probability": prob} for label, prob in top],
                }

    entries = [r for r in results if r is not None]
    n_ok = sum("predictions" in r for r in entries)
    if args.json:
        print(json.dumps({"results": entries, "n_classified": n_ok, "n_errors": len(entries) - n_ok}, ensure_ascii=False))
    else:
        for entry in entries:
            if "predictions" in entry:
                print(entry["path"])
                for pred in entry["predictions"]:
                    print(f"  {pred['probability']:.4f}  {pred['label']}")
    return 0 if n_ok else 1


def _templates(value: str) -> list[str]:
    from clipforge.tasks.templates import TEMPLATE_SETS
    from clipforge.tasks.zero_shot import resolve_templates

    if value in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[value])
    if Path(value).is_file():
        return resolve_templates(read_list(None, value, "templates"))
    raise ValueError(f"--templates {value!r} is neither {', '.join(TEMPLATE_SETS)} nor an existing file")
