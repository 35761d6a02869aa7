"""`clipforge embed SOURCE --out DIR --model M`: embed a folder / list / table / WebDataset into .npy shards.

torch and the model are imported inside the command so that `clipforge --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clipforge.cli.common import (
    add_model_arguments,
    add_run_arguments,
    load_model,
    storage_dtype,
)

EPILOG = """examples:
  clipforge embed photos/ --out emb/ --model ViT-B-32 --weights openai
  clipforge embed pairs.csv --out emb/ --model model.safetensors --precision fp16
  clipforge embed 'shards/data-{000..099}.tar' --out emb/ --model ViT-B-32 --weights openai
  torchrun --nproc-per-node 4 -m clipforge.cli.main embed photos/ --out emb/ --model ViT-B-32 --weights openai

Run the same command again after an interruption: it resumes where it stopped.
"""

def _run(args: argparse.Namespace) -> int:
    from clipforge.sources import read_source
    from clipforge.tasks.embedding import embed

    # Read SOURCE before spending time loading the model: a mistyped or empty one fails at once.
    items = read_source(args.source)
    model, preprocess, tokenizer = load_model(args)
    summary = embed(
        model, preprocess, tokenizer, items, args.out, source_name=args.source,
        batch_size=args.batch_size, num_workers=args.workers, dtype=storage_dtype(args.precision),
        shard_size=args.shard_size, progress=not args.no_progress,
    )
    print(summary.format())
    if summary.world_size > 1:
        print(f"rank {summary.rank}: read all ranks' results with clipforge.tasks.embedding.read_embeddings({args.out!r})")
    sys.stdout.flush()
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed", help="embed images and captions into .npy shards + manifest (resumable, multi-process)",
        description="Embed SOURCE: a folder (recursive), a file list (.txt), a CSV/TSV/JSONL with "
                    "path/image/filepath and/or caption/text columns, or WebDataset tar shards "
                    "(x.tar, 'x-{000..009}.tar').",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="folder, list file, CSV/TSV/JSONL, or tar shard(s)")
    p.add_argument("--out", required=True, help="output directory (created; an interrupted run there is resumed)")
    add_model_arguments(p)
    add_run_arguments(p)
    p.set_defaults(func=_run)
