"""Embedding a collection at scale: SOURCE -> normalized vectors in .npy shards + a JSONL manifest.

Output directory layout (one process):
    images-00000.npy      float32 (or float16) [rows, embed_dim], normalized image embeddings
    texts-00000.npy       the same for captions (CSV/JSONL/WebDataset sources with captions)
    manifest.jsonl        one JSON object per source item, in item order:
                          {"index", "path", "caption"?, "shard", "row"}  or  {..., "error": {"code", "message"}}
                          plus {"text_shard", "text_row"} for an item with a caption
    embed_config.json     what the run was (source digest, shard size, dtype, ranks, model fingerprint)
    summary.json          counts, skipped items by reason

Work is cut into chunks of `shard_size` consecutive items; chunk k writes `images-k.npy` /
`texts-k.npy` and then its manifest lines. Crash safety comes from that order: each shard is
written to a temp file, fsynced and atomically renamed, and only then are its manifest lines
appended (and fsynced). A chunk counts as done when all its manifest lines are present and their
shard files exist. On restart everything after the last done chunk is discarded (torn manifest
lines, shards without manifest lines, temp files) and the run continues from there. Batches never
cross chunk boundaries, so a resumed run computes exactly what an uninterrupted one would.

Several processes (torchrun: RANK / WORLD_SIZE) share the work: rank r takes chunks r, r + W,
r + 2W, ... Shard files keep the global chunk number (so they never collide and are the same
files a single process would write); each rank appends to its own `manifest-rank{r}.jsonl`
and writes `summary-rank{r}.json`. `read_manifest` / `read_embeddings` merge either layout.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from clipforge.atomic_files import atomic_write, fsync_dir
from clipforge.encoding import encode_images, encode_texts, model_difference, model_fingerprint
from clipforge.sources import SourceItem, items_digest, read_source, source_kind

__all__ = [
    "embed",
    "EmbedSummary",
    "read_manifest",
    "read_embeddings",
    "read_summary",
    "IncompleteRunError",
]

CONFIG_FILE = "embed_config.json"
FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^(images|texts)-(\d+)\.npy(\.tmp)?$")
_EXAMPLES_PER_CODE = 5

DTypeLike = Union[None, str, np.dtype, torch.dtype, type]


class IncompleteRunError(RuntimeError):
    """The output directory does not (yet) hold every item: the run was interrupted or a rank is missing."""


@dataclass
class EmbedSummary:
    out_dir: str
    rank: int
    world_size: int
    items: int  # items this rank is responsible for
    images: int  # image vectors written
    texts: int  # caption vectors written
    skipped: dict[str, int]  # error code -> number of items whose image was skipped
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)  # code -> a few paths
    shards: list[str] = field(default_factory=list)
    resumed_items: int = 0  # items already done when this call started
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A few human-readable lines: what was written and what was skipped, by reason."""
        who = f" (rank {self.rank}/{self.world_size})" if self.world_size > 1 else ""
        lines = [
            f"embedded {self.images} images and {self.texts} captions from {self.items} items into "
            f"{self.out_dir}{who}: {len(self.shards)} shard files"
            + (f"; {self.resumed_items} items were already done" if self.resumed_items else "")
            + (f"; {self.seconds:.1f} s" if self.seconds else "")
        ]
        total = sum(self.skipped.values())
        if total:
            lines.append(f"skipped {total} items:")
            for code, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
                examples = ", ".join(self.skipped_examples.get(code, [])[:3])
                lines.append(f"  {code}: {count}" + (f"  (e.g. {examples})" if examples else ""))
        else:
            lines.append("skipped 0 items")
        return "\n".join(lines)


# ---- small file helpers ------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    # "NAME.tmp" (not the default hidden name): resume recognises and removes such leftovers.
    atomic_write(path, write, tmp=path.with_name(path.name + ".tmp"))


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _storage_dtype(dtype: DTypeLike, model: Any) -> np.dtype:
    if dtype is None:
        # Half-precision models produce half-precision numbers; storing them as float32 buys nothing.
        return np.dtype(np.float16 if model.dtype in (torch.float16, torch.bfloat16) else np.float32)
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype)) if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in ("float32", "float16"):
        raise ValueError(f"embeddings are stored as float32 or float16, not {dtype!r}")
    return np.dtype(name)


