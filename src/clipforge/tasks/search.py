"""Search a collection embedded by `embed`: exact (normalized dot product) or FAISS (IVF / HNSW).

An index directory is an `embed` output directory plus `index.json`, which records the model that
made the vectors (name or path, weights tag, arch, config and a probe embedding). Queries must be
embedded by that same model, so `check_model` refuses any other with a message that says which.

FAISS is optional (`pip install faiss-cpu`) and imported only when a FAISS backend is used. Its
structures are built on first use and cached in the index directory. `recall_at_k` measures how
many of the exact top-k an approximate backend finds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from clipforge.encoding import (
    encode_pixels,
    encode_texts,
    model_difference,
    model_fingerprint,
)
from clipforge.errors import (
    ClipforgeError,
    ClipforgeRuntimeError,
    InvalidInputError,
    MissingFileError,
)
from clipforge.sources import json_dumps
from clipforge.tasks.embedding import EmbedSummary, embed, read_embeddings

__all__ = [
    "BACKENDS",
    "SearchIndex",
    "SearchResults",
    "ModelMismatchError",
    "build_index",
    "check_model",
    "exact_search",
    "build_faiss_index",
    "FaissIndex",
    "faiss_search",
    "recall_at_k",
    "embed_text_queries",
    "embed_image_queries",
]

INDEX_FILE = "index.json"
BACKENDS = ("exact", "faiss-ivf", "faiss-hnsw")

# FAISS parameters. Build-time shape: the usual rules. Search-time effort (IVF nprobe, HNSW
# efSearch) is calibrated per collection: the smallest setting whose recall@k against exact search
# reaches TARGET_RECALL on leave-one-out queries drawn from the collection (see `build_faiss_index`).
IVF_LISTS_PER_SQRT_N = 4  # nlist = 4 * sqrt(N)
IVF_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 100
TARGET_RECALL = 0.95
CALIBRATION_QUERIES = 256


class ModelMismatchError(ClipforgeError, ValueError):
    """A query model that is not the model the index was built with."""


@dataclass
class SearchResults:
    scores: np.ndarray  # [queries, k] float32 cosine similarities, best first
    ids: np.ndarray  # [queries, k] int64 row numbers into SearchIndex.paths (-1: fewer than k found)


# ---- building ----------------------------------------------------------------------------------


def build_index(
    model: Any,
    preprocess: Callable,
    tokenizer: Callable,
    folder: Union[str, os.PathLike],
    index_dir: Union[str, os.PathLike],
    *,
    model_reference: Optional[dict[str, Any]] = None,
    **embed_kwargs: Any,
) -> EmbedSummary:
    """Embed `folder` (or any `embed` SOURCE) into `index_dir` and record the model's identity.

    model_reference: how to load the model again ({"name_or_path", "weights", "arch"}); the CLI
        fills it in, so that `clipforge search` can load the same model for queries.
    embed_kwargs: passed to `embed` (batch_size, num_workers, dtype, shard_size, progress, ...).
    Re-running resumes an interrupted build; building into an index of another model is refused.
    """
    index_dir = Path(index_dir)
    record = {
        "model": {**(model_reference or {}), **model_fingerprint(model, tokenizer)},
        "source": os.path.abspath(os.fspath(folder)),
    }
    existing = index_dir / INDEX_FILE
    if existing.exists():
        check_model(json.loads(existing.read_text())["model"], record["model"], str(index_dir))
    index_dir.mkdir(parents=True, exist_ok=True)
    # index.json first: a half-built index already says which model it belongs to.
    tmp = index_dir / f"{INDEX_FILE}.{os.getpid()}.tmp"  # per process: torchrun ranks write it concurrently
    tmp.write_text(json_dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, existing)
    return embed(model, preprocess, tokenizer, folder, index_dir, **embed_kwargs)


def check_model(index_model: dict[str, Any], query_model: dict[str, Any], where: str = "the index") -> None:
    """Raise `ModelMismatchError` unless the query model is the model the index was built with.

    Both are records as stored in index.json: a model reference (name_or_path / weights / arch,
    compared when both sides give them) plus a `model_fingerprint` (config and probe embedding).
    """
    def described(m: dict[str, Any]) -> str:
        text = str(m.get("name_or_path"))
        return text + (f" (weights {m['weights']})" if m.get("weights") else "") + (f" (arch {m['arch']})" if m.get("arch") else "")

    # The fingerprint decides: the same weights under another path or name are the same model.
    difference = model_difference(index_model, query_model)
    if difference:
        raise ModelMismatchError(
            f"{where} was built with model {described(index_model)}, but the query model is {described(query_model)}: "
            f"{difference}. Query vectors from another model are not comparable with the index's; "
            "search with the index's own model (leave out --model) or rebuild the index."
        )


# ---- the index ---------------------------------------------------------------------------------


class SearchIndex:
    """The vectors and paths of an index directory, searchable by several backends."""

    def __init__(self, index_dir: Union[str, os.PathLike]) -> None:
        self.dir = Path(index_dir)
        record_path = self.dir / INDEX_FILE
        if not record_path.exists():
            raise MissingFileError(
                f"{self.dir} is not a search index ({INDEX_FILE} missing); build one with `clipforge index DIR --out {self.dir}`"
            )
        self.record: dict[str, Any] = json.loads(record_path.read_text())
        paths, vectors = read_embeddings(self.dir, "images")
        self.paths: list[str] = paths
        # float32 for search whatever the storage: float16 matmuls on CPU are slow and lossy.
        self.vectors: np.ndarray = np.ascontiguousarray(vectors, dtype=np.float32)
        self._faiss: dict[str, Any] = {}

    @property
    def model(self) -> dict[str, Any]:
        return self.record["model"]

    def __len__(self) -> int:
        return len(self.paths)

    def search(self, queries: np.ndarray, k: int = 10, backend: str = "exact") -> SearchResults:
        """Top-k rows for each query vector ([queries, dim], normalized)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if backend == "exact":
            return exact_search(self.vectors, queries, k)
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return self.faiss_index(backend).search(queries, k)

    def faiss_index(self, backend: str) -> "FaissIndex":
        """The FAISS index for `backend`, built and calibrated on first use, then cached on disk."""
        if backend not in self._faiss:
            faiss = _import_faiss()
            stem = self.dir / f"{backend}-{len(self.vectors)}"  # the row count invalidates stale caches
            index_file, info_file = stem.with_suffix(".faiss"), stem.with_suffix(".json")
            if index_file.exists() and info_file.exists():
                info = json.loads(info_file.read_text())
                built = FaissIndex(faiss.read_index(str(index_file)), backend, info["params"], info["calibrated_recall"])
                _set_effort(built)
            else:
                built = build_faiss_index(self.vectors, backend)
                for path, write in (
                    (index_file, lambda p: faiss.write_index(built.index, p)),
                    (info_file, lambda p: Path(p).write_text(json.dumps(
                        {"params": built.params, "calibrated_recall": built.calibrated_recall}, indent=2) + "\n")),
                ):
                    write(str(path) + ".tmp")
                    os.replace(str(path) + ".tmp", path)
            self._faiss[backend] = built
        return self._faiss[backend]


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, block_rows: int = 262144) -> SearchResults:
    """Exact top-k by dot product (= cosine for normalized vectors), `block_rows` rows at a time.

    Why blocks: the score matrix for millions of rows and many queries would not fit; a running
    top-k over blocks keeps memory at [queries, block_rows].
    """
    queries_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    n, k = len(vectors), min(k, len(vectors))
    best_scores = torch.full((len(queries_t), 0), float("-inf"))
    best_ids = torch.zeros((len(queries_t), 0), dtype=torch.long)
    for start in range(0, n, block_rows):
        block = torch.from_numpy(np.ascontiguousarray(vectors[start : start + block_rows], dtype=np.float32))
        scores = queries_t @ block.T  # [queries, block]
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        merged_scores = torch.cat([best_scores, top.values], dim=1)
        merged_ids = torch.cat([best_ids, top.indices + start], dim=1)
        keep = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_ids = keep.values, torch.gather(merged_ids, 1, keep.indices)
    return SearchResults(best_scores.numpy().astype(np.float32), best_ids.numpy().astype(np.int64))


