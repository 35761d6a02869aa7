"""`clipforge embed SOURCE --out DIR --model M`: embed a folder / list / table / WebDataset into .npy shards.

torch and the model are imported inside the command so that `clipforge --help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

EPILOG = """examples:
  clipforge embed photos/ --out emb/ --model ViT-B-32 --weights openai
  clipforge embed pairs.csv --out emb/ --model model.safetensors --precision fp16
  clipforge embed 'shards/data-{000..099}.tar' --out emb/ --model ViT-B-32 --weights openai
  torchrun --nproc-per-node 4 -m clipforge.cli.main embed photos/ --out emb/ --model ViT-B-32 --weights openai

Run the same command again after an interruption: it resumes where it stopped.
"""

PRECISIONS = ("fp32", "fp16", "bf16")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, default_note: str = "") -> None:
    """--model / --weights / --arch / --device / --precision, shared by embed, index and search."""
    parser.add_argument("--model", required=required,
                        help="named architecture, checkpoint file/directory, or Hugging Face hub id" + default_note)
    parser.add_argument("--weights", help="weights tag for a named architecture (e.g. openai)")
    parser.add_argument("--arch", help="architecture of a checkpoint file that does not say (e.g. ViT-H-14)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; LOCAL_RANK under torchrun)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="model dtype; fp16/bf16 store float16 vectors (default fp32)")


def model_reference(args: argparse.Namespace) -> dict[str, Optional[str]]:
    """What identifies the model: local paths made absolute so the record survives a `cd`."""
    name = args.model
    if name is not None and os.path.exists(os.path.expanduser(name)):
        name = os.path.abspath(os.path.expanduser(name))
    return {"name_or_path": name, "weights": args.weights, "arch": args.arch}


def default_device(requested: Optional[str]) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def load_model(reference: dict[str, Optional[str]], device: Optional[str], precision: str) -> tuple[Any, Any, Any]:
    import torch

    import clipforge

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return clipforge.load(reference["name_or_path"], reference["weights"], arch=reference["arch"],
                          device=default_device(device), dtype=dtype)


def storage_dtype(precision: str) -> str:
    # numpy has no bfloat16; normalized bf16 values fit float16 (more mantissa bits, ample range).
    return "float32" if precision == "fp32" else "float16"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: up to 8, one per CPU; 0: in this process)")
    parser.add_argument("--shard-size", type=int, default=10000, help="items per output shard (default 10000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from clipforge.tasks.embedding import embed
    from clipforge.tasks.sources import source_kind

    # Fail on a mistyped SOURCE before spending time loading the model.
    if source_kind(args.source) != "webdataset" and not os.path.exists(args.source):
        raise FileNotFoundError(f"source {args.source!r} does not exist")

    model, preprocess, tokenizer = load_model(model_reference(args), args.device, args.precision)
    summary = embed(
        model, preprocess, tokenizer, args.source, args.out,
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
