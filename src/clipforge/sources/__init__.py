"""Reading image–caption collections: one reader for embed, index, classify, evaluate and train.

A SOURCE is one of (decided in this order):
* a folder: every image file below it (recursive, hidden entries skipped), sorted by relative
  POSIX path — unless it holds `.tar` files and no images, then it is a folder of WebDataset shards;
* WebDataset shards: `*.tar` (`.tar.gz`, ...), a brace or glob pattern of them
  (`shards-{0000..0099}.tar`), or several joined by "::" (see `sources.webdataset`);
* a table: `*.csv`, `*.tsv`, `*.jsonl` with the one column rule of `sources.tables`;
* an image file (by extension): that image;
* a glob pattern (`photos/*.jpg`): the matching image files, sorted;
* any other file: a list of image paths, one per line (blank lines skipped).
Relative paths in lists and tables resolve against the folder of that file. Item paths are
absolute, so a manifest does not depend on the working directory.

Nothing here decodes images; `SourceItem.image_source()` says where the bytes are and
`clipforge.image.load_image` decodes them (tar members straight from the shard, no scratch files).
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Optional, Sequence

from clipforge.errors import ClipforgeError
from clipforge.sources.items import TAR_SEPARATOR, SourceItem, items_digest, json_dumps
from clipforge.sources.tables import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    TableError,
    is_table,
    read_table,
)
from clipforge.sources.webdataset import (
    expand_braces,
    expand_shards,
    index_tar,
    is_compressed,
)

if TYPE_CHECKING:
    from clipforge.image.files import ImageSource

__all__ = [
    "SourceItem",
    "SourceError",
    "SourceNotFoundError",
    "read_source",
    "read_sources",
    "image_source_of",
    "source_kind",
    "items_digest",
    "json_dumps",
    "read_table",
    "expand_braces",
    "expand_shards",
    "IMAGE_SUFFIXES",
    "IMAGE_COLUMNS",
    "CAPTION_COLUMNS",
    "TAR_SEPARATOR",
    "TableError",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class SourceError(ClipforgeError, ValueError):
    """A SOURCE that gives nothing to work on: an empty folder, a pattern that matches nothing."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A SOURCE (file, folder or shard) that does not exist."""


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _folder_has_shards(folder: str) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n.endswith(".tar") for n in names) and not any(_is_image_name(n) for n in names)


def source_kind(source: str) -> str:
    """"folder", "webdataset", "table", "image", "glob" or "list" (see the module docstring)."""
    if os.path.isdir(source):
        return "webdataset" if _folder_has_shards(source) else "folder"
    lower = source.lower()
    first = source.split("::")[0]
    if "::" in source or first.lower().endswith(_TAR_SUFFIXES) or ("{" in first and ".tar" in lower):
        return "webdataset"
    if is_table(source):
        return "table"
    if _is_image_name(source) and not glob.has_magic(source):
        return "image"
    if glob.has_magic(source) and not os.path.exists(source):
        return "glob"
    return "list"


def read_source(
    source: str, *, caption_column: Optional[str] = None, image_root: Optional[str] = None
) -> list[SourceItem]:
    """All items of SOURCE, in a deterministic order (see the module docstring).

    Unusable entries (a malformed table row, an unreadable part of a shard) are items with
    `problem` set, so a batch job reports and skips them and loses nothing else. A SOURCE that
    does not exist or names no file at all raises `SourceError`.
    """
    source = os.fspath(source)
    kind = source_kind(source)
    if kind == "folder":
        return _read_folder(source)
    if kind == "webdataset":
        return _read_webdataset(source)
    if kind == "glob":
        matches = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceNotFoundError(f"no files match {source!r}")
        return [SourceItem(path=os.path.abspath(p)) for p in matches]
    if not os.path.exists(source):
        raise SourceNotFoundError(f"{source!r}: no such file or folder")
    if not os.path.isfile(source):
        raise SourceError(f"{source!r}: not a regular file or a folder")
    if kind == "image":
        return [SourceItem(path=os.path.abspath(source))]
    if kind == "table":
        return read_table(source, caption_column=caption_column, image_root=image_root)
    return _read_list(source, image_root)


