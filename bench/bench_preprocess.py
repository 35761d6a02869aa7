"""Preprocessing figures: speed against the references, the batched path, JPEG draft mode.

Run from the repository root (uses the test corpus, fetched on first use):
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_preprocess.py [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import image_fixtures as fx  # noqa: E402

from clipforge.configs import PreprocessConfig  # noqa: E402
from clipforge.image import Preprocess, iter_image_batches, load_image  # noqa: E402


def per_image_ms(fn, images: list[Image.Image]) -> float:
    start = time.perf_counter()
    for image in images:
        fn(image)
    return 1000 * (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", "Palette images with Transparency")
    torch.set_num_threads(1)

    paths = list(fx.corpus_sample(200))
    images = [load_image(p) for p in paths]
    median_kpx = statistics.median(im.width * im.height for im in images) / 1e3
    print(f"corpus sample: {len(images)} PNGs, median {median_kpx:.0f} kpx")

    import clip  # reference, for timing only
    from transformers import CLIPImageProcessor

    hf = CLIPImageProcessor()
    rows = [
        ("clipforge openai", Preprocess()),
        ("clip._transform(224)", clip.clip._transform(224)),
        ("clipforge hf", Preprocess(PreprocessConfig(mode="hf"))),
        ("transformers CLIPImageProcessor", lambda im: hf(im, return_tensors="pt")),
        ("clipforge hf, hf_backend=pil", Preprocess(PreprocessConfig(mode="hf"), hf_backend="pil")),
    ]
    for name, fn in rows:
        per_image_ms(fn, images[:20])  # warm up
        print(f"  {name:34s} {per_image_ms(fn, images):6.2f} ms/image (decoded, 1 thread)")

    pre = Preprocess()
    for workers in (0, args.workers):
        start = time.perf_counter()
        n = sum(len(b) for b in iter_image_batches(paths, pre, batch_size=32, num_workers=workers))
        elapsed = time.perf_counter() - start
        print(f"iter_image_batches, {workers} workers: {n / elapsed:6.1f} images/s (decode + preprocess)")

    jpegs = [p for p in fx.corpus_jpegs() if min(Image.open(p).size) >= 4 * 224]
    cos, mx, t_exact, t_draft = [], [], 0.0, 0.0
    for path in jpegs:
        start = time.perf_counter()
        a = pre(load_image(path))
        t_exact += time.perf_counter() - start
        start = time.perf_counter()
        b = pre(load_image(path, draft_size=224))
        t_draft += time.perf_counter() - start
        cos.append(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item())
        mx.append((a - b).abs().max().item())
    shorts = [min(Image.open(p).size) for p in jpegs]
    print(f"JPEG draft (n={len(jpegs)}, short side {min(shorts)}-{max(shorts)} px), S=224:")
    print(f"  cosine to exact: min {min(cos):.5f} mean {statistics.mean(cos):.5f}")
    print(f"  max abs diff:    max {max(mx):.3f} mean {statistics.mean(mx):.3f}")
    print(f"  load+preprocess: {1000 * t_exact / len(jpegs):.1f} -> {1000 * t_draft / len(jpegs):.1f} ms/image")


if __name__ == "__main__":
    main()
