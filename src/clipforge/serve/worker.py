"""One model worker: a thread that owns the model and encodes queued requests in micro-batches.

Why one thread: a model on one device runs one forward at a time best; many request threads
calling it at once would fight over the same cores (or GPU) and each pay for a batch of one.
Instead every request puts a job on a queue and waits on a `Future`. The worker takes the first
job and every job already queued behind it, up to `max_batch`; when the previous batch held more
than one job (the server is under load) it also waits up to `max_wait` seconds for more. Then it
encodes all the texts in one `encode_texts` call and all the images in one `encode_pixels` call
(clipforge's one batch-encoding path; its results do not depend on how rows are batched, up to
float rounding). Under load the queue fills while the previous batch runs, so throughput grows
with the number of clients; a lone client is never made to wait.

`call(fn)` runs any other model work (building a zero-shot classifier) on the same thread, so the
towers only ever run on this one thread. A job whose future was cancelled (its request timed out)
is skipped. Nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from clipforge.encoding import encode_pixels, encode_texts

__all__ = ["BatchingEncoder", "EncoderBusy", "EncoderStats"]

log = logging.getLogger("clipforge.serve")

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT = 0.005  # seconds
DEFAULT_MAX_QUEUE = 1024


class EncoderBusy(RuntimeError):
    """The queue is full: the server is overloaded (the app answers 503)."""


@dataclass
class _Job:
    kind: str  # "text", "image" or "call"
    payload: Any  # str, [3, S, S] float tensor, or a callable
    future: Future = field(default_factory=Future)


_STOP = object()


@dataclass
class EncoderStats:
    batches: int = 0  # encode calls made (a batch with texts and images counts as one)
    items: int = 0  # texts and images encoded
    largest_batch: int = 0
    skipped: int = 0  # jobs whose request had already given up

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "mean_batch": round(mean, 2),
                "largest_batch": self.largest_batch, "skipped": self.skipped}


class BatchingEncoder:
    """Encode texts and preprocessed images on one worker thread, `max_batch` at a time.

    `encode_text(text)` / `encode_image(pixels)` return a `Future` of a [embed_dim] float32 numpy
    vector (L2-normalized); `call(fn)` a `Future` of `fn()`. Raises `EncoderBusy` when `max_queue`
    jobs are already waiting.
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: Callable, *, max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT, max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_wait = max_batch, max_wait
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_queue)
        self._stats = EncoderStats()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    # ---- the requests' side ----------------------------------------------------------------------

    def encode_text(self, text: str) -> Future:
        return self._submit(_Job("text", text))

    def encode_image(self, pixels: torch.Tensor) -> Future:
        if pixels.dim() != 3:
            raise ValueError(f"pixels must be [3, S, S], got shape {tuple(pixels.shape)}")
        return self._submit(_Job("image", pixels))

    def call(self, fn: Callable[[], Any]) -> Future:
        return self._submit(_Job("call", fn))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._stats.to_dict(), "queued": self._queue.qsize()}

    def _submit(self, job: _Job) -> Future:
        if self._thread is None:
            self.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise EncoderBusy(f"{self._queue.maxsize} requests are already waiting for the model") from None
        return job.future

    # ---- the worker's side -----------------------------------------------------------------------

    def start(self) -> "BatchingEncoder":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="clipforge-serve-model", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs already queued, then stop the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    def __enter__(self) -> "BatchingEncoder":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _loop(self) -> None:
        stopping = False
        previous = 0  # jobs in the previous batch
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
            batch = [job]
            # Wait for company only under load (the last batch was shared): a lone client is never delayed.
            deadline = time.monotonic() + (self.max_wait if previous > 1 else 0.0)
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            previous = len(batch)
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        texts = [job for job in live if job.kind == "text"]
        images = [job for job in live if job.kind == "image"]
        encoded = len(texts) + len(images)
        with self._lock:
            self._stats.skipped += len(batch) - len(live)
            if encoded:
                self._stats.batches += 1
                self._stats.items += encoded
                self._stats.largest_batch = max(self._stats.largest_batch, encoded)
        if texts:
            self._settle(texts, lambda: encode_texts(self.model, self.tokenizer, [j.payload for j in texts],
                                                     batch_size=len(texts)))
        if images:
            self._settle(images, lambda: encode_pixels(self.model, torch.stack([j.payload for j in images]),
                                                       batch_size=len(images)))
        for job in live:
            if job.kind == "call":
                try:
                    job.future.set_result(job.payload())
                except BaseException as e:  # handed to the waiting request, which reports it
                    job.future.set_exception(e)

    @staticmethod
    def _settle(jobs: list[_Job], encode: Callable[[], torch.Tensor]) -> None:
        try:
            vectors = encode().cpu().numpy().astype(np.float32, copy=False)  # [len(jobs), embed_dim]
        except BaseException as e:
            log.exception("encoding a batch of %d failed", len(jobs))
            for job in jobs:
                job.future.set_exception(e)
            return
        for job, vector in zip(jobs, vectors):
            job.future.set_result(vector)
