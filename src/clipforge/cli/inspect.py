"""`clipforge inspect PATH`: what a checkpoint file or folder is, from its headers (no tensor data, no code)."""

from __future__ import annotations

import argparse
from typing import Any

from clipforge.cli.common import json_text, printable

EXAMPLE = """examples:
  clipforge inspect sd_xl_base_1.0.safetensors      # SDXL base: CLIP ViT-L/14 text + OpenCLIP bigG/14 text, fp16
  clipforge inspect ViT-B-32.pt --json
  clipforge inspect stable-diffusion-3-medium-diffusers/
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inspect", help="say what a checkpoint file or folder holds (which CLIPs, sizes, dtypes, record)",
        description="Read a checkpoint's headers and metadata only (no tensor data, no unpickled code) and say what "
                    "it is: format, which CLIP(s) by name, parameter counts, dtype, the stored record, and the command "
                    "to use it. Works on every format clipforge reads, Stable Diffusion files and diffusers folders included.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="a checkpoint file or folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.inspection import inspect_path

    result = inspect_path(args.path)
    print(json_text(result.to_dict()) if args.json else printable(result.format_text()).replace("\\u000a", "\n"))
    return 0
