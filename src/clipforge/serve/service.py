"""What the server does, without HTTP: search an index by text, image or item, classify an image,
make thumbnails. The app (`clipforge.serve.app`) only parses requests and calls these.

Every method that touches the model goes through the one `BatchingEncoder`; the blocking ones
(decoding, searching, thumbnails) are called from the app's thread pool. Inputs are checked here,
and a bad one raises `ApiError` naming the problem, so the same rules hold for any front end.

Uploads are decoded by `clipforge.image.load_image` from an in-memory `ImageRef`, so they get the
same checks as files (formats allow-list, pixel limit, truncation) and the same error codes.
Thumbnails are made only for items of the index, by row number: no path from a client is opened.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from clipforge.image import ImageLoadError, ImageRef, load_image
from clipforge.serve.errors import ApiError
from clipforge.serve.worker import BatchingEncoder
from clipforge.tasks.search import SearchIndex

__all__ = ["SearchService", "Limits", "decode_upload", "parse_labels", "IMAGE_ERROR_STATUS"]

log = logging.getLogger("clipforge.serve")

# ImageLoadError codes -> HTTP status. Too many pixels is "too large" like too many bytes.
IMAGE_ERROR_STATUS = {"decompression_bomb": 413}
THUMBNAIL_SIZE = 192


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # decoded size of an upload (width * height)
    max_k: int = 1000
    max_query_chars: int = 2000
    max_labels: int = 200
    max_label_chars: int = 200


def decode_upload(data: bytes, limits: Limits, name: str = "upload") -> Any:
    """The decoded PIL image of uploaded bytes; `ApiError` with the load error's code otherwise."""
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, f"the image is {len(data)} bytes, over the {limits.max_upload_bytes}-byte limit", "too_large")
    try:
        return load_image(ImageRef(name, data=data), max_pixels=limits.max_pixels)
    except ImageLoadError as e:
        raise ApiError(IMAGE_ERROR_STATUS.get(e.code, 400), f"{name}: {e.reason}", e.code) from None


def parse_labels(value: str, limits: Limits) -> list[str]:
    """Labels from a JSON list of strings (`["cat", "dog"]`) or comma-separated text (`cat, dog`)."""
    import json

    text = value.strip()
    if text.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ApiError(400, f"labels: not a valid JSON list ({e.msg} at character {e.pos})", "bad_labels") from None
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ApiError(400, "labels: a JSON value must be a list of strings", "bad_labels")
        labels = [x.strip() for x in raw]
    else:
        labels = [x.strip() for x in text.split(",")]
    labels = [x for x in labels if x]
    if not labels:
        raise ApiError(400, "labels: no labels given (a JSON list or comma-separated text)", "bad_labels")
    if len(labels) > limits.max_labels:
        raise ApiError(400, f"labels: {len(labels)} labels, over the limit of {limits.max_labels}", "bad_labels")
    long = [x for x in labels if len(x) > limits.max_label_chars]
    if long:
        raise ApiError(400, f"labels: {long[0][:40]!r}... is longer than {limits.max_label_chars} characters", "bad_labels")
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ApiError(400, f"labels: duplicate labels {duplicates}", "bad_labels")
    return labels


