"""`clipforge compare`: the image-text cosine similarity matrix, as a table and optionally a heatmap PNG."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from clipforge.cli.common import (
    add_batch_argument,
    add_image_arguments,
    add_model_arguments,
    image_batches,
    image_inputs,
    load_model,
    printable,
    read_list,
)

EXAMPLE = """examples:
  clipforge compare cat.jpg diagram.png --texts "a diagram,a dog,a cat" --model ViT-B-32 --weights openai
  clipforge compare photos/*.jpg --texts-file captions.txt --model ViT-B-32.pt --png similarity.png

Prints cosine similarities, one row per image and one column per text. Unreadable images are
reported on stderr and skipped; the exit code is 0 when at least one image was compared.
"""

_MAX_HEADER_CHARS = 24


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `clipforge compare`."""
    p = subparsers.add_parser(
        "compare",
        help="cosine similarity between images and texts (table, optional heatmap PNG)",
        description="Cosine similarity between every image and every text, as in OpenAI's notebook.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_image_arguments(p)
    texts = p.add_mutually_exclusive_group(required=True)
    texts.add_argument("--texts", help='comma-separated texts, e.g. "a diagram,a dog,a cat"')
    texts.add_argument("--texts-file", metavar="FILE", help="text file with one text per line (texts may contain commas)")
    p.add_argument("--png", metavar="FILE", help="also write a heatmap with image thumbnails")
    add_model_arguments(p)
    add_batch_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from clipforge.tasks.similarity import plot_similarity, similarity_matrix

    texts = read_list(args.texts, args.texts_file, "texts")
    model, preprocess, tokenizer = load_model(args)
    tokens = tokenizer(texts)
    items = image_inputs(args)
    paths = [item.path for item in items]
    good: list[str] = []
    rows: list[torch.Tensor] = []
    for batch, _ in image_batches(items, preprocess, args.batch_size, "compare"):
        if batch.indices:
            rows.append(similarity_matrix(model, batch.pixels, tokens).cpu())
            good.extend(paths[i] for i in batch.indices)
    if not good:
        print("clipforge compare: no image could be read", file=sys.stderr)
        return 1
    matrix = torch.cat(rows)  # [n_good_images, n_texts]
    print(format_table(matrix, [printable(n) for n in _names(good)], [printable(t) for t in texts]))
    if args.png:
        plot_similarity(matrix, good, texts, args.png)
        print(f"clipforge compare: wrote {args.png}", file=sys.stderr)
    return 0


def format_table(matrix: Any, row_names: list[str], texts: list[str]) -> str:
    """A plain-text table: one row per image, one column per text, cosine to 3 decimals."""
    headers = [t if len(t) <= _MAX_HEADER_CHARS else t[: _MAX_HEADER_CHARS - 1] + "…" for t in texts]
    first = max(len("image"), *(len(n) for n in row_names))
    widths = [max(6, len(h)) for h in headers]
    lines = ["  ".join(["image".ljust(first)] + [h.rjust(w) for h, w in zip(headers, widths)])]
    for name, row in zip(row_names, matrix.tolist()):
        lines.append("  ".join([name.ljust(first)] + [f"{v:.3f}".rjust(w) for v, w in zip(row, widths)]))
    return "\n".join(lines)


def _names(paths: list[str]) -> list[str]:
    # File names are easier to read; fall back to the full paths when two images share a name.
    names = [os.path.basename(p) for p in paths]
    return names if len(set(names)) == len(names) else paths
