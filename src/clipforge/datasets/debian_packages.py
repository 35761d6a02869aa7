"""Debian packages as data sources: fetch a .deb with `apt-get download` into a cache, unpack it in
pure Python (ar + tar; `dpkg-deb` only for zstd), never writing outside the target folder.

Used by the OpenClipArt data set builder and by the tests' image fixtures (the same package, one cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Optional, Sequence, Union

from clipforge.errors import ClipforgeError

__all__ = ["SourceUnavailable", "fetch_debs", "extract_deb", "newest_deb"]

PathLike = Union[str, "os.PathLike[str]"]


class SourceUnavailable(ClipforgeError, RuntimeError):
    """Debian packages that could not be found, fetched or unpacked; the message says how to provide them."""


def fetch_debs(packages: Sequence[str], cache_dir: PathLike) -> dict[str, Path]:
    """`{package: .deb path}`: the newest `<package>_*.deb` already in `cache_dir`, else `apt-get download`.

    Downloads go to a private temporary folder first, so concurrent callers never see half a file.
    On a machine without package lists, root runs `apt-get update` once and retries.
    Raises SourceUnavailable (with apt's own message) when a package cannot be had.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    found = {p: newest_deb(cache, p) for p in packages}
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
            found[p] = newest_deb(cache, p)
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


def newest_deb(cache: Path, package: str) -> Optional[Path]:
    debs = sorted(cache.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
