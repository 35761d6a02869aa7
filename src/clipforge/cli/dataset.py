"""`clipforge dataset openclipart`: build the OpenClipArt image–caption data set and zero-shot benchmark."""

from __future__ import annotations

import argparse
import json
import sys

SHAPES_EXAMPLE = """example:
  clipforge dataset shapes --out data/shapes && clipforge train recipes/shapes-quick.toml   # a minute on a CPU
"""

EXAMPLE = """examples:
  clipforge dataset openclipart --out data/openclipart
  clipforge dataset openclipart --out data/openclipart --source ~/debs --image-size 224
  clipforge dataset openclipart --out /tmp/oc-small --limit 200

--source takes the two .deb files (openclipart-png, openclipart-svg), a folder holding them, an
unpacked tree (`dpkg-deb -x` output, or / when the packages are installed) or usr/share/openclipart
itself. Without it the packages are fetched with `apt-get download` into the clipforge cache.
Running it again is cheap: an identical build is detected and finished images are reused.
"""


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `clipforge dataset` and its `openclipart` builder."""
    p = subparsers.add_parser("dataset", help="build a data set from offline sources",
                              description="Build image–text data sets that need no internet connection.")
    builders = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = builders.add_parser(
        "openclipart",
        help="~6,800 public-domain clip-art images with captions and a 15-class zero-shot benchmark",
        description="Build OpenClipArt image–caption pairs (train/val/test JSONL, images, classes.json) "
                    "from Debian's openclipart-png and openclipart-svg packages.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--out", required=True, metavar="DIR", help="output folder")
    q.add_argument("--source", nargs="+", metavar="PATH", help=".deb files, a folder with them, or an unpacked tree")
    q.add_argument("--image-size", type=int, default=128, help="side of the square output images (default 128)")
    q.add_argument("--limit", type=int, help="build only this many pairs (a fixed, spread-out sample)")
    q.add_argument("--workers", type=int, default=1, help="image-processing processes (default 1: this one)")
    q.add_argument("--cache-dir", metavar="DIR", help="where fetched and unpacked packages are kept")
    q.add_argument("--min-class-images", type=int, default=40,
                   help="images a category needs to become a zero-shot class (default 40)")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=run_openclipart)

    s = builders.add_parser(
        "shapes", help="a tiny synthetic set (coloured shapes: \"a red circle\") that a CPU learns in a minute",
        description="Draw coloured shapes with captions (pairs.csv + images/): for trying the trainer.",
        epilog=SHAPES_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--n", type=int, default=240, help="number of images (default 240)")
    s.add_argument("--image-size", type=int, default=32, help="side of the images (default 32)")
    s.set_defaults(func=run_shapes)


def run_shapes(args: argparse.Namespace) -> int:
    from clipforge.train.synthetic import write_shapes_dataset

    path = write_shapes_dataset(args.out, args.n, image_size=args.image_size)
    print(f"wrote {args.n} shape images and captions: {path}")
    return 0


def run_openclipart(args: argparse.Namespace) -> int:
    from clipforge.datasets import openclipart

    source = args.source[0] if args.source and len(args.source) == 1 else args.source
    summary = openclipart.build(
        args.out,
        source=source,
        image_size=args.image_size,
        progress=sys.stderr.isatty(),
        cache_dir=args.cache_dir,
        limit=args.limit,
        workers=args.workers,
        min_class_images=args.min_class_images,
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format())
    return 0 if summary.n_pairs else 1
