"""Test images: a real clip-art corpus (Debian's openclipart-png), JPEGs made from it, and
generated images of every PIL mode.

The corpus is the openclipart-png package in the clipforge cache (shared with the data set builder).
If it is missing it is fetched with `apt-get download openclipart-png` and unpacked; if that fails
the tests FAIL with the reason: parity on real images is the point of these tests, so no silent skip.
"""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(__file__).resolve().parent / ".corpus_cache"  # files derived for tests (the JPEG set)
PACKAGE = "openclipart-png"
PNG_ROOT = Path("usr/share/openclipart/png")
# Large clip-art is slow to decode; the parity sample stays below this (a few bigger ones are
# still exercised by the batched-path tests through the bombs and by the JPEG set).
SAMPLE_MAX_PIXELS = 12_000_000


def _builder_cache() -> Path:
    from clipforge.datasets.openclipart import default_cache_dir

    return default_cache_dir()


# Decided once, when the tests start: tests that point CLIPFORGE_CACHE elsewhere must not move the corpus.
OPENCLIPART_CACHE = _builder_cache()


@functools.lru_cache(maxsize=1)
def corpus_dir() -> Path:
    """Directory of the unpacked openclipart PNGs: the same fetched package and unpacked tree as the
    OpenClipArt data set builder (clipforge.datasets.debian_packages, <clipforge cache>/openclipart)."""
    from clipforge.datasets.debian_packages import extract_deb, fetch_debs

    cache = OPENCLIPART_CACHE
    deb = fetch_debs([PACKAGE], cache)[PACKAGE]  # raises SourceUnavailable with apt's message: no silent skip
    return extract_deb(deb, cache / "unpacked") / PNG_ROOT


