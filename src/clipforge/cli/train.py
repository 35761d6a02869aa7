"""`clipforge train CONFIG.toml [--set key=value ...]`: train or fine-tune a CLIP model.

Parses, builds a `TrainConfig` (clipforge.train.config.load_config), calls `clipforge.train.train`,
prints where the results are. torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from clipforge.cli.common import run_command

EPILOG = """examples:
  clipforge train run.toml
  clipforge train run.toml --set optim.lr=1e-4 --set batch_size=128 --set precision="bf16"
  clipforge train finetune.toml --init ViT-B-32 --init-weights openai --wise-ft      # WiSE-FT, alpha 0.5
  torchrun --nproc_per_node 4 -m clipforge.cli.train run.toml                       # 4 processes

--set takes any TrainConfig field as section.field (see docs/training.md), or the bare field name
when only one section has it (--set lr=1e-4 is optim.lr); values are read as TOML ("1e-4", "true",
"[0.8, 1.0]"), or as plain strings when they are not TOML. Dotted keys reach into a model dict
(--set model.architecture.vision.layers=4). A run resumes from its latest checkpoint in run.out_dir by default.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `train` on the `clipforge` command's subparsers."""
    p = subparsers.add_parser(
        "train", help="train or fine-tune a CLIP model from a TOML/JSON config",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="TOML or JSON file of TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--init", metavar="MODEL", help="fine-tune this model (anything clipforge.load takes)")
    p.add_argument("--init-weights", metavar="TAG", help="weights tag when --init is a named architecture")
    p.add_argument("--wise-ft", nargs="?", type=float, const=0.5, metavar="ALPHA",
                   help="WiSE-FT: mix initial and fine-tuned weights at the end (default alpha 0.5)")
    p.add_argument("--freeze", choices=["image", "text"], help="lock a tower (LiT: --freeze image)")
    p.add_argument("--out-dir", help="output folder (checkpoints, metrics.jsonl, final.safetensors)")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if out_dir has checkpoints")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.train.config import load_config
    from clipforge.train.loop import train

    overrides = list(args.overrides)
    if args.init is not None:
        # --init replaces a from-scratch `model` from the file: the two are exclusive.
        overrides += [f"model.init={_toml_str(args.init)}", "model.architecture=none"]
    for flag, key in ((args.init_weights, "model.init_weights"), (args.freeze, "model.freeze"), (args.out_dir, "run.out_dir")):
        if flag is not None:
            overrides.append(f"{key}={_toml_str(flag)}")
    if args.wise_ft is not None:
        overrides.append(f"model.wise_ft_alpha={args.wise_ft}")
    if args.no_resume:
        overrides.append("run.resume=none")
    config = load_config(args.config, overrides)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = train(config)
    summary = result.train_metrics
    print(f"trained {result.steps} steps; final loss {summary.get('loss')}; skipped samples {result.skipped_samples}")
    print(f"model: {result.final_path}   (clipforge.load({str(result.final_path)!r}))")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}")
    if result.eval_metrics:
        print("eval: " + ", ".join(f"{k}={v:.4f}" for k, v in result.eval_metrics.items()))
    return 0


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: Any = None) -> int:
    """`python -m clipforge.cli.train CONFIG ...` (also what torchrun runs: `torchrun ... -m clipforge.cli.train`)."""
    parser = argparse.ArgumentParser(prog="clipforge train", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_command("train", run, parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
