"""WebDataset tar shards: shard lists, sample grouping, random access and streaming.

WebDataset's convention: a sample is the run of consecutive members sharing a key, the member
path up to the first dot of its base name ("a/0001.jpg" + "a/0001.txt" -> key "a/0001", members
"jpg" and "txt"). A sample's image is its first member in `IMAGE_EXTENSIONS` order, its caption its
"txt" member.

Two access patterns, one set of rules:
* `index_tar` lists a shard's samples with the byte range of each image member (uncompressed
  tars), so `embed` can cut work into chunks, resume, and decode a member straight from the shard;
* `iter_tar_samples` streams (key, {extension: bytes}) for training over shards too big to index.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

from clipforge.errors import MissingFileError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CAPTION_EXTENSIONS",
    "expand_braces",
    "expand_shards",
    "split_key",
    "TarSample",
    "index_tar",
    "iter_tar_samples",
    "count_samples",
    "ShardError",
]

# Image members, in order of preference when a sample has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
CAPTION_EXTENSIONS = ("txt",)
COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class ShardError(ValueError):
    """A shard that cannot be read (from the start, or after some samples)."""


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..009}` numeric ranges (zero padding kept) and `{a,b}` lists, as WebDataset does."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end():]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        options = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def expand_shards(spec: Union[str, Sequence[str]], *, must_exist: bool = True) -> list[str]:
    """Shard files from "a/{000..009}.tar", a folder (its *.tar files), a glob, or several of those
    joined with "::" (or given as a list). Missing files are an error unless `must_exist` is False."""
    parts = spec.split("::") if isinstance(spec, str) else list(spec)
    shards: list[str] = []
    for part in parts:
        for pattern in expand_braces(part.strip()):
            if os.path.isdir(pattern):
                shards.extend(sorted(glob.glob(os.path.join(glob.escape(pattern), "*.tar"))))
            elif glob.has_magic(pattern):
                shards.extend(sorted(glob.glob(pattern)))
            else:
                shards.append(pattern)
    if must_exist:
        missing = [s for s in shards if not os.path.isfile(s)]
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise MissingFileError(f"WebDataset shard(s) not found: {', '.join(missing[:5])}{more}")
        if not shards:
            raise MissingFileError(f"no tar files match {spec!r}")
    return shards


def is_compressed(shard: str) -> bool:
    return shard.lower().endswith(COMPRESSED_SUFFIXES)


def split_key(name: str) -> Optional[tuple[str, str]]:
    """(key, extension) of a member name; None for names that are no sample member (no dot, hidden)."""
    directory, base = posixpath.split(name)
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return posixpath.join(directory, stem), ext.lower()


@dataclass(frozen=True)
class TarSample:
    """One sample of an indexed shard: its key, caption, and where its image bytes are."""

    shard: str
    key: str
    image_member: Optional[str] = None  # the member name of the image, None when the sample has none
    image_offset: Optional[int] = None  # byte offset of the image data in the shard (uncompressed tars)
    image_size: Optional[int] = None
    image_data: Optional[bytes] = None  # compressed tars: the bytes themselves (no offsets exist)
    caption: Optional[str] = None
    members: tuple[str, ...] = ()  # the extensions the sample has


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    data = handle.read() if handle is not None else b""
    if len(data) != member.size:  # tarfile returns short data from a truncated file without a word
        raise tarfile.ReadError(f"member {member.name} ends after {len(data)} of its {member.size} bytes")
    return data


def _check_end(tar: tarfile.TarFile, shard: str) -> None:
    """An uncompressed tar ends with two zero blocks after its last member; a download cut off at a
    member boundary lacks them, and tarfile then just stops, as if the shard were whole."""
    if not is_compressed(shard) and os.path.getsize(shard) < tar.offset + 2 * tarfile.BLOCKSIZE:
        raise tarfile.ReadError("the file ends without the end-of-archive marker (cut off?)")


def index_tar(shard: str) -> tuple[list[TarSample], Optional[str]]:
    """Every sample of `shard`, in order, and None — or the samples before the point where the
    shard stops being readable and a sentence saying what went wrong (a truncated download)."""
    samples: list[TarSample] = []
    compressed = is_compressed(shard)
    pending: dict[str, tuple[str, tarfile.TarInfo, Optional[bytes]]] = {}
    key: Optional[str] = None
    problem: Optional[str] = None

    def flush() -> None:
        if key is None:
            return
        image = next((pending[e] for e in IMAGE_EXTENSIONS if e in pending), None)
        caption_member = next((pending[e] for e in CAPTION_EXTENSIONS if e in pending), None)
        caption = None
        if caption_member is not None and caption_member[2] is not None:
            caption = caption_member[2].decode("utf-8", errors="replace").strip() or None
        samples.append(TarSample(
            shard=shard, key=key,
            image_member=image[0] if image else None,
            image_offset=None if image is None or compressed else image[1].offset_data,
            image_size=None if image is None else image[1].size,
            image_data=image[2] if image is not None and compressed else None,
            caption=caption, members=tuple(sorted(pending)),
        ))

    try:
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                split = split_key(member.name)
                if split is None:
                    continue
                if split[0] != key:
                    flush()
                    key, pending = split[0], {}
                if split[1] in pending:
                    continue
                wanted = split[1] in CAPTION_EXTENSIONS or (compressed and split[1] in IMAGE_EXTENSIONS)
                data = _read_member(tar, member) if wanted else None
                pending[split[1]] = (member.name, member, data)
            flush()  # the last sample is whole even when the archive's end marker is missing
            key = None
            _check_end(tar, shard)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        problem = f"unreadable after {len(samples)} samples: {type(e).__name__}: {e}"
    return samples, problem


RawSample = tuple[str, dict[str, bytes]]


def iter_tar_samples(shard: str) -> Iterator[Union[RawSample, ShardError]]:
    """Stream (f"{shard}:{key}", {extension: bytes}) per sample. A shard that stops being readable
    yields the samples before that point, then one `ShardError` saying how many were read; the
    sample being read when it broke is not yielded (its bytes are incomplete)."""
    key: Optional[str] = None
    files: dict[str, bytes] = {}
    produced = 0
    end_problem: Optional[BaseException] = None
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                split = split_key(member.name)
                if split is None:
                    continue
                if split[0] != key:
                    if key is not None:
                        produced += 1
                        yield f"{shard}:{key}", files
                    key, files = split[0], {}
                files[split[1]] = _read_member(tar, member)
            try:
                _check_end(tar, shard)
            except tarfile.ReadError as e:
                end_problem = e  # every member read was whole: yield the last sample first
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        yield ShardError(f"{shard}: unreadable after {produced} samples ({type(e).__name__}: {e})")
        return
    if key is not None:
        produced += 1
        yield f"{shard}:{key}", files
    if end_problem is not None:
        yield ShardError(f"{shard}: unreadable after {produced} samples ({type(end_problem).__name__}: {end_problem})")


def count_samples(shards: Sequence[str]) -> tuple[int, list[str]]:
    """(samples in the shards, from the tar headers; problems: one sentence per unreadable shard)."""
    total, problems = 0, []
    for shard in shards:
        keys: set[str] = set()
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    split = split_key(member.name) if member.isfile() else None
                    if split is not None:
                        keys.add(split[0])
                _check_end(tar, shard)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            problems.append(f"{shard}: unreadable after {len(keys)} samples ({type(e).__name__}: {e})")
        total += len(keys)
    return total, problems