def _stable_key(root: Path, path: Path) -> str:
    return hashlib.sha1(str(path.relative_to(root)).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _header(path: Path) -> tuple[str, bool, tuple[int, int]] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.mode, "transparency" in im.info, im.size
    except Image.DecompressionBombError:
        return None


def _size_bucket(size: tuple[int, int]) -> str:
    short = min(size)
    if short < 32:
        return "tiny"
    if short < 224:
        return "small"
    if short < 1024:
        return "medium"
    return "large"


@functools.lru_cache(maxsize=1)
def corpus_files() -> tuple[Path, ...]:
    """Every regular PNG of the corpus (symlinked duplicates left out), in a stable order."""
    root = corpus_dir()
    return tuple(sorted((p for p in root.rglob("*.png") if not p.is_symlink()), key=lambda p: str(p.relative_to(root))))


def corpus_bombs() -> list[Path]:
    """Corpus files that PIL's default limit refuses (they really are that large)."""
    return [p for p in corpus_files() if _header(p) is None]


@functools.lru_cache(maxsize=4)
def corpus_sample(n: int = 200) -> tuple[Path, ...]:
    """A deterministic, stratified sample: every (mode, transparency, size bucket) cell is
    represented (up to n // 12 each), the rest filled in stable hash order."""
    root = corpus_dir()
    cells: dict[tuple, list[Path]] = {}
    for path in sorted(corpus_files(), key=lambda p: _stable_key(root, p)):
        header = _header(path)
        if header is None or header[2][0] * header[2][1] > SAMPLE_MAX_PIXELS:
            continue
        mode, transparent, size = header
        cells.setdefault((mode, transparent, _size_bucket(size)), []).append(path)
    per_cell = max(1, n // 12)
    chosen = [p for key in sorted(cells) for p in cells[key][:per_cell]]
    rest = sorted((p for key in cells for p in cells[key][per_cell:]), key=lambda p: _stable_key(root, p))
    chosen += rest[: max(0, n - len(chosen))]
    return tuple(sorted(chosen[:n], key=lambda p: str(p.relative_to(root))))


def corpus_jpegs() -> list[Path]:
    """Real JPEGs made from the clip-art (cached): RGB at several qualities and sizes,
    grayscale, CMYK, progressive, and one with an EXIF orientation tag."""
    out_dir = CACHE / "jpegs"
    done = out_dir / ".complete"
    if done.exists():
        return sorted(out_dir.glob("*.jpg"))
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    root = corpus_dir()
    sample = corpus_sample()
    large = [
        p for p in corpus_files() if (h := _header(p)) is not None and 900 <= min(h[2]) and h[2][0] * h[2][1] <= 8e6
    ]
    large = sorted(large, key=lambda p: _stable_key(root, p))[:8]
    sources = list(sample[::12]) + large
    for i, path in enumerate(sources):
        with Image.open(path) as im:
            rgb = _flatten(im)
        kind = i % 5
        name = out_dir / f"{i:02d}_{path.stem[:24]}"
        if kind == 0:
            rgb.save(f"{name}_q90.jpg", quality=90)
        elif kind == 1:
            rgb.convert("L").save(f"{name}_gray.jpg", quality=85)
        elif kind == 2:
            rgb.convert("CMYK").save(f"{name}_cmyk.jpg", quality=90)
        elif kind == 3:
            rgb.save(f"{name}_progressive.jpg", quality=75, progressive=True, subsampling=0)
        else:
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 CW to display
            rgb.save(f"{name}_exif6.jpg", quality=95, exif=exif)
    done.touch()
    return sorted(out_dir.glob("*.jpg"))


def _flatten(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


# -- generated images ----------------------------------------------------------------------

GENERATED_MODES = (
    "RGB",
    "RGBA",
    "LA",
    "L",
    "P",
    "P+transparency",
    "PA",
    "CMYK",
    "1",
    "I",
    "F",
    "I;16",
    "RGB+transparency",
)
ODD_SIZES = ((1, 1), (333, 517), (10000, 30), (30, 10000), (224, 224), (225, 223), (7, 400))


def generated_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A deterministic image of the given PIL mode: smooth gradients plus noise, so that
    resampling differences are visible, with real alpha / palette / transparency content."""
    w, h = size
    rng = np.random.default_rng(seed + 7919 * w + h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = [(xx / max(w - 1, 1)), (yy / max(h - 1, 1)), ((xx + yy) % 37) / 36.0]
    rgb = np.stack([c * 200 + rng.integers(0, 56, (h, w)) for c in base], -1).astype(np.uint8)
    alpha = (255 * ((xx // 5 + yy // 7) % 3 > 0) * (xx / max(w - 1, 1))).astype(np.uint8)
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]))
    if mode == "L":
        return Image.fromarray(rgb[..., 0])
    if mode == "LA":
        return Image.merge("LA", (Image.fromarray(rgb[..., 0]), Image.fromarray(alpha)))
    if mode == "P":
        return Image.fromarray(rgb).quantize(64)
    if mode == "P+transparency":
        im = Image.fromarray(rgb).quantize(64)
        im.info["transparency"] = 5
        return im
    if mode == "PA":
        return Image.merge("PA", (Image.fromarray(rgb).quantize(64), Image.fromarray(alpha)))
    if mode == "RGB+transparency":
        im = Image.fromarray(rgb)
        im.info["transparency"] = tuple(int(v) for v in rgb[h // 2, w // 2])
        return im
    if mode == "CMYK":
        bands = [rgb[..., 0], rgb[..., 1], rgb[..., 2], rgb[..., 1] // 2]
        return Image.merge("CMYK", [Image.fromarray(np.ascontiguousarray(b)) for b in bands])
    if mode == "1":
        return Image.fromarray(rgb[..., 0]).convert("1")
    if mode == "I":  # 8-bit range: the references are right here
        return Image.fromarray(rgb[..., 0].astype(np.int32))
    if mode == "F":
        return Image.fromarray(rgb[..., 1].astype(np.float32) * 1.1 - 10.0)
    if mode == "I;16":
        return Image.fromarray((rgb[..., 2].astype(np.uint16) * 257 + rng.integers(0, 200, (h, w))).astype(np.uint16))
    raise ValueError(mode)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
