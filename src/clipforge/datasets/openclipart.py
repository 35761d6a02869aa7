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
import html
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Optional, Sequence, Union

from clipforge.atomic_files import atomic_write_text

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
# Training records also carry `captions`: this many phrasings of the same metadata (the full caption
# first), from which a run draws one per epoch (TrainConfig.caption_column = "captions").
N_CAPTION_VARIANTS = 6
# How the variants name the category. The evaluation templates are not among them, except the
# "clip art of" that starts every full caption, so zero-shot still tests phrasings not trained on.
CATEGORY_PHRASES = ("clip art of {}", "{} clip art", "a picture of {}", "an image of {}", "a sketch of {}", "{}")

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

# Readable class names for the package's top-level directories (what the images mostly show).
CLASS_NAMES = {
    "animals": "animals",
    "buildings": "buildings",
    "buttons": "buttons",
    "computer": "computer icons",
    "containers": "containers",
    "decorations": "decorations",
    "education": "education",
    "electronics": "electronics",
    "food": "food and drink",
    "geography": "maps and geography",
    "logos": "logos",
    "office": "office supplies",
    "people": "people",
    "plants": "plants",
    "recreation": "games and recreation",
    "science": "science",
    "shapes": "shapes",
    "signs_and_symbols": "signs and symbols",
    "special": "patterns and gradients",
    "tools": "tools",
    "transportation": "transportation",
}
# "unsorted" is a bin, not a subject: never a class.
EXCLUDED_CATEGORIES = frozenset({"unsorted"})
MIN_CLASS_IMAGES = 40

MAX_CAPTION_CHARS = 200
MAX_DESCRIPTION_CHARS = 150
MAX_KEYWORDS = 6
# Drawings whose long side is below this are icons of a few pixels (3x2 flags): useless as training images.
MIN_SOURCE_SIDE = 16
# PIL's own default limit; the few larger renders (16000 px posters, a 21000x29700 stop sign) are skipped.
DEFAULT_MAX_PIXELS = 89_478_485

_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
_WORK = f"{{{_NS['cc']}}}Work"


class SourceUnavailable(RuntimeError):
    """The OpenClipArt packages could not be found, fetched or unpacked; the message says how to provide them."""


# ---- fetching and unpacking the Debian packages -----------------------------------------------------


def default_cache_dir() -> Path:
    """Where fetched .deb files and their unpacked trees live: <clipforge cache>/openclipart."""
    from clipforge.hub_cache import default_cache_dir as clipforge_cache

    return clipforge_cache() / "openclipart"