def read_sources(sources: Sequence[str]) -> list[SourceItem]:
    """Items of several SOURCEs in turn (what commands taking `IMAGE...` arguments read); an item
    named twice is kept once. Raises `SourceError` when there is nothing at all to do."""
    if not sources:
        raise SourceError("no images given")
    items: list[SourceItem] = []
    seen: set[str] = set()
    for source in sources:
        for item in read_source(source):
            if item.path is not None and item.path in seen:
                continue
            if item.path is not None:
                seen.add(item.path)
            items.append(item)
    if not any(item.path is not None for item in items):
        raise SourceError(f"no images found in {', '.join(map(repr, sources))}")
    return items


def image_source_of(path: str) -> "ImageSource":
    """What `load_image` takes for a path as manifests and indexes record it: the file itself, or for
    "shard.tar::member" the member's bytes in the shard (found from the shard's headers).
    Raises `ImageLoadError` when the shard or the member cannot be found."""
    import tarfile

    from clipforge.image.files import ImageLoadError, ImageRef

    if TAR_SEPARATOR not in path or os.path.exists(path):
        return path
    shard, member = path.split(TAR_SEPARATOR, 1)
    try:
        with tarfile.open(shard, "r:*") as tar:
            info = tar.getmember(member)
            if not is_compressed(shard):
                return ImageRef(path, path=shard, offset=info.offset_data, size=info.size)
            handle = tar.extractfile(info)
            return ImageRef(path, data=handle.read() if handle is not None else b"")
    except KeyError:
        raise ImageLoadError(path, f"no member {member!r} in {shard}", "missing") from None
    except (OSError, tarfile.TarError, EOFError) as e:
        raise ImageLoadError(path, f"cannot read the shard: {type(e).__name__}: {e}", "unreadable") from None


def _read_folder(folder: str) -> list[SourceItem]:
    root = os.path.abspath(folder)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # skip .git, .cache, ...
        for name in filenames:
            if _is_image_name(name) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    # Sorted by relative POSIX path (not os.walk order, which depends on the file system).
    return [SourceItem(path=os.path.join(root, rel)) for rel in sorted(found)]


def _read_list(file: str, image_root: Optional[str]) -> list[SourceItem]:
    base = os.path.abspath(image_root) if image_root else os.path.dirname(os.path.abspath(file))
    with open(file, "rb") as f:
        raw = f.read()
    items = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = os.fsdecode(line)  # a file name in another encoding is still a file name
        path = os.path.expanduser(text.strip())
        items.append(SourceItem(path=os.path.normpath(os.path.join(base, path)), where=where))
    return items


def _read_webdataset(source: str) -> list[SourceItem]:
    try:
        shards = expand_shards(source)
    except FileNotFoundError as e:
        raise SourceNotFoundError(str(e)) from None
    items: list[SourceItem] = []
    for shard in shards:
        shard = os.path.abspath(shard)
        samples, problem = index_tar(shard)
        for s in samples:
            if s.image_member is None and s.caption is None:
                items.append(SourceItem(
                    path=f"{shard}{TAR_SEPARATOR}{s.key}",
                    problem=f"sample has no image and no caption (txt); members: {', '.join(s.members)}",
                    problem_code="no_image",
                ))
            elif s.image_member is None:
                items.append(SourceItem(caption=s.caption, where=f"{shard}{TAR_SEPARATOR}{s.key}"))
            else:
                items.append(SourceItem(
                    path=f"{shard}{TAR_SEPARATOR}{s.image_member}", caption=s.caption,
                    tar_offset=s.image_offset, tar_size=s.image_size, image_data=s.image_data,
                ))
        if problem is not None:
            items.append(SourceItem(path=shard, problem=f"shard {problem}", problem_code="bad_shard"))
    return items