# ---- FAISS -------------------------------------------------------------------------------------


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ClipforgeRuntimeError(
            "the faiss-ivf / faiss-hnsw backends need FAISS: `pip install faiss-cpu` (or faiss-gpu); "
            "the default exact backend needs nothing extra"
        ) from None
    return faiss


@dataclass
class FaissIndex:
    index: Any  # the faiss index, search effort already set
    backend: str
    params: dict[str, Any]  # nlist / nprobe or M / efConstruction / efSearch
    calibrated_recall: float  # recall@k on the calibration queries at these params

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> SearchResults:
        return faiss_search(self.index, queries, k)


def build_faiss_index(
    vectors: np.ndarray,
    backend: str,
    *,
    target_recall: float = TARGET_RECALL,
    k: int = 10,
    calibration_queries: int = CALIBRATION_QUERIES,
    seed: int = 1234,
) -> FaissIndex:
    """An inner-product FAISS index over `vectors` ([N, dim], normalized), calibrated for recall.

    Why calibrate: how much of an IVF or HNSW index must be visited for a given recall depends on
    the data (clustered CLIP embeddings need little, structureless random vectors need a lot). So
    nprobe / efSearch are doubled until recall@k against exact search reaches `target_recall` for
    `calibration_queries` held-out rows of the collection: they are added to the index only after
    calibration, so they behave like new queries (a row already in an HNSW graph finds its
    neighbours far too easily and would make the calibration optimistic).
    """
    faiss = _import_faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    held_out = np.zeros(n, dtype=bool)
    held_out[rng.choice(n, size=min(calibration_queries, n // 2), replace=False)] = True
    base_ids, query_ids = np.flatnonzero(~held_out), np.flatnonzero(held_out)

    if backend == "faiss-hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index = faiss.IndexIDMap(hnsw)  # rows are added out of order; ids stay row numbers
        params: dict[str, Any] = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
        name, settings = "efSearch", [16 << i for i in range(9)]  # 16 .. 4096
    elif backend == "faiss-ivf":
        nlist = max(1, min(int(IVF_LISTS_PER_SQRT_N * np.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # deterministic k-means
        index.train(vectors)
        params = {"nlist": nlist}
        name, settings = "nprobe", [min(nlist, 8 << i) for i in range(32) if i == 0 or (8 << (i - 1)) < nlist]
    else:
        raise InvalidInputError(f"unknown FAISS backend {backend!r}; choose faiss-ivf or faiss-hnsw")
    index.add_with_ids(vectors[base_ids], base_ids.astype(np.int64))

    built = FaissIndex(index, backend, params, 1.0)
    kk = min(k, len(base_ids))
    if len(query_ids) and kk:
        queries = vectors[query_ids]
        exact = base_ids[exact_search(vectors[base_ids], queries, kk).ids]
        for value in settings:
            built.params[name] = value
            _set_effort(built)
            built.calibrated_recall = recall_at_k(faiss_search(index, queries, kk).ids, exact)
            if built.calibrated_recall >= target_recall:
                break
    else:
        built.params[name] = settings[-1]
        _set_effort(built)
    index.add_with_ids(vectors[query_ids], query_ids.astype(np.int64))
    return built


def _set_effort(built: FaissIndex) -> None:
    """Apply the calibrated search effort (not every FAISS version stores it in the file)."""
    import faiss

    if "efSearch" in built.params:
        faiss.downcast_index(built.index.index).hnsw.efSearch = built.params["efSearch"]
    if "nprobe" in built.params:
        built.index.nprobe = built.params["nprobe"]


def faiss_search(index: Any, queries: np.ndarray, k: int) -> SearchResults:
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
    return SearchResults(scores.astype(np.float32), ids.astype(np.int64))


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (k = exact_ids.shape[1]); -1 ids never count."""
    approx_ids, exact_ids = np.atleast_2d(approx_ids), np.atleast_2d(exact_ids)
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise InvalidInputError(f"different numbers of queries: {approx_ids.shape[0]} vs {exact_ids.shape[0]}")
    k = exact_ids.shape[1]
    if k == 0 or len(exact_ids) == 0:
        return 1.0
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx_ids[:, :k], exact_ids)]
    return float(np.mean(hits) / k)


# ---- queries -----------------------------------------------------------------------------------


def embed_text_queries(model: Any, tokenizer: Callable, texts: Sequence[str]) -> np.ndarray:
    """[len(texts), dim] normalized float32 text embeddings."""
    return encode_texts(model, tokenizer, texts).cpu().numpy()


def embed_image_queries(model: Any, preprocess: Callable, paths: Sequence[Union[str, os.PathLike]]) -> np.ndarray:
    """[len(paths), dim] normalized float32 image embeddings; a bad file raises ImageLoadError."""
    from clipforge.image import load_image

    return encode_pixels(model, torch.stack([preprocess(load_image(p)) for p in paths])).cpu().numpy()