def fetch_debs(packages: Sequence[str], cache_dir: PathLike) -> dict[str, Path]:
    """`{package: .deb path}`: the newest `<package>_*.deb` already in `cache_dir`, else `apt-get download`.

    Downloads go to a private temporary folder first, so concurrent callers never see half a file.
    On a machine without package lists, root runs `apt-get update` once and retries.
    Raises SourceUnavailable (with apt's own message) when a package cannot be had.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    found = {p: _newest_deb(cache, p) for p in packages}
    missing = [p for p, deb in found.items() if deb is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise SourceUnavailable(
                f"{', '.join(missing)}: apt-get not found. Download the .deb files yourself and pass "
                f"source=<folder with them> (or an unpacked tree, e.g. source='/' after `apt install`)."
            )
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            result = _run(["apt-get", "download", *missing], Path(tmp))
            if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
                _run(["apt-get", "update"], Path(tmp))  # a fresh machine may have no package lists yet
                result = _run(["apt-get", "download", *missing], Path(tmp))
            for deb in Path(tmp).glob("*.deb"):
                os.replace(deb, cache / deb.name)
        for p in missing:
            found[p] = _newest_deb(cache, p)
            if found[p] is None:
                raise SourceUnavailable(
                    f"`apt-get download {' '.join(missing)}` failed in {cache} (exit {result.returncode}):\n"
                    f"{result.stderr.strip()}"
                )
    return {p: deb for p, deb in found.items() if deb is not None}


def extract_deb(deb: PathLike, dest_parent: PathLike) -> Path:
    """Unpack a .deb's data archive into `dest_parent/<deb file stem>/` (once) and return that root.

    Pure Python (ar + tarfile), so `dpkg-deb` is not needed; it is used only for a compression
    tarfile cannot read (zstd). Members that would land outside the root (absolute paths, `..`,
    links pointing out) are skipped. The tree appears atomically, marked complete.
    """
    deb = Path(deb)
    dest = Path(dest_parent) / deb.name[: -len(".deb")]
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        _unpack_deb_data(deb, tmp)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / ".complete").exists():  # a stale, incomplete tree from an interrupted run
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename happened
    return dest


def _unpack_deb_data(deb: Path, dest: Path) -> None:
    with open(deb, "rb") as f:
        members = dict(_ar_members(f, deb))
        name = next((n for n in members if n.startswith("data.tar")), None)
        if name is None:
            raise SourceUnavailable(f"{deb}: not a Debian package (no data.tar member)")
        mode = {"data.tar": "r|", "data.tar.gz": "r|gz", "data.tar.xz": "r|xz", "data.tar.bz2": "r|bz2"}.get(name)
        if mode is None:
            if shutil.which("dpkg-deb") is None:
                raise SourceUnavailable(f"{deb}: {name} needs dpkg-deb to unpack, and it is not installed")
            result = _run(["dpkg-deb", "-x", str(deb.resolve()), str(dest)], dest)
            if result.returncode != 0:
                raise SourceUnavailable(f"dpkg-deb -x {deb} failed: {result.stderr.strip()}")
            return
        offset, size = members[name]
        f.seek(offset)
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        with tarfile.open(fileobj=_Bounded(f, size), mode=mode) as tar:
            for member in tar:
                if _safe_member(member):
                    tar.extract(member, dest, **trusted)  # checked above; "fully_trusted" only silences 3.12's warning


def _ar_members(f: BinaryIO, path: Path) -> Iterable[tuple[str, tuple[int, int]]]:
    """(name, (offset, size)) for each member of an ar archive (the .deb container)."""
    if f.read(8) != b"!<arch>\n":
        raise SourceUnavailable(f"{path}: not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        yield name, (f.tell(), size)
        f.seek(size + (size & 1), os.SEEK_CUR)  # members are 2-byte aligned


class _Bounded:
    """A read-only view of `size` bytes of a file from its current position (one ar member)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def _safe_member(member: tarfile.TarInfo) -> bool:
    name = Path(member.name)
    if name.is_absolute() or ".." in name.parts:
        return False
    if member.issym():
        target = Path(member.linkname)
        inside = os.path.normpath(name.parent / target)
        return not target.is_absolute() and not inside.startswith("..")
    return member.isfile() or member.isdir()


