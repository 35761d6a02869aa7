"""What `embed` reads: a SOURCE string -> a deterministic list of items (image and/or caption).

SOURCE kinds, decided in this order:
* a directory: every image file below it (recursive), sorted by relative POSIX path;
* `*.tar`, or a brace/glob pattern of tar files (`shards-{0000..0099}.tar`): WebDataset shards,
  read with the standard library's `tarfile`. Members are grouped into samples by key (the member
  name up to the first dot of its base name); a sample's image is its jpg/jpeg/png/webp member,
  its caption its txt member;
* `*.csv` / `*.tsv` / `*.jsonl`: one item per row, image path in a `path`/`image`/`filepath`
  column and/or caption in a `caption`/`text` column (names matched case-insensitively);
* any other file: a list of image paths, one per line (blank lines skipped).
Relative paths in list/CSV/JSONL files are resolved against the folder of that file, so a data
set and its list can move together. Item paths are absolute, so a manifest does not depend on the
working directory.

An item inside a tar shard has the path `"<shard path>::<member name>"`; `read_image_bytes` and
`materialize_images` read such paths as well as plain files.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

__all__ = [
    "SourceItem",
    "read_source",
    "source_kind",
    "items_digest",
    "expand_braces",
    "read_image_bytes",
    "materialize_images",
    "IMAGE_EXTENSIONS",
    "TAR_SEPARATOR",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# WebDataset image members we accept, in order of preference when a sample has several.
TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TAR_CAPTION_EXTENSIONS = ("txt",)
TAR_SEPARATOR = "::"

PATH_COLUMNS = ("path", "image", "filepath")
CAPTION_COLUMNS = ("caption", "text")


@dataclass(frozen=True)
class SourceItem:
    """One unit of work: an image (a file path or a tar member) and/or a caption."""

    path: Optional[str] = None
    caption: Optional[str] = None
    # For tar members: where the bytes are, so no tar index is rebuilt to read them.
    tar_offset: Optional[int] = None
    tar_size: Optional[int] = None
    # Why the item has neither image nor caption (a WebDataset sample with only e.g. .json).
    problem: Optional[str] = None


def source_kind(source: str) -> str:
    """"folder", "webdataset", "table" (csv/tsv/jsonl) or "list"."""
    if os.path.isdir(source):
        return "folder"
    lower = source.lower()
    if lower.endswith(".tar") or re.search(r"\{[^}]*\}", source) and ".tar" in lower:
        return "webdataset"
    if lower.endswith((".csv", ".tsv", ".jsonl")):
        return "table"
    return "list"


def read_source(source: str) -> list[SourceItem]:
    """All items of SOURCE, in a deterministic order (see the module docstring)."""
    source = os.fspath(source)
    kind = source_kind(source)
    if kind == "folder":
        return _read_folder(source)
    if kind == "webdataset":
        return _read_webdataset(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"source {source!r} is neither a folder nor a file (nor a .tar pattern)")
    if kind == "table":
        return _read_jsonl(source) if source.lower().endswith(".jsonl") else _read_csv(source)
    return _read_list(source)


def items_digest(items: Sequence[SourceItem]) -> str:
    """A hash of the item list: a resumed run must see the very same items in the same order."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.path, item.caption], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


# ---- folders and lists -------------------------------------------------------------------------


def _read_folder(folder: str) -> list[SourceItem]:
    root = os.path.abspath(folder)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # skip .git, .cache, ...
        for name in filenames:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    # Sorted by relative POSIX path (not os.walk order, which depends on the file system).
    return [SourceItem(path=os.path.join(root, rel)) for rel in sorted(found)]


def _resolve(path: str, base: str) -> str:
    path = os.path.expanduser(path.strip())
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(base, path))


def _read_list(file: str) -> list[SourceItem]:
    base = os.path.dirname(os.path.abspath(file))
    with open(file, encoding="utf-8") as f:
        return [SourceItem(path=_resolve(line.rstrip("\r\n"), base)) for line in f if line.strip()]


def _pick_column(names: Sequence[str], wanted: Sequence[str]) -> Optional[str]:
    lower = {n.strip().lower(): n for n in names}
    return next((lower[w] for w in wanted if w in lower), None)


def _table_item(row: dict, path_col: Optional[str], caption_col: Optional[str], base: str) -> SourceItem:
    raw_path = row.get(path_col) if path_col else None
    caption = row.get(caption_col) if caption_col else None
    path = _resolve(str(raw_path), base) if raw_path not in (None, "") else None
    caption = None if caption is None or caption == "" else str(caption)
    problem = None if path or caption is not None else "row has neither an image path nor a caption"
    return SourceItem(path=path, caption=caption, problem=problem)


def _columns_error(file: str, names: Sequence[str]) -> ValueError:
    return ValueError(
        f"{file}: found columns {list(names)}; need an image column ({'/'.join(PATH_COLUMNS)}) "
        f"and/or a caption column ({'/'.join(CAPTION_COLUMNS)})"
    )


