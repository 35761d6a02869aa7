"""`clipforge` command line. Heavy imports (torch) happen inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

EXAMPLES = """examples:
  clipforge models
  clipforge convert ViT-B-32.pt vitb32-hf --to hf
  clipforge convert open_clip_model.safetensors model.pt --to openai --arch ViT-H-14
"""


def _cmd_models(args: argparse.Namespace) -> int:
    from clipforge import model_zoo

    print(f"{model_zoo.BUNDLED_MODEL_NAME}\t(bundled, the default: no download)")
    for arch, tag in model_zoo.list_models():
        if arch in model_zoo.NAMED_MODELS:
            entry = model_zoo.NAMED_MODELS[arch]
            print(f"{arch}\t(Hugging Face repo {tag}: {entry.family}, {entry.license})")
        else:
            print(f"{arch}\t{tag}")
    for hub_id, (arch, tag) in model_zoo.HF_HUB_IDS.items():
        print(f"{hub_id}\t(Hugging Face repo: {arch}, {tag})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from clipforge.conversion import convert

    report = convert(args.source, args.destination, args.to, arch=args.arch)
    print(f"wrote {report.destination} ({report.format}); max abs difference vs source: {report.max_abs_diff:.3g} "
          f"(output scale {report.feature_scale:.3g}); {report.library_check}")
    return 0


# Commands living in their own modules: each exposes `add_parser(subparsers)` and sets `func`.
COMMAND_MODULES: list[str] = ["inspect", "classify", "compare", "score", "embed", "search", "interrogate", "dataset", "evaluate", "demo", "train", "plan", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipforge", description="CLIP models: load, convert, embed.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the bundled model, named architectures with their weights tags, and known hub ids")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "convert", help="convert a checkpoint between formats (checked numerically before writing)",
        epilog="example: clipforge convert ViT-B-32.pt out_dir --to hf",
    )
    p.add_argument("source", help="checkpoint file or directory (OpenAI .pt, open_clip, transformers dir, clipforge)")
    p.add_argument("destination", help="file (clipforge/openai/open_clip) or directory (hf; open_clip without an extension) to write")
    p.add_argument("--to", required=True, choices=["clipforge", "openai", "open_clip", "hf"])
    p.add_argument("--arch", help="named architecture, when the source file does not say (e.g. ViT-H-14)")
    p.set_defaults(func=_cmd_convert)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(f"clipforge.cli.{module}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from clipforge.cli.common import run_command

    args = build_parser().parse_args(argv)
    return run_command(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