def _newest_deb(cache: Path, package: str) -> Optional[Path]:
    debs = sorted(cache.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


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
            debs = [d for p in PACKAGES if (d := _newest_deb(path, p)) is not None]
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


# ---- metadata and captions --------------------------------------------------------------------------


@dataclass
class SvgMetadata:
    """The cc:Work record of an OpenClipArt SVG (empty strings where absent)."""

    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    creator: str = ""
    license: str = ""


def read_svg_metadata(path: PathLike) -> SvgMetadata:
    """Parse the <cc:Work> block of an SVG. Stops reading as soon as it ends (it comes first, in <metadata>).

    Raises ET.ParseError / OSError for unreadable files; an SVG without the block gives empty metadata.
    """
    with open(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag != _WORK:
                continue

            def text(el: Optional[ET.Element]) -> str:
                return (el.text or "").strip() if el is not None else ""

            license_el = elem.find("cc:license", _NS)
            return SvgMetadata(
                title=text(elem.find("dc:title", _NS)),
                description=text(elem.find("dc:description", _NS)),
                keywords=[text(li) for li in elem.findall("dc:subject/rdf:Bag/rdf:li", _NS) if text(li)],
                creator=text(elem.find("dc:creator/cc:Agent/dc:title", _NS)),
                license=license_el.get(f"{{{_NS['rdf']}}}resource", "") if license_el is not None else "",
            )
    return SvgMetadata()


# Titles that name the collection or the uploader's batch rather than the drawing.
_BOILERPLATE = re.compile(
    r"collection|theme|icon ?set|s[iu]bmission|\bicons$|^various|^untitled|^new document|^image$|^drawing$",
    re.IGNORECASE,
)
_CLIPART_WORD = re.compile(r"\s*\bclip ?arts?\b\s*", re.IGNORECASE)  # "Homes Clipart" -> "Homes"
_PERL_REF = re.compile(r"hash\(0x[0-9a-f]+\)", re.IGNORECASE)  # "HASH(0x8677e2c)": a stringified Perl reference
_CLIPART_BY = re.compile(r"^clip ?art by [^-]+ - ", re.IGNORECASE)  # "Clipart by Nicu Buculei - arrow08_4"
_FILE_NAME = re.compile(r"[\w.\-]+")
_FILE_NAME_HINT = re.compile(r"[a-z]\d|\d[a-z]|_\d|\d_|\.(svg|png)$", re.IGNORECASE)
_URL_OR_EMAIL = re.compile(r"https?://|www\.|\S@\S", re.IGNORECASE)
_HEXISH = re.compile(r"(0x)?[0-9a-f]*\d[0-9a-f]*")
_STOP_KEYWORDS = frozenset(
    {"", "none", "hash", "unsorted", "magick", "mapsym", "clipart", "clip art", "openclipart", "svg",
     "public domain", "image", "picture", "special"}
)


def _clean(text: str) -> str:
    # Some metadata is escaped twice ("&amp;quot;"): the XML parser undoes one level, html.unescape the other.
    return " ".join(_PERL_REF.sub(" ", html.unescape(text)).split())


def _clean_title(title: str) -> str:
    title = _CLIPART_BY.sub("", _clean(title))
    title = _CLIPART_WORD.sub(" ", re.sub(r"\bSVG\b\s*", "", title)).strip(" -.,;:")
    if not title or _BOILERPLATE.search(title):
        return ""
    if _FILE_NAME.fullmatch(title) and _FILE_NAME_HINT.search(title):  # "jigsaw_red_10", "fc23": a file name
        return ""
    return " ".join(title.replace("_", " ").split())


def _clean_description(description: str, title: str) -> str:
    """The first sentence, if it is short, says something the title does not, and is not a URL or address."""
    description = _clean(description)
    if not description or _URL_OR_EMAIL.search(description) or _BOILERPLATE.search(description):
        return ""
    description = description.split(". ")[0].strip(" .")
    if len(description) > MAX_DESCRIPTION_CHARS:  # a cut-off fragment reads worse than no description
        return ""
    words = re.findall(r"[^\W\d_]+", description.lower())
    title_words = set(re.findall(r"[^\W\d_]+", title.lower()))
    if not words or sum(w in title_words for w in words) >= 0.8 * len(words):  # "Bull" / "Bull."
        return ""
    return description


def _clean_keywords(keywords: Sequence[str], already: str, creator: str) -> list[str]:
    seen_words = {w.rstrip("s") for w in re.findall(r"\w+", already.lower())}  # plural-insensitive
    kept: list[str] = []
    stems: set[str] = set()
    for raw in keywords:
        k = " ".join(_clean(raw).lower().replace("_", " ").replace("-", " ").split())
        stem = k.rstrip("s")
        if (
            k in _STOP_KEYWORDS
            or _HEXISH.fullmatch(k.replace(" ", ""))
            or "theme" in k
            or "architetto" in k  # an author's name used as a tag on hundreds of drawings
            or (creator and k == creator.lower())
            or stem in stems
            or {w.rstrip("s") for w in re.findall(r"\w+", k)} <= seen_words
        ):
            continue
        kept.append(k)
        stems.add(stem)
        if len(kept) == MAX_KEYWORDS:
            break
    return kept


def make_caption(meta: SvgMetadata, category: str = "") -> str:
    """`"<title>. <description>. <keyword>, <keyword>, ..."` from cleaned metadata, at most MAX_CAPTION_CHARS.

    Cleaning drops collection names used as titles ("Part of the Flat Icon Collection ..."), titles
    that are file names ("jigsaw_red_10"), descriptions that are URLs or e-mail addresses, and
    keywords that are noise ("hash", hex ids, theme names, the author) or repeat the title.
    Keywords are dropped from the end until the caption fits. With nothing left, the category
    path ("signs and symbols, flags") is the caption; "" when there is none (or it is "unsorted").
    """
    title = _clean_title(meta.title)
    description = _clean_description(meta.description, title)
    keywords = _clean_keywords(meta.keywords, f"{title} {description}", meta.creator)
    parts = [p for p in (title, description) if p]
    while True:
        caption = _sentences(parts + ([", ".join(keywords)] if keywords else []))
        if len(caption) <= MAX_CAPTION_CHARS or not keywords:
            break
        keywords.pop()
    if len(caption) > MAX_CAPTION_CHARS:
        caption = caption[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(" ,.;:")
    if not caption and category and category.split("/")[0] not in EXCLUDED_CATEGORIES:
        caption = ", ".join(part.replace("_", " ").replace("-", " ") for part in category.split("/"))
    return caption


def with_category(caption: str, category: str) -> str:
    """Prefix the package's category path, a piece of metadata every image has: "clip art of animals,
    mammals. Armadillo. animal". Titles and keywords rarely name the category, so without it the text
    tower never learns the benchmark's class names (zero-shot stayed at chance in a trial run); first,
    so that truncation to a short context never cuts it off.
    """
    parts = [p for p in category.split("/") if p] if category else []
    if not parts or parts[0] in EXCLUDED_CATEGORIES:
        return caption
    readable = [p.replace("_", " ").replace("-", " ") for p in parts]
    prefix = "clip art of " + ", ".join([_class_name(parts[0])] + readable[1:])
    # make_caption falls back to the bare category path when an image has no other metadata.
    if not caption or caption == ", ".join(readable):
        return prefix
    full = _sentences([prefix, caption])
    return full if len(full) <= MAX_CAPTION_CHARS else full[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(" ,.;:")


def caption_variants(caption: str, parts: dict[str, Any], category: str, key: str, n: int = N_CAPTION_VARIANTS) -> list[str]:
    """`n` phrasings of one drawing's metadata for training, the full caption first, deterministic per `key`.

    The others mix the category (phrased several ways, with or without its sub-directories) with the
    title, the description or a shuffled subset of the keywords, so that a model learns the category
    names and the words apart from one fixed sentence, and identical captions (the 1,125 "gramastar"
    stars) stop being identical strings in a batch.
    """
    rng = random.Random(hashlib.sha1(f"variants:{key}".encode("utf-8")).hexdigest())
    path = [p for p in category.split("/") if p] if category else []
    named = bool(path) and path[0] not in EXCLUDED_CATEGORIES
    readable = [p.replace("_", " ").replace("-", " ") for p in path]
    variants = [caption]
    for _ in range(8 * n):
        if len(variants) == n:
            break
        pieces: list[str] = []
        if named:
            names = [_class_name(path[0])] + (readable[1:] if rng.random() < 0.5 else [])
            pieces.append(rng.choice(CATEGORY_PHRASES).format(", ".join(names)))
        words = [w for w in (parts.get("title"), parts.get("description")) if w and rng.random() < 0.6]
        keywords = list(parts.get("keywords") or [])
        rng.shuffle(keywords)
        keywords = keywords[: rng.randint(0, len(keywords))]
        pieces += words + ([", ".join(keywords)] if keywords else [])
        if not named:
            pieces = pieces or [caption]
        if len(pieces) > 1 and rng.random() < 0.3:  # the category last, sometimes
            pieces = pieces[1:] + pieces[:1]
        text = _sentences(pieces)[:MAX_CAPTION_CHARS]
        if text and text not in variants:
            variants.append(text)
    return variants


def _sentences(parts: Sequence[str]) -> str:
    # "Mhooo!" + "mammal, cow" -> "Mhooo! mammal, cow", not "Mhooo!. mammal, cow".
    out = ""
    for part in parts:
        out += part if not out else (" " if out[-1] in ".!?" else ". ") + part
    return out


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


def _class_name(category: str) -> str:
    return CLASS_NAMES.get(category, category.replace("_", " ").replace("-", " "))


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
    title = _clean_title(meta.title)
    description = _clean_description(meta.description, title)
    parts = {"title": title, "description": description,
             "keywords": _clean_keywords(meta.keywords, f"{title} {description}", meta.creator)}
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
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
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

    classnames = [_class_name(c) for c in categories]
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
