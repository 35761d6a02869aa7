"""The on-disk layout of an embedding run (see `clipforge.tasks.embedding` for the whole story):
file names, the manifest as the commit record, reading finished output back, and bringing an
interrupted run's files back to its last complete chunk.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from clipforge.atomic_files import atomic_write, fsync_dir
from clipforge.encoding import model_difference
from clipforge.errors import ClipforgeError, InvalidInputError, MissingFileError
from clipforge.sources import json_dumps

__all__ = ["read_manifest", "read_embeddings", "read_summary", "IncompleteRunError", "CONFIG_FILE"]

CONFIG_FILE = "embed_config.json"
FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^(images|texts)-(\d+)\.npy(\.tmp)?$")
EXAMPLES_PER_CODE = 5

class IncompleteRunError(ClipforgeError, RuntimeError):
    """The output directory does not (yet) hold every item: the run was interrupted or a rank is missing."""


# ---- small file helpers ------------------------------------------------------------------------


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    # "NAME.tmp" (not the default hidden name): resume recognises and removes such leftovers.
    atomic_write(path, write, tmp=path.with_name(path.name + ".tmp"))


def write_json(path: Path, data: Any) -> None:
    text = json_dumps(data, indent=2) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def manifest_name(rank: int, world_size: int) -> str:
    return "manifest.jsonl" if world_size == 1 else f"manifest-rank{rank}.jsonl"


def summary_name(rank: int, world_size: int) -> str:
    return "summary.json" if world_size == 1 else f"summary-rank{rank}.json"


def shard_name(kind: str, chunk: int) -> str:
    return f"{kind}-{chunk:05d}.npy"


@dataclass
class RunShape:
    """The shape of a run, from embed_config.json: enough to tell complete chunks from partial ones."""

    n_items: int
    shard_size: int
    world_size: int

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_items / self.shard_size)

    def chunk_range(self, chunk: int) -> range:
        return range(chunk * self.shard_size, min((chunk + 1) * self.shard_size, self.n_items))

    def chunks_of(self, rank: int) -> list[int]:
        return list(range(rank, self.n_chunks, self.world_size))


def read_manifest_lines(path: Path) -> list[dict]:
    """Parsed lines up to the first torn or invalid one."""
    if not path.exists():
        return []
    data = path.read_bytes()
    entries = []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn last line: the process died while appending
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            break
        entries.append(entry)
    return entries


def _shard_rows(out_dir: Path, name: str, cache: dict[str, int]) -> int:
    """Rows in a shard file (-1 when missing or unreadable); reads only the .npy header."""
    if name not in cache:
        try:
            cache[name] = int(np.load(out_dir / name, mmap_mode="r").shape[0])
        except (OSError, ValueError):
            cache[name] = -1
    return cache[name]


def _complete_prefix(out_dir: Path, run: RunShape, rank: int, entries: list[dict]) -> list[int]:
    """This rank's chunks that are fully recorded with their shards present, in order, up to the first gap."""
    by_chunk: dict[int, list[dict]] = {}
    for entry in entries:
        by_chunk.setdefault(entry["index"] // run.shard_size, []).append(entry)
    rows: dict[str, int] = {}
    done: list[int] = []
    for chunk in run.chunks_of(rank):
        chunk_entries = by_chunk.get(chunk, [])
        if [e["index"] for e in chunk_entries] != list(run.chunk_range(chunk)):
            break
        refs = Counter()
        for e in chunk_entries:
            for key in ("shard", "text_shard"):
                if key in e:
                    refs[e[key]] += 1
        # Every referenced shard exists and holds exactly the rows the manifest points at.
        if any(_shard_rows(out_dir, name, rows) != count for name, count in refs.items()):
            break
        done.append(chunk)
    return done


def load_run(out_dir: Path) -> tuple[dict, RunShape]:
    config_path = out_dir / CONFIG_FILE
    if not config_path.exists():
        raise MissingFileError(f"{out_dir} holds no embedding run ({CONFIG_FILE} is missing)")
    config = json.loads(config_path.read_text())
    return config, RunShape(config["items"], config["shard_size"], config["world_size"])


def read_manifest(out_dir: Union[str, Path], *, complete: bool = True) -> list[dict]:
    """Manifest entries of every rank, merged and sorted by item index.

    Only fully written chunks are returned (what a resumed run would keep). With `complete=True`
    an `IncompleteRunError` is raised unless every item of the source is recorded.
    """
    out = Path(out_dir)
    config, run = load_run(out)
    merged: list[dict] = []
    unfinished = []
    for rank in range(run.world_size):
        entries = read_manifest_lines(out / manifest_name(rank, run.world_size))
        done = set(_complete_prefix(out, run, rank, entries))
        if len(done) < len(run.chunks_of(rank)):
            unfinished.append(rank)
        merged.extend(e for e in entries if e["index"] // run.shard_size in done)
    merged.sort(key=lambda e: e["index"])
    if complete and unfinished:
        who = f" (unfinished ranks: {', '.join(map(str, unfinished))} of {run.world_size})" if run.world_size > 1 else ""
        raise IncompleteRunError(
            f"{out}: {len(merged)} of {run.n_items} items are recorded{who}; the run was interrupted. "
            "Run embed again with the same arguments to finish it."
        )
    return merged


def read_embeddings(
    out_dir: Union[str, Path], kind: str = "images", *, complete: bool = True
) -> tuple[list[str], np.ndarray]:
    """`(paths, vectors)` in item order: the image embeddings and the paths they came from.

    `kind="texts"` gives `(captions, vectors)` for the caption embeddings instead. Items that were
    skipped are left out (their reasons are in the manifest). Vectors keep the stored dtype.
    Works for single-process and multi-rank (`manifest-rank*.jsonl`) outputs alike.
    """
    if kind not in ("images", "texts"):
        raise InvalidInputError(f"kind must be 'images' or 'texts', got {kind!r}")
    out = Path(out_dir)
    shard_key, row_key, label_key = ("shard", "row", "path") if kind == "images" else ("text_shard", "text_row", "caption")
    entries = [e for e in read_manifest(out, complete=complete) if shard_key in e]
    labels = [e[label_key] for e in entries]
    config, _ = load_run(out)
    dim = config["model"]["config"]["embed_dim"]
    vectors = np.empty((len(entries), dim), dtype=np.dtype(config["dtype"]))
    shards: dict[str, np.ndarray] = {}
    # Entries are in item order and shards hold rows in item order: copy shard by shard.
    positions: dict[str, tuple[list[int], list[int]]] = {}
    for i, e in enumerate(entries):
        dest, rows = positions.setdefault(e[shard_key], ([], []))
        dest.append(i)
        rows.append(e[row_key])
    for name, (dest, rows) in positions.items():
        shards[name] = np.load(out / name, mmap_mode="r")
        vectors[dest] = shards[name][rows]
    return labels, vectors


def read_summary(out_dir: Union[str, Path]) -> dict[str, Any]:
    """The summary of a finished run (all ranks merged)."""
    out = Path(out_dir)
    _, run = load_run(out)
    parts = [json.loads((out / summary_name(r, run.world_size)).read_text()) for r in range(run.world_size)
             if (out / summary_name(r, run.world_size)).exists()]
    skipped: Counter = Counter()
    for part in parts:
        skipped.update(part["skipped"])
    return {
        "ranks_finished": len(parts),
        "world_size": run.world_size,
        "items": sum(p["items"] for p in parts),
        "images": sum(p["images"] for p in parts),
        "texts": sum(p["texts"] for p in parts),
        "skipped": dict(skipped),
    }


# ---- writing ---------------------------------------------------------------------------------------


def check_run_config(out: Path, wanted: dict, rank: int) -> None:
    """Write embed_config.json, or check that an existing one describes the same run."""
    path = out / CONFIG_FILE
    if path.exists():
        have = json.loads(path.read_text())
        problems = [
            f"{key}: {have.get(key)!r} then, {wanted[key]!r} now"
            for key in ("format", "items", "items_sha256", "shard_size", "dtype", "world_size")
            if have.get(key) != wanted[key]
        ]
        difference = model_difference(have.get("model", {}), wanted["model"])
        if difference:
            problems.append(f"model: {difference}")
        if problems:
            raise InvalidInputError(
                f"{out} already holds a different embedding run ({'; '.join(problems)}). "
                "Resume with the same source, model and arguments, or choose a new output directory."
            )
        return
    # Each rank writes the same content under its own temp name; the rename makes the race harmless.
    tmp = out / f"{CONFIG_FILE}.rank{rank}.tmp"
    tmp.write_text(json_dumps(wanted, indent=2) + "\n", encoding="utf-8")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(out)


def recover(out: Path, run: RunShape, rank: int) -> list[int]:
    """Bring this rank's files back to the last complete chunk; return the chunks already done."""
    manifest = out / manifest_name(rank, run.world_size)
    entries = read_manifest_lines(manifest)
    done = _complete_prefix(out, run, rank, entries)
    keep = set(done)
    kept_lines = b"".join(
        json_dumps(e).encode() + b"\n" for e in entries if e["index"] // run.shard_size in keep
    )
    if manifest.exists() and manifest.read_bytes() != kept_lines:
        # Drop torn lines and lines of partial chunks, atomically (a crash here leaves the old file).
        atomic_write_bytes(manifest, lambda f: f.write(kept_lines))
    for path in out.iterdir():
        match = _SHARD_RE.match(path.name)
        mine = match is not None and int(match.group(2)) % run.world_size == rank
        if mine and (match.group(3) or int(match.group(2)) not in keep):
            path.unlink()  # an orphan: a shard (or temp file) no manifest line vouches for
    return done


def commit_chunk(out: Path, manifest: Path, chunk: int, entries: list[dict],
                  images: Optional[np.ndarray], texts: Optional[np.ndarray]) -> None:
    """Shards first (temp file, fsync, rename), manifest lines last: the lines are the commit record."""
    for kind, array in (("images", images), ("texts", texts)):
        if array is not None:
            atomic_write_bytes(out / shard_name(kind, chunk), lambda f, a=array: np.save(f, a, allow_pickle=False))
    lines = "".join(json_dumps(e) + "\n" for e in entries).encode()
    new_file = not manifest.exists()
    with open(manifest, "ab") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())
    if new_file:
        fsync_dir(out)
