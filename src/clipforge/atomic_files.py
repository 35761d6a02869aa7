"""Atomic file writes: a reader (or a re-run after a kill) sees the old file or the new one, never half of one.

The bytes go to a temporary file beside the target (same file system, so `os.replace` is atomic),
are flushed and fsynced, renamed over the target, and the folder is fsynced so the rename itself
survives a power cut.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

PathLike = Union[str, os.PathLike]


def fsync_dir(directory: PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object], *, tmp: Optional[PathLike] = None) -> Path:
    """Call `write(f)` on a temporary file (default `.NAME.tmpPID` beside `path`), then move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp_path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, *, tmp: Optional[PathLike] = None) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), tmp=tmp)
