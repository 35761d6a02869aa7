"""OpenClipArt image–text pairs and a zero-shot benchmark, built offline from two Debian packages.

Debian's `openclipart-png` and `openclipart-svg` (source package `openclipart`, 0.18) hold the same
~8,100 public-domain clip-art drawings twice, at the same relative paths: rendered PNGs under
/usr/share/openclipart/png/ and the SVG originals under /usr/share/openclipart/svg/. The SVGs carry
Dublin Core metadata (a title for nearly all, keywords for all, a description for ~1 in 5); the
directory path is a subject category (animals/mammals, food/fruit, ...). `build` pairs each PNG
with its SVG's metadata, writes a caption, an RGB image and a split, and defines a zero-shot
benchmark over the top-level categories. See docs/data.md for the choices and the measured figures.

Nothing here needs the network except `fetch_debs` (`apt-get download`), and only when no source
is given and the cache is empty. torch is not imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from clipforge.atomic_files import atomic_write_text
from clipforge.datasets.debian_packages import (
    SourceUnavailable,
    extract_deb,
    fetch_debs,
    newest_deb,
)
from clipforge.datasets.openclipart_captions import (
    CLASS_NAMES,
    EXCLUDED_CATEGORIES,
    SvgMetadata,
    caption_parts,
    caption_variants,
    class_name,
    make_caption,
    read_svg_metadata,
    with_category,
)
from clipforge.errors import InvalidInputError

__all__ = [
    "PACKAGES",
    "TEMPLATES",
    "CLASS_NAMES",
    "DatasetSummary",
    "PackageTree",
    "SvgMetadata",
    "SourceUnavailable",
    "build",
    "fetch_debs",
    "extract_deb",
    "locate_sources",
    "read_svg_metadata",
    "make_caption",
    "split_of",
    "render_image",
]

PathLike = Union[str, "os.PathLike[str]"]

PACKAGES = ("openclipart-png", "openclipart-svg")
PNG_SUBDIR = Path("usr/share/openclipart/png")
SVG_SUBDIR = Path("usr/share/openclipart/svg")
# Bump when the output for the same input changes (captions, image processing, splits).
BUILDER_VERSION = 7
# train_capped.jsonl keeps at most this many images per identical caption: in a contrastive batch,
# identical captions are false negatives (1,125 of 5,500 training pairs read "gramastar. stars, ...").
MAX_PAIRS_PER_CAPTION = 8

SPLITS = ("train", "val", "test")
SPLIT_PERCENT = {"train": 80, "val": 10, "test": 10}
# Zero-shot prompts: the images are drawings, so "a photo of" would be the wrong domain.
TEMPLATES = [
    "a clip art of {}.",
    "clip art of {}.",
    "a drawing of {}.",
    "an illustration of {}.",
    "a vector graphic of {}.",
]

MIN_CLASS_IMAGES = 40

# Drawings whose long side is below this are icons of a few pixels (3x2 flags): useless as training images.
MIN_SOURCE_SIDE = 16
# PIL's own default limit; the few larger renders (16000 px posters, a 21000x29700 stop sign) are skipped.
DEFAULT_MAX_PIXELS = 89_478_485




# ---- where the packages are -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where fetched .deb files and their unpacked trees live: <clipforge cache>/openclipart."""
    from clipforge.hub_cache import default_cache_dir as clipforge_cache

    return clipforge_cache() / "openclipart"


# ---- finding the two trees --------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageTree:
    """Where the PNGs, the SVGs and each package's /usr/share/doc folder are, and the package versions."""

    png_dir: Path
    svg_dir: Path
    doc_dirs: dict[str, Path]
    versions: dict[str, str]


