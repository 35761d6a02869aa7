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

import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from clipforge.encoding import encode_images, encode_texts, model_fingerprint
from clipforge.errors import InvalidInputError
from clipforge.sources import (
    SourceError,
    SourceItem,
    items_digest,
    read_source,
    source_kind,
)
from clipforge.tasks.embedding_store import (
    EXAMPLES_PER_CODE,
    FORMAT_VERSION,
    IncompleteRunError,
    RunShape,
    atomic_write_bytes,
    check_run_config,
    commit_chunk,
    manifest_name,
    read_embeddings,
    read_manifest,
    read_manifest_lines,
    read_summary,
    recover,
    shard_name,
    summary_name,
    write_json,
)

__all__ = [
    "embed",
    "EmbedSummary",
    "read_manifest",
    "read_embeddings",
    "read_summary",
    "IncompleteRunError",
]

DTypeLike = Union[None, str, np.dtype, torch.dtype, type]


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


def _storage_dtype(dtype: DTypeLike, model: Any) -> np.dtype:
    if dtype is None:
        # Half-precision models produce half-precision numbers; storing them as float32 buys nothing.
        return np.dtype(np.float16 if model.dtype in (torch.float16, torch.bfloat16) else np.float32)
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype)) if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in ("float32", "float16"):
        raise InvalidInputError(f"embeddings are stored as float32 or float16, not {dtype!r}")
    return np.dtype(name)


def _rank_and_world(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    if rank is None and world_size is None:
        rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank is None or world_size is None:
        raise InvalidInputError("pass both rank and world_size, or neither (then RANK / WORLD_SIZE from torchrun are used)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


# ---- the run -----------------------------------------------------------------------------------


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

    images_name, texts_name = shard_name("images", chunk), shard_name("texts", chunk)
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


def _summarize(out: Path, run: RunShape, rank: int, resumed: int, seconds: float) -> EmbedSummary:
    entries = read_manifest_lines(out / manifest_name(rank, run.world_size))
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
            if len(examples.setdefault(code, [])) < EXAMPLES_PER_CODE:
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
    source_name: Optional[str] = None,
) -> EmbedSummary:
    """Embed every item of `source` into `out_dir` (see the module docstring for the layout).

    source: a folder, a file list, a CSV/TSV/JSONL table, WebDataset tar shards (see
        `clipforge.sources`), or a list of `SourceItem`s (then `source_name` says, for the record,
        what they were read from).
    dtype: how vectors are stored, float32 or float16; None: float16 for a half-precision model,
        else float32. Computation happens in the model's own dtype and device.
    rank / world_size: this process's share of the work; None: from RANK / WORLD_SIZE (torchrun).
    Running it again with the same arguments resumes an interrupted run (and is a no-op on a
    finished one); a run with different arguments or another model is refused.
    """
    if batch_size < 1 or shard_size < 1:
        raise InvalidInputError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    rank, world_size = _rank_and_world(rank, world_size)
    storage = _storage_dtype(dtype, model)
    if isinstance(source, (str, os.PathLike)):
        source_name, kind, items = os.fspath(source), source_kind(os.fspath(source)), read_source(os.fspath(source))
    elif source_name is not None:
        kind, items = source_kind(source_name), list(source)
    else:
        source_name, kind, items = "<items>", "items", list(source)
    if not items:
        raise SourceError(f"nothing to embed: {source_name!r} holds no images or captions")
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
    check_run_config(out, wanted, rank)
    run = RunShape(len(items), shard_size, world_size)

    started = time.perf_counter()
    done = recover(out, run, rank)
    todo = run.chunks_of(rank)[len(done):]
    resumed = sum(len(run.chunk_range(c)) for c in done)
    total = sum(len(run.chunk_range(c)) for c in run.chunks_of(rank))
    manifest = out / manifest_name(rank, world_size)
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
            commit_chunk(out, manifest, chunk, entries, images, texts)
            bar.update(len(span) - counted[0])  # caption-only and skipped items
    finally:
        bar.close()
    if not manifest.exists():  # a rank with nothing to do still leaves its (empty) record
        atomic_write_bytes(manifest, lambda f: None)
    summary = _summarize(out, run, rank, resumed, time.perf_counter() - started)
    write_json(out / summary_name(rank, world_size), summary.to_dict())
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
