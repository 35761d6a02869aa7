"""Bounds on what a checkpoint file may make clipforge do, checked before the work is done.

A checkpoint is untrusted input. Every size a file declares (a zip member's uncompressed size, a
storage's element count, a safetensors header's length and offsets, a config's layer count) is
compared with what the file can actually hold and with the limits below *before* anything of that
size is read, inflated, allocated or enumerated. Each refusal is a `CheckpointError` naming the
file and the reason. See docs/security.md for the catalogue of hostile files this guards against.

The limits are far above any real CLIP checkpoint (the largest, ViT-bigG, has ~1,100 tensors, a
~250 KB pickle and configs of a few KB) and far below what would hurt a machine.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import CheckpointError

# JSON files next to the weights (config.json, open_clip_config.json, *.index.json,
# preprocessor_config.json) and JSON stored in safetensors metadata.
MAX_JSON_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 64
# safetensors' own limit on its JSON header.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
# Tensors in one file (a CLIP has at most ~2,000; sharded transformers files far fewer per shard).
MAX_TENSORS = 200_000
# A tokenizer model file travelling with the weights (SentencePiece: SigLIP's 0.8 MB, Gemma's 4.2 MB).
MAX_TOKENIZER_MODEL_BYTES = 64 * 2**20
MAX_TENSOR_DIMS = 32
# A torch archive's pickle holds only tensor descriptions: a few hundred KB for the largest CLIP.
MAX_PICKLE_BYTES = 256 * 2**20
# TorchScript archives: the code/ files read (as text) for parameter names, and the module tree.
MAX_SCRIPT_CODE_BYTES = 64 * 2**20
MAX_SCRIPT_MODULES = 100_000
MAX_SCRIPT_DEPTH = 200
# Zip members: torch.save stores them uncompressed. A compressed member may expand at most this
# much (deflate can reach ~1000:1 on zeros, i.e. a "deflate bomb"), and everything read from an
# archive together at most ARCHIVE_EXPANSION times the archive's size (overlapping-member bombs).
MAX_MEMBER_RATIO = 100
SMALL_MEMBER_BYTES = 2**20  # below this a member may have any ratio
ARCHIVE_EXPANSION = 2
ARCHIVE_SLACK_BYTES = 32 * 2**20


def path_kind(path: Path) -> str:
    """"dir" or "file" for a directory or regular file (symlinks followed); else a named refusal.

    `Path.exists()` says False both for a missing path and for a symlink loop, and `is_file()`
    is False for a FIFO (reading one would block forever): say which it is.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: {_stat_problem(path, exc)}") from None
    except ValueError as exc:  # an embedded NUL byte
        raise CheckpointError(f"{path!r}: not a usable path ({exc})") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise CheckpointError(f"{path}: not a regular file or directory ({_file_type(st.st_mode)}); refused")


def optional_file(path: Path) -> bool:
    """True for a regular file, False when nothing is at `path`; a named refusal for anything else.

    For the files a checkpoint directory may hold: a symlink loop, a dangling link or a FIFO
    named config.json is an error, not "absent".
    """
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None
    if path_kind(path) != "file":
        raise CheckpointError(f"{path}: a directory where a file was expected")
    return True


def local_path_exists(path: Path) -> bool:
    """True when something is at `path`, including a dangling symlink or a symlink loop.

    `loading.load` uses this to decide that a name is a local path, so that a broken link is
    reported as one instead of "not a file, an architecture or a hub id".
    """
    try:
        os.stat(path)
        return True
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return True
    except ValueError:
        return False
    return os.path.lexists(path)


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link, or a directory on its way, points back to itself)"
    if os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a broken symbolic link (to {target!r}, which does not exist)"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    return f"cannot be read ({exc.strerror or exc})"


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "an unusual file type"


def parse_json(data: bytes | str, source: str) -> Any:
    """Parse JSON with a size and a nesting-depth limit; every failure is a CheckpointError.

    NaN / Infinity literals (not JSON, but accepted by Python's parser) are refused too.
    """
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(f"{source}: {len(data):,} bytes of JSON, more than the {MAX_JSON_BYTES:,} allowed")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{source}: not UTF-8 JSON ({exc})") from None
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise CheckpointError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels; refused") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise CheckpointError(f"{source}: not valid JSON ({exc})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels; refused")
    return value


def read_json(path: Path, what: str = "JSON file") -> Any:
    """`parse_json` of a regular file, its size checked before it is read."""
    if path_kind(path) != "file":
        raise CheckpointError(f"{path}: a directory where a {what} was expected")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: a {what} of {size:,} bytes, more than the {MAX_JSON_BYTES:,} allowed")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None
    return parse_json(data, str(path))


def _refuse_constant(name: str) -> Any:
    raise CheckpointError(f"the non-JSON constant {name} is not allowed")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest
