"""What every model-using command shares: the model options and turning them into a loaded model.

torch is imported inside the functions so registering commands costs nothing.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional

PRECISIONS = ("fp32", "fp16", "bf16")


DEFAULT_MODEL_NOTE = " (default: the bundled clipforge-mini model, offline)"


def add_model_arguments(parser: argparse.ArgumentParser, default_note: str = DEFAULT_MODEL_NOTE) -> None:
    """--model / --weights / --arch / --device / --precision. Without --model: `default_note` says what is used."""
    parser.add_argument(
        "--model", metavar="NAME_OR_PATH",
        help="a named architecture (with --weights), a checkpoint file or directory, or a Hugging Face hub id"
        + default_note,
    )
    parser.add_argument("--weights", metavar="TAG", help="weights tag for a named architecture (e.g. openai)")
    parser.add_argument("--arch", help="architecture of a checkpoint file that does not say (e.g. ViT-H-14)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; LOCAL_RANK under torchrun)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="model dtype (default fp32); fp16/bf16 halve memory on a GPU")


def model_reference(args: argparse.Namespace) -> dict[str, Optional[str]]:
    """What identifies the model: local paths made absolute so a record of it survives a `cd`."""
    name = args.model or "clipforge-mini"  # the bundled default (clipforge.loading.BUNDLED_MODEL_NAME)
    if os.path.exists(os.path.expanduser(name)):
        name = os.path.abspath(os.path.expanduser(name))
    return {"name_or_path": name, "weights": args.weights, "arch": args.arch}


def default_device(requested: Optional[str]) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def load_model(args: argparse.Namespace, reference: Optional[dict[str, Optional[str]]] = None) -> tuple[Any, Any, Any]:
    """`clipforge.load` with the command's model options: `(model, preprocess, tokenizer)`."""
    import torch

    import clipforge

    reference = reference or model_reference(args)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    return clipforge.load(reference["name_or_path"], reference["weights"], arch=reference["arch"],
                          device=default_device(args.device), dtype=dtype)


def storage_dtype(precision: str) -> str:
    # numpy has no bfloat16; normalized bf16 values fit float16 (more mantissa bits, ample range).
    return "float32" if precision == "fp32" else "float16"