def _read_csv(file: str) -> list[SourceItem]:
    base = os.path.dirname(os.path.abspath(file))
    delimiter = "\t" if file.lower().endswith(".tsv") else ","
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        names = reader.fieldnames or []
        path_col, caption_col = _pick_column(names, PATH_COLUMNS), _pick_column(names, CAPTION_COLUMNS)
        if path_col is None and caption_col is None:
            raise _columns_error(file, names)
        return [_table_item(row, path_col, caption_col, base) for row in reader]


def _read_jsonl(file: str) -> list[SourceItem]:
    base = os.path.dirname(os.path.abspath(file))
    items: list[SourceItem] = []
    seen_columns: set[str] = set()
    with open(file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}:{number}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{file}:{number}: expected a JSON object, got {type(row).__name__}")
            seen_columns.update(row)
            items.append(_table_item(row, _pick_column(list(row), PATH_COLUMNS), _pick_column(list(row), CAPTION_COLUMNS), base))
    if items and _pick_column(sorted(seen_columns), PATH_COLUMNS + CAPTION_COLUMNS) is None:
        raise _columns_error(file, sorted(seen_columns))
    return items


# ---- WebDataset tar shards ---------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..009}` numeric ranges (zero padding kept) and `{a,b}` lists, as WebDataset does."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        options = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def _tar_files(source: str) -> list[str]:
    files: list[str] = []
    for pattern in expand_braces(source):
        if glob.has_magic(pattern):
            files.extend(sorted(glob.glob(pattern)))
        else:
            files.append(pattern)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"WebDataset shard(s) not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if not files:
        raise FileNotFoundError(f"no tar files match {source!r}")
    return [os.path.abspath(f) for f in files]


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: key = dirname + base name up to its first dot; the rest is the extension."""
    directory, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), ext.lower() if dot else ""


def _read_webdataset(source: str) -> list[SourceItem]:
    items: list[SourceItem] = []
    for tar_path in _tar_files(source):
        try:
            items.extend(_read_tar(tar_path))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"cannot read WebDataset shard {tar_path}: {type(e).__name__}: {e}") from None
    return items


def _read_tar(tar_path: str) -> Iterator[SourceItem]:
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}  # insertion order = order in the tar
    with tarfile.open(tar_path, "r:*") as tar:
        for member in tar:
            if not member.isfile() or os.path.basename(member.name).startswith("."):
                continue
            key, ext = _split_key(member.name)
            samples.setdefault(key, {}).setdefault(ext, member)
        for key, members in samples.items():
            image = next((members[e] for e in TAR_IMAGE_EXTENSIONS if e in members), None)
            caption = None
            caption_member = next((members[e] for e in TAR_CAPTION_EXTENSIONS if e in members), None)
            if caption_member is not None:
                data = tar.extractfile(caption_member)
                caption = data.read().decode("utf-8", errors="replace").strip() if data else None
            if image is None and caption is None:
                yield SourceItem(
                    path=f"{tar_path}{TAR_SEPARATOR}{key}",
                    problem=f"sample has no image ({'/'.join(TAR_IMAGE_EXTENSIONS)}) and no caption (txt); "
                    f"members: {', '.join(sorted(members))}",
                )
            elif image is None:
                yield SourceItem(path=None, caption=caption)
            else:
                yield SourceItem(
                    path=f"{tar_path}{TAR_SEPARATOR}{image.name}",
                    caption=caption,
                    tar_offset=image.offset_data,
                    tar_size=image.size,
                )


def read_image_bytes(item_or_path: "SourceItem | str") -> bytes:
    """The bytes of an item's image: a plain file, or a tar member (`shard.tar::member`)."""
    item = item_or_path if isinstance(item_or_path, SourceItem) else SourceItem(path=item_or_path)
    if item.path is None:
        raise ValueError("item has no image")
    if TAR_SEPARATOR not in item.path or os.path.exists(item.path):
        with open(item.path, "rb") as f:
            return f.read()
    tar_path, member = item.path.split(TAR_SEPARATOR, 1)
    if item.tar_offset is not None and item.tar_size is not None:
        with open(tar_path, "rb") as f:
            f.seek(item.tar_offset)
            return f.read(item.tar_size)
    with tarfile.open(tar_path, "r:*") as tar:
        data = tar.extractfile(member)
        if data is None:
            raise FileNotFoundError(f"{member!r} is not a file in {tar_path}")
        return data.read()


def materialize_images(items: Sequence[SourceItem], scratch_dir: str) -> list[str]:
    """Local file paths for the items' images, extracting tar members into `scratch_dir`.

    Why extract: `iter_image_batches` decodes files in worker processes and classifies failures
    (empty, truncated, ...) from the file; a member written out byte for byte fails the same way.
    Plain files are returned as they are. Items without an image get "" (callers skip them).
    """
    paths: list[str] = []
    for n, item in zip(itertools.count(), items):
        if item.path is None or item.problem is not None:
            paths.append("")
        elif item.tar_offset is None:
            paths.append(item.path)
        else:
            os.makedirs(scratch_dir, exist_ok=True)
            ext = os.path.splitext(item.path)[1] or ".bin"
            local = os.path.join(scratch_dir, f"{n:06d}{ext}")
            Path(local).write_bytes(read_image_bytes(item))
            paths.append(local)
    return paths