def locate_sources(source: Union[PathLike, Sequence[PathLike], None] = None, cache_dir: Optional[PathLike] = None) -> PackageTree:
    """Resolve `source` into a PackageTree.

    source: None -> both .deb files from `cache_dir` (fetched with apt-get if absent) and unpacked there;
        a .deb file, or a list of .deb files and/or folders; a folder holding the .deb files; an unpacked
        root (`dpkg-deb -x` output, or "/" when the packages are installed); or the
        `usr/share/openclipart` folder itself (with png/ and svg/ inside).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if source is None:
        paths: list[Path] = list(fetch_debs(PACKAGES, cache).values())
    elif isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    else:
        paths = [Path(s) for s in source]

    # (png dir, svg dir, doc dir) candidates; each package may come from a different place.
    trees: list[tuple[Path, Path, Path]] = []

    def add_root(root: Path) -> None:
        trees.append((root / PNG_SUBDIR, root / SVG_SUBDIR, root / "usr/share/doc"))

    for path in paths:
        path = path.expanduser()
        if not path.exists():
            raise SourceUnavailable(f"source {path} does not exist")
        if path.is_file():
            if path.suffix != ".deb":
                raise SourceUnavailable(f"source {path} is a file but not a .deb package")
            add_root(extract_deb(path, cache / "unpacked"))
        elif (path / PNG_SUBDIR).is_dir() or (path / SVG_SUBDIR).is_dir():
            add_root(path)
        elif (path / "png").is_dir() or (path / "svg").is_dir():  # .../usr/share/openclipart itself
            trees.append((path / "png", path / "svg", path.parent / "doc"))
        else:
            debs = [d for p in PACKAGES if (d := newest_deb(path, p)) is not None]
            if not debs:
                raise SourceUnavailable(
                    f"source {path} holds neither openclipart .deb files nor {PNG_SUBDIR} / {SVG_SUBDIR}"
                )
            for deb in debs:
                add_root(extract_deb(deb, cache / "unpacked"))

    png = next((t[0] for t in trees if t[0].is_dir()), None)
    svg = next((t[1] for t in trees if t[1].is_dir()), None)
    if png is None or svg is None:
        missing = [name for name, d in (("openclipart-png", png), ("openclipart-svg", svg)) if d is None]
        raise SourceUnavailable(
            f"{' and '.join(missing)} not found in {', '.join(map(str, paths))}: expected .deb files, "
            f"or unpacked trees containing {PNG_SUBDIR} and {SVG_SUBDIR}"
        )
    doc_dirs = {}
    for package in PACKAGES:
        found = next((t[2] / package for t in trees if (t[2] / package).is_dir()), None)
        if found is not None:
            doc_dirs[package] = found
    versions = {p: v for p, d in doc_dirs.items() if (v := _changelog_version(d))}
    return PackageTree(png, svg, doc_dirs, versions)


def _changelog_version(doc_dir: Path) -> Optional[str]:
    """The version in the first line of changelog.Debian.gz: `openclipart (1:0.18+dfsg-19) unstable; ...`."""
    import gzip

    try:
        with gzip.open(doc_dir / "changelog.Debian.gz", "rt", encoding="utf-8") as f:
            match = re.match(r"\S+ \(([^)]+)\)", f.readline())
    except OSError:
        return None
    return match.group(1) if match else None


# ---- items, splits and classes ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    rel: str  # path under png/ (posix), e.g. "animals/mammals/cat_01.png"

    @property
    def source(self) -> str:
        return f"/{PNG_SUBDIR.as_posix()}/{self.rel}"

    @property
    def category(self) -> str:
        return "/".join(self.rel.split("/")[:-1])

    @property
    def top_category(self) -> str:
        return self.rel.split("/")[0] if "/" in self.rel else ""


def split_of(source: str) -> str:
    """"train", "val" or "test" from a hash of the package path: stable across runs, machines and package updates."""
    bucket = int(hashlib.sha1(source.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    return "val" if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["val"] else "test"


def cap_per_caption(records: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` records per identical caption, chosen by a hash of the source path (deterministic)."""
    kept: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for r in sorted(records, key=lambda r: hashlib.sha1(f"cap:{r['source']}".encode("utf-8")).hexdigest()):
        if seen.get(r["caption"], 0) < limit:
            seen[r["caption"]] = seen.get(r["caption"], 0) + 1
            kept.append(r)
    return sorted(kept, key=lambda r: r["image"])


def _subset_key(item: _Item) -> str:
    # A different hash from split_of's, so that `limit` takes a spread-out sample, not one split's worth.
    return hashlib.sha1(f"subset:{item.source}".encode("utf-8")).hexdigest()


