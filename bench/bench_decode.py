"""Per-image decode and preprocessing cost of bench/run.py's end-to-end file sets, exact and draft.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_decode.py [--rounds 3]

The profile behind BENCHMARKS.md's end-to-end bounds: for each file set, ms per image to decode
(`clipforge.image.files.load_image`) and to resize/crop/normalize (`Preprocess`), on the exact path
and with draft JPEG decoding; and the floor of JPEG decoding, the photos decoded from memory at the
smallest DCT scale libjpeg offers (1/8), which no draft setting can go below.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as wl  # noqa: E402

from clipforge.configs import PreprocessConfig  # noqa: E402
from clipforge.image import Preprocess  # noqa: E402
from clipforge.image.files import load_image  # noqa: E402


def stage_costs(files: list[str], draft: bool, rounds: int) -> tuple[float, float]:
    """ms per image, each stage's best over the rounds: (decode, preprocess)."""
    preprocess = Preprocess(PreprocessConfig(image_size=224))
    decode, pre = [], []
    for _ in range(rounds):
        d = p = 0.0
        for f in files:
            t0 = time.perf_counter()
            image = load_image(f, draft_size=224 if draft else None)
            t1 = time.perf_counter()
            preprocess(image)
            d, p = d + t1 - t0, p + time.perf_counter() - t1
        decode.append(1e3 * d / len(files))
        pre.append(1e3 * p / len(files))
    return min(decode), min(pre)


def decode_from_memory(files: list[str], request: int | None, rounds: int) -> float:
    data = [Path(f).read_bytes() for f in files if f.lower().endswith((".jpg", ".jpeg"))]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for d in data:
            image = Image.open(io.BytesIO(d))
            if request is not None:
                image.draft("RGB", (request, request))
            image.load()
        best = min(best, 1e3 * (time.perf_counter() - t0) / len(data))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| file set | files | path | decode ms/img | preprocess ms/img | total |")
    print("|---|---:|---|---:|---:|---:|")
    photos: list[str] = []
    for name, fetch in wl.FILE_SETS.items():
        files = fetch()
        if name == "photos":
            photos = files
        for draft in (False, True):
            d, p = stage_costs(files, draft, args.rounds)
            print(f"| {name} | {len(files)} | {'draft' if draft else 'exact'} | {d:.1f} | {p:.1f} | {d + p:.1f} |")
    if photos:
        full = decode_from_memory(photos, None, args.rounds)
        floor = decode_from_memory(photos, 1, args.rounds)
        print(f"\nphotos decoded from memory: full size {full:.1f} ms/img, smallest DCT scale (1/8) {floor:.1f} ms/img "
              f"({100 * floor / full:.0f}%: entropy decoding, which DCT scaling cannot skip)")


if __name__ == "__main__":
    main()
