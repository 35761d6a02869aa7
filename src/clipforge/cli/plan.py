"""`clipforge plan`: size a CLIP training run (FLOPs, GPU-hours, days, memory per GPU, storage).

Parses, calls `clipforge.planning.plan_training`, prints the plan (a table, or JSON with --json).
Nothing heavy is imported to build the parser; torch only for `--gpu cpu` (a quick measurement).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EPILOG = """examples:
  clipforge plan --model ViT-L-14 --pairs 400M --epochs 32 --gpu V100 --gpus 256
  clipforge plan --model ViT-H-14 --pairs 2B --epochs 16 --gpu H100 --gpus 512 --batch 79k --json
  clipforge plan --model ViT-B-32 --pairs 3M --epochs 10 --gpu cpu       # measures this machine first

GPUs (dense datasheet peaks; docs/plan.md): {gpus}, or cpu.
--mfu is the fraction of peak the run sustains (default {mfu:g}, calibrated on published CLIP runs; docs/plan.md).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `plan` on the `clipforge` command's subparsers."""
    from clipforge.planning.hardware import ALIASES, GPUS
    from clipforge.planning.plan import (
        DEFAULT_CPU_MFU,
        DEFAULT_GLOBAL_BATCH,
        DEFAULT_MFU,
    )

    p = subparsers.add_parser(
        "plan", help="size a training run: FLOPs, GPU-hours, days, memory per GPU, storage",
        epilog=EPILOG.format(gpus=", ".join(list(GPUS) + list(ALIASES)), mfu=DEFAULT_MFU),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="named architecture (clipforge models), e.g. ViT-L-14, RN50x64")
    p.add_argument("--pairs", required=True, help="image-text pairs in the data set: 400M, 2B, 1.5e9, 400000000")
    p.add_argument("--epochs", type=float, default=32, help="passes over the pairs (default 32)")
    p.add_argument("--gpu", required=True, help="accelerator name (see below), or cpu to measure this machine")
    p.add_argument("--gpus", type=int, default=1, help="number of GPUs (default 1)")
    p.add_argument("--batch", default=str(DEFAULT_GLOBAL_BATCH),
                   help=f"global batch, all GPUs together (default {DEFAULT_GLOBAL_BATCH})")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                   help="default: bf16 where the GPU has it, else fp16; fp32 on the CPU")
    p.add_argument("--mfu", type=float,
                   help=f"fraction of peak FLOP/s sustained on the executed FLOPs (default {DEFAULT_MFU:g}; "
                        f"{DEFAULT_CPU_MFU:g} of the measured matmul rate with --gpu cpu)")
    p.add_argument("--grad-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="auto (default): only if the per-GPU batch does not fit without it")
    p.add_argument("--accum-steps", type=int, help="micro-batches per step (default: only if memory needs them)")
    p.add_argument("--text-tokens", type=int,
                   help="positions the text tower runs per caption (default: the context length, 77)")
    p.add_argument("--no-local-loss", dest="local_loss", action="store_false",
                   help="every GPU computes the whole global-batch logit matrix")
    p.add_argument("--image-bytes", type=int, default=30000, help="bytes per stored image (default 30000)")
    p.add_argument("--caption-bytes", type=int, default=100, help="bytes per caption (default 100)")
    p.add_argument("--price-per-gpu-hour", type=float, help="adds the cost (in that currency)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from clipforge.planning.plan import format_plan, plan_training

    plan = plan_training(
        args.model, args.pairs, args.epochs, args.gpu, args.gpus, args.batch,
        precision=args.precision, mfu=args.mfu,
        grad_checkpointing={"auto": None, "on": True, "off": False}[args.grad_checkpointing],
        accum_steps=args.accum_steps, text_tokens=args.text_tokens, local_loss=args.local_loss,
        image_bytes=args.image_bytes, caption_bytes=args.caption_bytes,
        price_per_gpu_hour=args.price_per_gpu_hour,
    )
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return 0