class SearchService:
    """An index, the model that made it, and one `BatchingEncoder` for that model.

    model_name: what /api/health reports as the model. templates: zero-shot prompt templates.
    backend: the `SearchIndex.search` backend ("exact", or a FAISS one).
    """

    def __init__(
        self, index: SearchIndex, model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, *,
        model_name: str, templates: Sequence[str] = ("{}",), backend: str = "exact", limits: Limits = Limits(),
        max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 1024, label_cache: int = 4096,
        thumb_cache: int = 1024,
    ) -> None:
        from clipforge.tasks.zero_shot import resolve_templates

        self.index, self.model, self.preprocess, self.tokenizer = index, model, preprocess, tokenizer
        self.model_name = model_name
        self.templates = resolve_templates(list(templates))
        self.backend = backend
        self.limits = limits
        self.encoder = BatchingEncoder(model, tokenizer, max_batch=max_batch, max_wait=max_wait, max_queue=max_queue)
        self.captions = _captions(index)
        self._labels: "OrderedDict[str, np.ndarray]" = OrderedDict()  # label -> [embed_dim] classifier column
        self._label_cache = label_cache
        self._thumbs: "OrderedDict[int, bytes]" = OrderedDict()
        self._thumb_cache = thumb_cache
        self._lock = threading.Lock()
        if backend != "exact":
            index.faiss_index(backend)  # build or load it now, not in the first request

    def close(self) -> None:
        self.encoder.close()

    # ---- inputs ------------------------------------------------------------------------------

    def check_k(self, k: int) -> int:
        if not 1 <= k <= self.limits.max_k:
            raise ApiError(400, f"k must be between 1 and {self.limits.max_k}, got {k}", "bad_parameter")
        return k

    def check_query(self, text: str) -> str:
        if not text.strip():
            raise ApiError(400, "q: the query is empty", "bad_parameter")
        if len(text) > self.limits.max_query_chars:
            raise ApiError(400, f"q: the query is {len(text)} characters, over the limit of {self.limits.max_query_chars}",
                           "bad_parameter")
        return text

    def check_item(self, value: str, what: str = "id") -> int:
        """A row number of the index from text: digits only, in range; anything else is refused."""
        if not (value.isascii() and value.isdigit()) or len(value) > 12:
            raise ApiError(400, f"{what} must be an item number (0 to {len(self.index) - 1}), got {value[:40]!r}", "bad_id")
        row = int(value)
        if row >= len(self.index):
            raise ApiError(404, f"no item {row}: the index has {len(self.index)} items (0 to {len(self.index) - 1})",
                           "no_such_item")
        return row

    # ---- encoding (blocking parts run in a thread pool; model work on the encoder) ----------

    def pixels_of(self, data: bytes, name: str = "image") -> torch.Tensor:
        """Decode and preprocess an upload: [3, S, S]. Blocking: call from a worker thread."""
        return self.preprocess(decode_upload(data, self.limits, name))

    def embed_text(self, text: str) -> Future:
        return self.encoder.encode_text(self.check_query(text))

    def embed_pixels(self, pixels: torch.Tensor) -> Future:
        return self.encoder.encode_image(pixels)

    # ---- search -------------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int) -> list[dict[str, Any]]:
        """Top-k items for a normalized query vector: `[{"id", "path", "score", "caption"?, "thumb"}]`."""
        results = self.index.search(vector[None, :], k, self.backend)
        hits = []
        for row, score in zip(results.ids[0].tolist(), results.scores[0].tolist()):
            if row < 0:
                continue
            hit = {"id": row, "path": self.index.paths[row], "score": float(score), "thumb": f"/api/thumb/{row}"}
            if self.captions[row] is not None:
                hit["caption"] = self.captions[row]
            hits.append(hit)
        return hits

    def item_vector(self, row: int) -> np.ndarray:
        """The stored vector of item `row` (for "more like this"), normalized float32."""
        return np.ascontiguousarray(self.index.vectors[row], dtype=np.float32)

    # ---- zero-shot classification ----------------------------------------------------------

    def label_weights(self, labels: list[str]) -> Future:
        """Future of the [embed_dim, n_labels] classifier for `labels` (cached per label, built on the encoder)."""
        from clipforge.tasks.zero_shot import build_classifier

        with self._lock:
            cached = {label: self._labels[label] for label in labels if label in self._labels}
            for label in cached:
                self._labels.move_to_end(label)
        missing = [label for label in labels if label not in cached]

        def build() -> np.ndarray:
            columns = dict(cached)
            if missing:
                built = build_classifier(self.model, self.tokenizer, missing, self.templates, progress=False)
                new = built.weights.float().cpu().numpy().T  # [n_missing, embed_dim]
                with self._lock:
                    for label, column in zip(missing, new):
                        columns[label] = column
                        self._labels[label] = column
                    while len(self._labels) > self._label_cache:
                        self._labels.popitem(last=False)
            return np.stack([columns[label] for label in labels], axis=1)  # [embed_dim, n_labels]

        if not missing:
            done: Future = Future()
            done.set_result(build())
            return done
        return self.encoder.call(build)

    def classify(self, image_vector: np.ndarray, labels: list[str], weights: np.ndarray) -> list[dict[str, Any]]:
        """`[{"label", "prob", "score"}]`, most probable first: the model's own probabilities
        (`model.probabilities`, for CLIP the softmax at its learned temperature) and the cosine."""
        device = next(self.model.parameters()).device
        image = torch.from_numpy(image_vector[None, :]).to(device)
        text = torch.from_numpy(np.ascontiguousarray(weights.T)).to(device)  # [n_labels, embed_dim]
        with torch.no_grad():
            probs = self.model.probabilities(image, text).float().cpu().numpy()[0]
            cosines = (image @ text.T).float().cpu().numpy()[0]
        order = np.argsort(-probs, kind="stable")
        return [{"label": labels[j], "prob": float(probs[j]), "score": float(cosines[j])} for j in order]

    # ---- thumbnails -------------------------------------------------------------------------

    def thumbnail(self, row: int, size: int = THUMBNAIL_SIZE) -> bytes:
        """JPEG thumbnail of item `row` (an int already checked by `check_item`). Blocking."""
        from clipforge.tasks.search_page import thumbnail_jpeg

        with self._lock:
            if row in self._thumbs:
                self._thumbs.move_to_end(row)
                return self._thumbs[row]
        try:
            data = thumbnail_jpeg(self.index.paths[row], size)
        except ImageLoadError as e:
            raise ApiError(404, f"item {row}: its image cannot be read ({e.reason})", e.code) from None
        with self._lock:
            self._thumbs[row] = data
            while len(self._thumbs) > self._thumb_cache:
                self._thumbs.popitem(last=False)
        return data

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.index), "model": self.model_name,
                "embed_dim": int(self.index.vectors.shape[1]) if len(self.index) else None,
                "backend": self.backend, "encoder": self.encoder.stats()}


def _captions(index: SearchIndex) -> list[Optional[str]]:
    """The caption of each item of `index` (None where the source had none), aligned with `index.paths`."""
    from clipforge.tasks.embedding_store import read_manifest

    entries = [e for e in read_manifest(index.dir) if "shard" in e]  # the rows read_embeddings returns
    if [e.get("path") for e in entries] != index.paths:
        log.warning("the manifest of %s does not line up with its vectors; captions left out", index.dir)
        return [None] * len(index)
    return [e.get("caption") if isinstance(e.get("caption"), str) else None for e in entries]