def _list_items(png_dir: Path) -> tuple[list[_Item], int, list[str]]:
    """(real PNG files, number of symlinked duplicates merged into them, broken links).

    The package symlinks identical drawings (same file in two categories, or two SVGs that render
    the same): each image is kept once, at its real path, so no picture lands in two splits.
    """
    items, aliases, broken = [], 0, []
    root = png_dir.resolve()
    for dirpath, _, filenames in os.walk(png_dir):
        for name in filenames:
            if not name.lower().endswith(".png"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(png_dir).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if target.is_file() and target.is_relative_to(root):
                    aliases += 1
                else:
                    broken.append(rel)
                continue
            items.append(_Item(rel))
    return sorted(items, key=lambda item: item.rel), aliases, sorted(broken)


def _choose_classes(items: Sequence[_Item], min_images: int) -> list[str]:
    """Top-level categories (directory names) with at least `min_images` images, "unsorted" excluded, sorted."""
    counts: dict[str, int] = {}
    for item in items:
        if item.top_category:
            counts[item.top_category] = counts.get(item.top_category, 0) + 1
    return sorted(c for c, n in counts.items() if n >= min_images and c not in EXCLUDED_CATEGORIES)


# ---- images -----------------------------------------------------------------------------------------


def render_image(src: PathLike, dest: PathLike, image_size: int, *, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Write `src` as an `image_size` x `image_size` RGB PNG at `dest`; return the source's (width, height).

    The whole drawing is kept: it is scaled so its long side is `image_size` and centred on white
    (clip art has extreme aspect ratios; CLIP's center crop would cut banners and flags in half).
    Transparency is composited on white, in premultiplied form, so transparent pixels' hidden colours
    never bleed into the edges. Raises clipforge.image.ImageLoadError for unreadable files.
    """
    import numpy as np
    from PIL import Image

    from clipforge.image.files import ImageLoadError, load_image
    from clipforge.image.preprocess import has_alpha, to_8bit

    image = to_8bit(load_image(src, max_pixels=max_pixels))
    width, height = image.size
    if max(width, height) < MIN_SOURCE_SIDE:
        raise ImageLoadError(src, f"{width}x{height} is smaller than {MIN_SOURCE_SIDE} px on its long side", "too_small")
    scale = image_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if has_alpha(image):
        premultiplied = image.convert("RGBA").convert("RGBa").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        rgba = np.asarray(premultiplied).astype(np.int16)
        # Over white, premultiplied: out = colour * alpha + 255 * (1 - alpha) = premultiplied + 255 - alpha.
        rgb = np.clip(rgba[..., :3] + (255 - rgba[..., 3:]), 0, 255).astype(np.uint8)
        drawing = Image.fromarray(rgb, "RGB")
    else:
        drawing = image.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    canvas.paste(drawing, ((image_size - size[0]) // 2, (image_size - size[1]) // 2))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    canvas.save(tmp, "PNG")
    os.replace(tmp, dest)  # a killed build never leaves a half-written image that a re-run would trust
    return width, height


def _is_public_domain(license_uri: str) -> bool:
    # No licence of its own: the package's public-domain dedication covers it. A few files name
    # another licence (two say GPL 2.0); a data set documented as public domain leaves them out.
    uri = license_uri.lower()
    return not uri or "publicdomain" in uri or "/zero/" in uri


def _is_done(path: Path, image_size: int) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size == (image_size, image_size) and im.mode == "RGB"
    except (OSError, ValueError):
        return False


def _process(job: tuple[str, str, str, int, Optional[int], str]) -> dict[str, Any]:
    """One pair: metadata -> caption, PNG -> output image. Returns a record, or {"error": code, "message": ...}."""
    png, svg, dest, image_size, max_pixels, category = job
    try:
        meta = read_svg_metadata(svg)
    except (OSError, ET.ParseError) as e:
        return {"error": "bad_svg", "message": f"{type(e).__name__}: {e}"}
    if not _is_public_domain(meta.license):
        return {"error": "not_public_domain", "message": f"the SVG's metadata names the licence {meta.license}"}
    caption = make_caption(meta, category)
    if not caption:
        return {"error": "no_caption", "message": "no usable title, description, keywords or category"}
    parts = caption_parts(meta)
    reused = _is_done(Path(dest), image_size)
    if not reused:
        from clipforge.image.files import ImageLoadError

        try:
            render_image(png, dest, image_size, max_pixels=max_pixels)
        except ImageLoadError as e:
            return {"error": e.code, "message": e.reason}
    return {"caption": caption, "parts": parts, "creator": meta.creator, "license": meta.license, "reused": reused}


# ---- the build --------------------------------------------------------------------------------------


@dataclass
class DatasetSummary:
    """What `build` made: counts per split and class, caption statistics, what was skipped and why."""

    out_dir: str
    n_pairs: int
    splits: dict[str, int]
    classnames: list[str]
    images_per_class: dict[str, int]
    n_labelled: int
    caption_chars: dict[str, float]
    caption_words: dict[str, float]
    n_unique_captions: int
    skipped: dict[str, int]
    skipped_examples: dict[str, list[str]]
    n_duplicates_merged: int
    n_images_reused: int
    packages: dict[str, str]
    licenses: dict[str, int]
    image_size: int
    limit: Optional[int]
    seconds: float
    up_to_date: bool = False  # True when an identical earlier build was found and nothing was redone

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A human-readable multi-line report."""
        per_class = sorted(self.images_per_class.values())
        lines = [
            f"OpenClipArt pairs in {self.out_dir}" + (" (already built, nothing redone)" if self.up_to_date else ""),
            f"  packages: {', '.join(f'{p} {v}' for p, v in self.packages.items()) or 'versions unknown'}",
            f"  pairs: {self.n_pairs}  ("
            + ", ".join(f"{s} {self.splits.get(s, 0)}" for s in SPLITS)
            + f"); images {self.image_size}x{self.image_size}"
            + (f"; limit {self.limit}" if self.limit is not None else ""),
            f"  classes: {self.n_classes}, labelled images: {self.n_labelled} "
            f"(unlabelled: {self.n_pairs - self.n_labelled})",
        ]
        if per_class:
            lines.append(
                f"  images per class: min {per_class[0]}, median {statistics.median(per_class):g}, max {per_class[-1]}"
            )
            lines.append("    " + ", ".join(f"{name} {n}" for name, n in self.images_per_class.items()))
        c, w = self.caption_chars, self.caption_words
        if c:
            lines.append(
                f"  caption length: chars min {c['min']:g} / median {c['median']:g} / mean {c['mean']:.1f} / max {c['max']:g}; "
                f"words min {w['min']:g} / median {w['median']:g} / mean {w['mean']:.1f} / max {w['max']:g}; "
                f"unique captions {self.n_unique_captions}"
            )
        lines.append(f"  symlinked duplicates merged: {self.n_duplicates_merged}; images reused from an earlier run: {self.n_images_reused}")
        skipped = sum(self.skipped.values())
        lines.append(f"  skipped: {skipped}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) + ")" if skipped else ""))
        for reason, examples in sorted(self.skipped_examples.items()):
            lines.append(f"    {reason}: {', '.join(examples)}")
        lines.append(f"  time: {self.seconds:.1f} s")
        return "\n".join(lines)


def build(
    out_dir: PathLike,
    *,
    source: Union[PathLike, Sequence[PathLike], None] = None,
    image_size: int = 128,
    progress: bool = True,
    cache_dir: Optional[PathLike] = None,
    limit: Optional[int] = None,
    workers: int = 1,
    min_class_images: int = MIN_CLASS_IMAGES,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
) -> DatasetSummary:
    """Build the OpenClipArt image–text data set and zero-shot benchmark into `out_dir`.

    Writes images/<category path>/<name>.png, train.jsonl / val.jsonl / test.jsonl (one
    {"image", "caption", "label", "source", "category", "creator"} object per line), classes.json,
    LICENSE_AND_PROVENANCE.md and build_info.json. Idempotent: an identical earlier build is
    returned as is; after a change or an interruption, finished images are reused.

    source: see `locate_sources` (None: fetch both packages with apt-get into `cache_dir`).
    limit: build only this many pairs, a deterministic spread-out sample (for tests and trials);
        the classes are still chosen from the whole package, so they match the full build's.
    workers: processes decoding images; 1 (default) works in this process (the full build takes
        ~40 s on one core, so a pool is an option, not a need).
    min_class_images: a top-level category becomes a zero-shot class with at least this many images.
    max_pixels: larger PNGs are skipped ("decompression_bomb"); None decodes everything.
    """
    if image_size < 8:
        raise InvalidInputError(f"image_size must be >= 8, got {image_size}")
    if limit is not None and limit < 1:
        raise InvalidInputError(f"limit must be >= 1, got {limit}")
    started = time.monotonic()
    out = Path(out_dir)
    tree = locate_sources(source, cache_dir)
    params = {
        "builder_version": BUILDER_VERSION,
        "packages": tree.versions,
        "image_size": image_size,
        "limit": limit,
        "min_class_images": min_class_images,
        "max_pixels": max_pixels,
    }
    previous = _previous_build(out, params)
    if previous is not None:
        return previous

    items, n_aliases, broken = _list_items(tree.png_dir)
    categories = _choose_classes(items, min_class_images)
    label_of = {c: i for i, c in enumerate(categories)}
    if limit is not None:
        items = sorted(sorted(items, key=_subset_key)[:limit], key=lambda item: item.rel)

    jobs = [
        (
            str(tree.png_dir / item.rel),
            str(tree.svg_dir / item.rel[: -len(".png")]) + ".svg",
            str(out / "images" / item.rel),
            image_size,
            max_pixels,
            item.category,
        )
        for item in items
    ]
    results = _run_jobs(jobs, workers, progress)

    records: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    skipped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    licenses: dict[str, int] = {}
    reused = 0
    if broken:
        skipped["broken_link"] = len(broken)
        examples["broken_link"] = broken[:3]
    for item, result in zip(items, results):
        if "error" in result:
            code = result["error"]
            skipped[code] = skipped.get(code, 0) + 1
            if len(examples.setdefault(code, [])) < 3:
                examples[code].append(f"{item.rel} ({result['message']})")
            continue
        reused += result["reused"]
        license_ = result["license"] or "(none stated)"
        licenses[license_] = licenses.get(license_, 0) + 1
        caption = with_category(result["caption"], item.category)
        record = {
            "image": f"images/{item.rel}",
            "caption": caption,
            "label": label_of.get(item.top_category, -1),
            "source": item.source,
            "category": item.category,
            "creator": result["creator"],
        }
        split = split_of(item.source)
        if split == "train":
            record["captions"] = caption_variants(caption, result["parts"], item.category, item.source)
        records[split].append(record)

    classnames = [class_name(c) for c in categories]
    all_records = [r for split in SPLITS for r in records[split]]
    per_class = {name: 0 for name in classnames}
    for r in all_records:
        if r["label"] >= 0:
            per_class[classnames[r["label"]]] += 1
    captions = [r["caption"] for r in all_records]

    for split in SPLITS:
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[split]))
    capped = cap_per_caption(records["train"], MAX_PAIRS_PER_CAPTION)
    atomic_write_text(out / "train_capped.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in capped))
    classes = {
        "classnames": classnames,
        "templates": TEMPLATES,
        "categories": categories,
        "images_per_class": per_class,
        "min_class_images": min_class_images,
        "provenance": (
            "Zero-shot benchmark over the top-level subject directories of Debian's openclipart-png/-svg "
            f"({', '.join(f'{p} {v}' for p, v in tree.versions.items())}): category /usr/share/openclipart/png/<category>/... "
            f"with >= {min_class_images} images (unsorted excluded); label = index into classnames, -1 = no class. "
            "Built by clipforge.datasets.openclipart."
        ),
    }
    atomic_write_text(out / "classes.json", json.dumps(classes, indent=2, ensure_ascii=False) + "\n")

    summary = DatasetSummary(
        out_dir=str(out),
        n_pairs=len(all_records),
        splits={s: len(records[s]) for s in SPLITS},
        classnames=classnames,
        images_per_class=per_class,
        n_labelled=sum(per_class.values()),
        caption_chars=_stats([len(c) for c in captions]),
        caption_words=_stats([len(c.split()) for c in captions]),
        n_unique_captions=len(set(captions)),
        skipped=skipped,
        skipped_examples=examples,
        n_duplicates_merged=n_aliases,
        n_images_reused=reused,
        packages=tree.versions,
        licenses=licenses,
        image_size=image_size,
        limit=limit,
        seconds=round(time.monotonic() - started, 1),
    )
    atomic_write_text(out / "LICENSE_AND_PROVENANCE.md", _provenance_text(tree, summary))
    # Written last: its presence says the build finished.
    atomic_write_text(out / "build_info.json", json.dumps({"params": params, "summary": summary.to_dict()}, indent=2) + "\n")
    return summary


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="openclipart", unit="image", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 64:
            results = []
            for job in jobs:
                results.append(_process(job))
                bar.update(1)
            return results
        from concurrent.futures import ProcessPoolExecutor

        # The platform's default start method; under "spawn" (macOS, Windows) the calling script
        # needs the usual `if __name__ == "__main__":` guard, as with any process pool.
        with ProcessPoolExecutor(workers) as pool:
            results = []
            for result in pool.map(_process, jobs, chunksize=16):
                results.append(result)
                bar.update(1)
            return results
    finally:
        bar.close()


def _previous_build(out: Path, params: dict[str, Any]) -> Optional[DatasetSummary]:
    try:
        info = json.loads((out / "build_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("params") != params:
        return None
    needed = [out / f"{s}.jsonl" for s in SPLITS] + [out / "train_capped.jsonl", out / "classes.json", out / "LICENSE_AND_PROVENANCE.md"]
    if not all(p.is_file() for p in needed):
        return None
    for split in SPLITS:  # cheap existence check of every image the splits name
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip() and not (out / json.loads(line)["image"]).is_file():
                return None
    summary = DatasetSummary(**info["summary"])
    summary.up_to_date = True
    return summary


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "mean": round(statistics.fmean(values), 2), "max": max(values)}


def _provenance_text(tree: PackageTree, summary: DatasetSummary) -> str:
    packages = "\n".join(f"- `{p}` version `{tree.versions.get(p, 'unknown')}` (Debian, source package `openclipart`)" for p in PACKAGES)
    copyrights: dict[str, list[str]] = {}
    for p in PACKAGES:
        path = tree.doc_dirs.get(p, Path("/nonexistent")) / "copyright"
        try:
            copyrights.setdefault(path.read_text(encoding="utf-8", errors="replace").strip(), []).append(p)
        except OSError:
            copyrights.setdefault("", []).append(p)
    quoted = []
    for text, owners in copyrights.items():
        header = f"`/usr/share/doc/{{{','.join(owners)}}}/copyright`" if len(owners) > 1 else f"`/usr/share/doc/{owners[0]}/copyright`"
        if text:
            quoted.append(f"{header}, verbatim:\n\n```\n{text}\n```")
        else:
            quoted.append(f"{header}: not found in the source given to the builder.")
    licenses = "\n".join(f"- `{lic}`: {n} images" for lic, n in sorted(summary.licenses.items(), key=lambda kv: -kv[1]))
    return f"""# OpenClipArt image–text pairs: licence and provenance

Built by `clipforge.datasets.openclipart.build` (builder version {BUILDER_VERSION}) from:

{packages}

Upstream: the Open Clip Art Library, release 0.18 (http://www.openclipart.org). Every drawing was
dedicated to the public domain by its author; Debian ships them under the Creative Commons Public
Domain Dedication quoted below. The per-image licence each SVG's own metadata declares
(`cc:license`), over the {summary.n_pairs} images of this build (none stated: the package's
dedication applies):

{licenses}

Drawings whose own metadata names a licence that is not a public-domain dedication are left out
of the build ({summary.skipped.get("not_public_domain", 0)} here; in 0.18 two computer drawings say GPL 2.0).

What this data set changed: the PNGs are Debian's renders of the SVGs, composited on white,
scaled to fit {summary.image_size}x{summary.image_size} and padded with white; captions are written
from each SVG's title, description and keywords (`dc:title`, `dc:description`, `dc:subject`);
labels come from the directory the file sits in. The `creator` field of each record is the SVG's
`dc:creator` (attribution is not required for public-domain work, but it is kept).

## The packages' licence

{chr(10).join(quoted)}
"""