def _rank_and_world(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    if rank is None and world_size is None:
        rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank is None or world_size is None:
        raise ValueError("pass both rank and world_size, or neither (then RANK / WORLD_SIZE from torchrun are used)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def _manifest_name(rank: int, world_size: int) -> str:
    return "manifest.jsonl" if world_size == 1 else f"manifest-rank{rank}.jsonl"


def _summary_name(rank: int, world_size: int) -> str:
    return "summary.json" if world_size == 1 else f"summary-rank{rank}.json"


def _shard_name(kind: str, chunk: int) -> str:
    return f"{kind}-{chunk:05d}.npy"


# ---- reading (and validating) what is on disk --------------------------------------------------


@dataclass
class _Run:
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


def _read_manifest_lines(path: Path) -> list[dict]:
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


def _complete_prefix(out_dir: Path, run: _Run, rank: int, entries: list[dict]) -> list[int]:
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


def _load_run(out_dir: Path) -> tuple[dict, _Run]:
    config_path = out_dir / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{out_dir} holds no embedding run ({CONFIG_FILE} is missing)")
    config = json.loads(config_path.read_text())
    return config, _Run(config["items"], config["shard_size"], config["world_size"])


def read_manifest(out_dir: Union[str, Path], *, complete: bool = True) -> list[dict]:
    """Manifest entries of every rank, merged and sorted by item index.

    Only fully written chunks are returned (what a resumed run would keep). With `complete=True`
    an `IncompleteRunError` is raised unless every item of the source is recorded.
    """
    out = Path(out_dir)
    config, run = _load_run(out)
    merged: list[dict] = []
    unfinished = []
    for rank in range(run.world_size):
        entries = _read_manifest_lines(out / _manifest_name(rank, run.world_size))
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
        raise ValueError(f"kind must be 'images' or 'texts', got {kind!r}")
    out = Path(out_dir)
    shard_key, row_key, label_key = ("shard", "row", "path") if kind == "images" else ("text_shard", "text_row", "caption")
    entries = [e for e in read_manifest(out, complete=complete) if shard_key in e]
    labels = [e[label_key] for e in entries]
    config, _ = _load_run(out)
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
    _, run = _load_run(out)
    parts = [json.loads((out / _summary_name(r, run.world_size)).read_text()) for r in range(run.world_size)
             if (out / _summary_name(r, run.world_size)).exists()]
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


# ---- the run -----------------------------------------------------------------------------------


def _check_run_config(out: Path, wanted: dict, rank: int) -> None:
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
            raise ValueError(
                f"{out} already holds a different embedding run ({'; '.join(problems)}). "
                "Resume with the same source, model and arguments, or choose a new output directory."
            )
        return
    # Each rank writes the same content under its own temp name; the rename makes the race harmless.
    tmp = out / f"{CONFIG_FILE}.rank{rank}.tmp"
    tmp.write_text(json.dumps(wanted, indent=2, ensure_ascii=False) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(out)


def _recover(out: Path, run: _Run, rank: int) -> list[int]:
    """Bring this rank's files back to the last complete chunk; return the chunks already done."""
    manifest = out / _manifest_name(rank, run.world_size)
    entries = _read_manifest_lines(manifest)
    done = _complete_prefix(out, run, rank, entries)
    keep = set(done)
    kept_lines = b"".join(
        json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in entries if e["index"] // run.shard_size in keep
    )
    if manifest.exists() and manifest.read_bytes() != kept_lines:
        # Drop torn lines and lines of partial chunks, atomically (a crash here leaves the old file).
        _atomic_write_bytes(manifest, lambda f: f.write(kept_lines))
    for path in out.iterdir():
        match = _SHARD_RE.match(path.name)
        mine = match is not None and int(match.group(2)) % run.world_size == rank
        if mine and (match.group(3) or int(match.group(2)) not in keep):
            path.unlink()  # an orphan: a shard (or temp file) no manifest line vouches for
    return done


def _embed_images(model: Any, preprocess: Any, paths: list[Any], batch_size: int, num_workers: Optional[int],
                  storage: np.dtype, on_batch: Callable[[int], None]) -> tuple[np.ndarray, dict[int, int], dict[int, Any]]:
    """Vectors of the good images (in order), their positions in `paths` (ImageSources), and errors by position."""
    encoded = encode_images(model, preprocess, paths, batch_size=batch_size, num_workers=num_workers, on_batch=on_batch)
    rows = {index: row for row, index in enumerate(encoded.indices)}
    errors = {index: error for index, _, error in encoded.errors}
    return encoded.features.cpu().numpy().astype(storage), rows, errors


def _embed_texts(model: Any, tokenizer: Callable, captions: list[str], batch_size: int, storage: np.dtype) -> np.ndarray:
    return encode_texts(model, tokenizer, captions, batch_size=batch_size).cpu().numpy().astype(storage)


def _process_chunk(model: Any, preprocess: Any, tokenizer: Callable, items: Sequence[SourceItem], first_index: int,
                   chunk: int, batch_size: int, num_workers: Optional[int], storage: np.dtype,
                   on_batch: Callable[[int], None]) -> tuple[list[dict], Optional[np.ndarray], Optional[np.ndarray]]:
    image_positions = [j for j, item in enumerate(items) if item.has_image]
    vectors, rows, errors = (np.empty(0), {}, {})
    if image_positions:
        # Tar members are decoded straight from their shard (ImageRef), not copied to scratch files.
        vectors, rows, errors = _embed_images(model, preprocess, [items[j].image_source() for j in image_positions],
                                              batch_size, num_workers, storage, on_batch)
    captions = [_first_caption(item) for item in items]
    caption_positions = [j for j, caption in enumerate(captions) if caption is not None]
    texts = _embed_texts(model, tokenizer, [captions[j] for j in caption_positions], batch_size, storage)
    text_rows = {j: r for r, j in enumerate(caption_positions)}
    image_row = {image_positions[i]: r for i, r in rows.items()}
    image_error = {image_positions[i]: e for i, e in errors.items()}

    images_name, texts_name = _shard_name("images", chunk), _shard_name("texts", chunk)
    entries = []
    for j, item in enumerate(items):
        entry: dict[str, Any] = {"index": first_index + j}
        if item.path is not None:
            entry["path"] = item.path
        if captions[j] is not None:
            entry["caption"] = captions[j]
        if j in image_row:
            entry["shard"], entry["row"] = images_name, image_row[j]
        elif j in image_error:
            error = image_error[j]
            entry["error"] = {"code": error.code, "message": error.reason}
        elif item.problem is not None:
            entry["error"] = {"code": item.problem_code, "message": item.problem}
        if j in text_rows:
            entry["text_shard"], entry["text_row"] = texts_name, text_rows[j]
        entries.append(entry)
    return entries, (vectors if rows else None), (texts if caption_positions else None)


def _first_caption(item: SourceItem) -> Optional[str]:
    """The caption embedded for an item: its only one, or the first of a JSONL list."""
    return item.caption[0] if isinstance(item.caption, tuple) else item.caption


def _commit_chunk(out: Path, manifest: Path, chunk: int, entries: list[dict],
                  images: Optional[np.ndarray], texts: Optional[np.ndarray]) -> None:
    """Shards first (temp file, fsync, rename), manifest lines last: the lines are the commit record."""
    for kind, array in (("images", images), ("texts", texts)):
        if array is not None:
            _atomic_write_bytes(out / _shard_name(kind, chunk), lambda f, a=array: np.save(f, a, allow_pickle=False))
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
    new_file = not manifest.exists()
    with open(manifest, "ab") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())
    if new_file:
        fsync_dir(out)


def _summarize(out: Path, run: _Run, rank: int, resumed: int, seconds: float) -> EmbedSummary:
    entries = _read_manifest_lines(out / _manifest_name(rank, run.world_size))
    skipped: Counter = Counter()
    examples: dict[str, list[str]] = {}
    shards: set[str] = set()
    images = texts = 0
    for e in entries:
        if "shard" in e:
            images += 1
            shards.add(e["shard"])
        if "text_shard" in e:
            texts += 1
            shards.add(e["text_shard"])
        if "error" in e:
            code = e["error"]["code"]
            skipped[code] += 1
            if len(examples.setdefault(code, [])) < _EXAMPLES_PER_CODE:
                examples[code].append(e.get("path") or f"item {e['index']}")
    return EmbedSummary(
        out_dir=str(out), rank=rank, world_size=run.world_size, items=len(entries), images=images, texts=texts,
        skipped=dict(skipped), skipped_examples=examples, shards=sorted(shards), resumed_items=resumed,
        seconds=round(seconds, 3),
    )


def embed(
    model: Any,
    preprocess: Callable,
    tokenizer: Callable,
    source: Union[str, os.PathLike, Sequence[SourceItem]],
    out_dir: Union[str, os.PathLike],
    *,
    batch_size: int = 64,
    num_workers: Optional[int] = None,
    dtype: DTypeLike = None,
    shard_size: int = 10000,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    progress: bool = True,
) -> EmbedSummary:
    """Embed every item of `source` into `out_dir` (see the module docstring for the layout).

    source: a folder, a file list, a CSV/TSV/JSONL table, WebDataset tar shards (see
        `clipforge.sources`), or a list of `SourceItem`s.
    dtype: how vectors are stored, float32 or float16; None: float16 for a half-precision model,
        else float32. Computation happens in the model's own dtype and device.
    rank / world_size: this process's share of the work; None: from RANK / WORLD_SIZE (torchrun).
    Running it again with the same arguments resumes an interrupted run (and is a no-op on a
    finished one); a run with different arguments or another model is refused.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    rank, world_size = _rank_and_world(rank, world_size)
    storage = _storage_dtype(dtype, model)
    if isinstance(source, (str, os.PathLike)):
        source_name, kind, items = os.fspath(source), source_kind(os.fspath(source)), read_source(os.fspath(source))
    else:
        source_name, kind, items = "<items>", "items", list(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    wanted = {
        "format": FORMAT_VERSION,
        "source": source_name if kind == "items" else os.path.abspath(source_name),
        "source_kind": kind,
        "items": len(items),
        "items_sha256": items_digest(items),
        "shard_size": shard_size,
        "dtype": storage.name,
        "world_size": world_size,
        "model": model_fingerprint(model, tokenizer),
    }
    _check_run_config(out, wanted, rank)
    run = _Run(len(items), shard_size, world_size)

    started = time.perf_counter()
    done = _recover(out, run, rank)
    todo = run.chunks_of(rank)[len(done):]
    resumed = sum(len(run.chunk_range(c)) for c in done)
    total = sum(len(run.chunk_range(c)) for c in run.chunks_of(rank))
    manifest = out / _manifest_name(rank, world_size)
    bar = _progress_bar(total, resumed, progress, rank)
    try:
        for chunk in todo:
            span = run.chunk_range(chunk)
            counted = [0]

            def on_batch(n: int) -> None:
                counted[0] += n
                bar.update(n)

            entries, images, texts = _process_chunk(
                model, preprocess, tokenizer, items[span.start : span.stop], span.start, chunk,
                batch_size, num_workers, storage, on_batch,
            )
            _commit_chunk(out, manifest, chunk, entries, images, texts)
            bar.update(len(span) - counted[0])  # caption-only and skipped items
    finally:
        bar.close()
    if not manifest.exists():  # a rank with nothing to do still leaves its (empty) record
        _atomic_write_bytes(manifest, lambda f: None)
    summary = _summarize(out, run, rank, resumed, time.perf_counter() - started)
    _write_json(out / _summary_name(rank, world_size), summary.to_dict())
    return summary


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool, rank: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="item", desc=f"embed rank {rank}" if rank else "embed",
                file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
