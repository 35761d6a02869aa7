"""`clipforge classify`: zero-shot classify images against a list of labels.

torch and the model code are imported inside the functions, so registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Optional

from clipforge.cli.common import (
    add_batch_argument,
    add_image_arguments,
    add_model_arguments,
    error_entry,
    image_batches,
    image_inputs,
    json_text,
    load_model,
    printable,
    read_list,
    templates_option,
)
from clipforge.errors import InvalidInputError

if TYPE_CHECKING:
    pass

EXAMPLE = """examples:
  clipforge classify cat.jpg owl.png --labels "cat,dog,owl" --model ViT-B-32 --weights openai
  clipforge classify photos/*.jpg --labels-file imagenet.txt --model ViT-B-32.pt --templates simple \\
      --save-classifier imagenet-b32.safetensors --json
  clipforge classify more/*.jpg --classifier imagenet-b32.safetensors --model ViT-B-32.pt --top-k 1
  clipforge classify photo.jpg --model OFA-Sys/chinese-clip-vit-base-patch16 --labels "猫,狗"

IMAGE may be files, folders (searched recursively), glob patterns or list files. Prompts: each label
is put into every template ("a photo of a {}.") and the text embeddings are averaged, as in
OpenAI's notebook; probabilities are the model's own (for CLIP a softmax at its learned
temperature). Unreadable images are reported on stderr (and as error entries with --json) and
skipped; the exit code is 0 when at least one image was classified.
"""

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
    add_image_arguments(p)
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", help='comma-separated labels, e.g. "cat,dog,owl"')
    labels.add_argument("--labels-file", metavar="FILE", help="text file with one label per line")
    p.add_argument(
        "--templates", default=None, metavar="openai|simple|chinese|none|FILE",
        help="prompt templates: OpenAI's 80 ImageNet templates, their 7-template subset, Chinese ones, "
             "the bare label, or a file with one '{}' template per line (default: the model's own: "
             "OpenAI's for CLIP, Chinese for Chinese-CLIP)",
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
    from clipforge.tasks.zero_shot import (
        ZeroShotClassifier,
        build_classifier,
        classify,
        model_templates,
        resolve_templates,
    )

    if args.top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1, got {args.top_k}")
    if args.classifier is not None:
        if args.labels is not None or args.labels_file is not None:
            raise InvalidInputError("--classifier brings its own labels: leave out --labels/--labels-file")
        classifier = ZeroShotClassifier.load(args.classifier)
        model, preprocess, _ = load_model(args)
    else:
        if args.labels is None and args.labels_file is None:
            raise InvalidInputError("give the labels: --labels \"cat,dog,owl\", --labels-file FILE or --classifier FILE")
        labels = read_list(args.labels, args.labels_file, "labels")
        model, preprocess, tokenizer = load_model(args)
        templates = templates_option(args.templates) if args.templates is not None else None
        n_templates = len(resolve_templates(model_templates(model) if templates is None else templates))
        show_progress = sys.stderr.isatty() and len(labels) * n_templates > args.batch_size
        classifier = build_classifier(
            model, tokenizer, labels, templates, batch_size=args.batch_size, progress=show_progress
        )
        if args.save_classifier:
            classifier.save(args.save_classifier)
            print(f"clipforge classify: wrote classifier ({len(classifier)} labels) to {args.save_classifier}", file=sys.stderr)

    items = image_inputs(args)
    paths = [item.path for item in items]
    results: list[Optional[dict[str, Any]]] = [None] * len(paths)
    for batch, _ in image_batches(items, preprocess, args.batch_size, "classify"):
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
        print(json_text({"results": entries, "n_classified": n_ok, "n_errors": len(entries) - n_ok}))
    else:
        for entry in entries:
            if "predictions" in entry:
                print(printable(entry["path"]))
                for pred in entry["predictions"]:
                    print(f"  {pred['probability']:.4f}  {printable(pred['label'])}")
    return 0 if n_ok else 1
