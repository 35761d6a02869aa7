"""Training data: image-caption pairs from CSV/TSV/JSONL files or streamed WebDataset tar shards.

Both sources turn samples into `Batch`es in DataLoader worker processes. A sample that cannot be
used (missing or corrupt image, missing caption, malformed line, unreadable shard) becomes a
`BadSample`; the collate function drops it and the batch carries the record, so the trainer
counts and logs it and training goes on. Batches can therefore be smaller than `batch_size`.

Determinism (what exact resume and the DDP equivalence rest on):
* pairs files: the sample order of an epoch is a pure function of (seed, epoch) (`EpochBatchSampler`);
  global batch `s` is the same set of samples whatever the number of ranks, and resuming skips
  the micro-batches already consumed without loading them;
* augmentation draws from a generator seeded by (seed, epoch, sample), never from global state,
  so it does not depend on which rank or worker loads a sample;
* WebDataset: shard order is shuffled per epoch from (seed, epoch); each (rank, worker) stream
  is a pure function of (seed, epoch, its role); a resumed run skips, per stream, the samples
  already consumed (reading but not decoding them). Resume needs the same number of ranks and workers.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from clipforge.configs import TokenizerConfig
from clipforge.errors import ClipforgeRuntimeError, InvalidInputError
from clipforge.image import ImageLoadError, ImageRef, load_image
from clipforge.image.augment import TrainTransform, sample_generator
from clipforge.sources import SourceItem, read_table, source_kind
from clipforge.sources.webdataset import IMAGE_EXTENSIONS as TAR_IMAGE_EXTENSIONS
from clipforge.sources.webdataset import (
    ShardError,
    count_samples,
    expand_shards,
    iter_tar_samples,
)

logger = logging.getLogger("clipforge.train")



@dataclass
class BadSample:
    key: str  # file path, or "shard.tar:key" for WebDataset
    reason: str


@dataclass
class Batch:
    images: torch.Tensor  # [n, 3, S, S]
    texts: torch.Tensor  # [n, context_length]
    bad: list[BadSample] = field(default_factory=list)
    role: int = -1  # WebDataset stream that produced the batch (-1: pairs file)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> "Batch":  # DataLoader(pin_memory=True) calls this for custom types
        return Batch(self.images.pin_memory(), self.texts.pin_memory(), self.bad, self.role)


class CollatePairs:
    """[(pixels, caption) | BadSample] -> Batch. Tokenizes in the worker; the tokenizer is built
    lazily there so this object pickles for any multiprocessing start method.

    `tokenizer`: the model's `TokenizerConfig` (its record's: CLIP's BPE, SigLIP's SentencePiece
    padded to 64, Chinese-CLIP's WordPiece, XLM-R's); None: CLIP's BPE at `context_length`. The
    ids come padded with the tokenizer's pad id; each model masks (or reads) its padding itself.
    """

    def __init__(self, image_size: int, context_length: int, role: int = -1, tokenizer: Optional[TokenizerConfig] = None) -> None:
        self.image_size = image_size
        self.context_length = tokenizer.context_length if tokenizer is not None else context_length
        self.role = role
        self.tokenizer_config = tokenizer
        self._tokenizer: Any = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, items: Sequence[Union[tuple[torch.Tensor, str], BadSample]]) -> Batch:
        good = [item for item in items if not isinstance(item, BadSample)]
        bad = [item for item in items if isinstance(item, BadSample)]
        if good:
            if self._tokenizer is None:
                from clipforge.text import Tokenizer, tokenizer_from_config

                self._tokenizer = (Tokenizer(context_length=self.context_length) if self.tokenizer_config is None
                                   else tokenizer_from_config(self.tokenizer_config))
            images = torch.stack([pixels for pixels, _ in good])
            texts = self._tokenizer([caption for _, caption in good])
        else:
            images = torch.empty(0, 3, self.image_size, self.image_size)
            texts = torch.zeros(0, self.context_length, dtype=torch.long)
        return Batch(images, texts, bad, self.role)


# ---- CSV / TSV / JSONL pairs (read by clipforge.sources: one column rule for every command) ---------


def balance_weights(groups: Sequence[Any], power: float) -> torch.Tensor:
    """Per-sample weights count(group) ** -power: 1 draws every group equally often, 0 is no balancing."""
    counts: dict[Any, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    return torch.tensor([counts[g] ** -power for g in groups], dtype=torch.float64)


def group_values(items: Sequence[SourceItem], column: str, source: str) -> list[str]:
    """Each item's value in `column` (for balancing); a column no row has is an error."""
    if items and not any(column in item.fields for item in items):
        raise InvalidInputError(f"{source}: no column {column!r} to balance by")
    return [json.dumps(item.fields.get(column), sort_keys=True) for item in items]


class PairDataset(Dataset):
    """`dataset[i] -> (pixels [3, S, S], caption)` or a BadSample. Set `epoch` before each epoch."""

    def __init__(self, pairs: Sequence[SourceItem], transform: TrainTransform, seed: int) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Union[tuple[torch.Tensor, str], BadSample]:
        pair = self.pairs[index]
        if pair.problem is not None:
            return BadSample(pair.name, pair.problem)
        if pair.path is None:
            return BadSample(pair.name, "no image path")
        caption = pair.caption
        if isinstance(caption, tuple):  # several captions: this epoch's is drawn from its own stream
            pick = sample_generator(self.seed, self.epoch, index, 1)
            caption = caption[int(torch.randint(len(caption), (1,), generator=pick).item())]
        if caption is None or not caption.strip():
            return BadSample(pair.name, "missing or empty caption")
        try:
            image = load_image(pair.image_source())
        except ImageLoadError as e:
            return BadSample(pair.name, f"{e.code}: {e.reason}")
        return _transform(self.transform, image, pair.name, caption, sample_generator(self.seed, self.epoch, index))


def _transform(
    transform: TrainTransform, image: Image.Image, key: str, caption: str, generator: torch.Generator
) -> Union[tuple[torch.Tensor, str], BadSample]:
    try:
        return transform(image, generator), caption
    except (OSError, ValueError, TypeError, MemoryError) as e:  # decoded but unusable pixels
        return BadSample(key, f"preprocess_failed: {type(e).__name__}: {e}")


class EpochBatchSampler:
    """Micro-batches of indices for one rank and one epoch: a pure function of (seed, epoch).

    The epoch's permutation is cut into global steps of world * accum * batch samples (the
    remainder is dropped); within a step, rank r takes the r-th consecutive slice of accum * batch
    and splits it into `accum` micro-batches. So the samples of step s are the same set for any
    number of ranks and any accumulation, which is what makes those runs equivalent.
    `start` skips micro-batches already consumed (resume) without touching their data.
    With `weights` (class balancing), the epoch is `num_samples` draws with replacement, each
    sample chosen with probability proportional to its weight, instead of a permutation.
    """

    def __init__(
        self, num_samples: int, batch_size: int, accum_steps: int, rank: int, world_size: int,
        seed: int, epoch: int, start: int = 0, weights: Optional[torch.Tensor] = None,
    ) -> None:
        self.num_samples, self.batch_size, self.accum_steps = num_samples, batch_size, accum_steps
        self.rank, self.world_size, self.seed, self.epoch, self.start = rank, world_size, seed, epoch, start
        self.weights = weights

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // (self.world_size * self.accum_steps * self.batch_size)

    def __len__(self) -> int:
        return max(self.steps_per_epoch * self.accum_steps - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        generator = sample_generator(self.seed, self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()
        per_step, per_rank = self.world_size * self.accum_steps * self.batch_size, self.accum_steps * self.batch_size
        for step in range(self.steps_per_epoch):
            base = step * per_step + self.rank * per_rank
            for j in range(self.accum_steps):
                if step * self.accum_steps + j < self.start:
                    continue
                yield order[base + j * self.batch_size : base + (j + 1) * self.batch_size]


# ---- WebDataset tar shards ---------------------------------------------------------------------------

RawSample = Union[tuple[str, dict[str, bytes]], BadSample]


def _raw_samples(shard: str) -> Iterator[RawSample]:
    """A shard's samples; a shard that breaks off ends in a BadSample naming how far it got."""
    for sample in iter_tar_samples(shard):
        yield BadSample(shard, f"unreadable shard: {sample}") if isinstance(sample, ShardError) else sample


def decode_sample(
    raw: RawSample, transform: TrainTransform, generator: torch.Generator
) -> Union[tuple[torch.Tensor, str], BadSample]:
    if isinstance(raw, BadSample):
        return raw
    key, files = raw
    ext = next((e for e in TAR_IMAGE_EXTENSIONS if e in files), None)
    if ext is None:
        return BadSample(key, f"no image file (has: {', '.join(sorted(files)) or 'nothing'})")
    if "txt" not in files:
        return BadSample(key, "no caption (.txt) file")
    caption = files["txt"].decode("utf-8", errors="replace").strip()
    if not caption:
        return BadSample(key, "empty caption")
    try:
        image = load_image(ImageRef(f"{key}.{ext}", data=files[ext]))
    except ImageLoadError as e:
        return BadSample(key, f"{e.code}: {e.reason}")
    return _transform(transform, image, key, caption, generator)


def _derive_seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key] + [len(key)]).generate_state(1, np.uint64)[0])


class ShardStream(IterableDataset):
    """Streams WebDataset shards as ready-made Batches (DataLoader(batch_size=None)).

    Each DataLoader worker of each rank plays a "role" and reads its own slice of the shards:
    without resampling, the epoch's shard order (shuffled from (seed, epoch), the same on every
    rank) is dealt out round-robin over world * workers roles and cycled when used up, so every
    rank can always produce as many batches as the epoch needs; with `resampled`, each role
    draws shards with replacement. Samples pass a seeded shuffle buffer, then are decoded and
    augmented with per-sample generators. `role_skips` and `first_role` resume mid-epoch: the
    DataLoader hands out worker batches round-robin, so rotating the roles makes the resumed
    stream continue exactly where the interrupted one stopped.
    """

    def __init__(
        self, shards: Sequence[str], transform: TrainTransform, *, seed: int, batch_size: int,
        context_length: int, rank: int, world_size: int, num_workers: int, resampled: bool, shuffle_buffer: int,
        tokenizer: Optional[TokenizerConfig] = None,
    ) -> None:
        if not shards:
            raise InvalidInputError("no WebDataset shards given")
        self.shards = list(shards)
        self.transform = transform
        self.seed, self.batch_size, self.context_length = seed, batch_size, context_length
        self.tokenizer = tokenizer
        self.rank, self.world_size = rank, world_size
        self.num_roles_per_rank = max(num_workers, 1)
        self.resampled, self.shuffle_buffer = resampled, shuffle_buffer
        self.epoch = 0
        self.role_skips = [0] * self.num_roles_per_rank
        self.first_role = 0

    def set_position(self, epoch: int, role_skips: Optional[Sequence[int]] = None, first_role: int = 0) -> None:
        self.epoch = epoch
        self.role_skips = list(role_skips) if role_skips else [0] * self.num_roles_per_rank
        self.first_role = first_role

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.first_role) % self.num_roles_per_rank
        global_role = self.rank * self.num_roles_per_rank + role
        collate = CollatePairs(self.transform.image_size, self.context_length, role=role, tokenizer=self.tokenizer)
        skip = self.role_skips[role] * self.batch_size
        raw = self._shuffled(self._raw(global_role), random.Random(_derive_seed(self.seed, self.epoch, global_role, 7)))
        pending: list = []
        for counter, sample in enumerate(raw):
            if counter < skip:
                continue  # consumed before the interruption: read, not decoded
            generator = sample_generator(self.seed, self.epoch, global_role, counter)
            pending.append(decode_sample(sample, self.transform, generator))
            if len(pending) == self.batch_size:
                yield collate(pending)
                pending = []

    def _raw(self, global_role: int) -> Iterator[RawSample]:
        roles = self.world_size * self.num_roles_per_rank
        if self.resampled:
            rng = random.Random(_derive_seed(self.seed, self.epoch, global_role, 11))
            empty = 0
            while True:
                produced = 0
                for sample in _raw_samples(rng.choice(self.shards)):
                    produced += 1
                    yield sample
                empty = 0 if produced else empty + 1
                if empty > 10 * len(self.shards):
                    raise ClipforgeRuntimeError(f"WebDataset shards yield no samples: {self.shards[:3]}...")
        cycle = 0
        while True:
            order = list(self.shards)
            random.Random(_derive_seed(self.seed, self.epoch, cycle, 13)).shuffle(order)
            mine = [order[i % len(order)] for i in range(global_role, max(len(order), roles), roles)]
            produced = 0
            for shard in mine:
                for sample in _raw_samples(shard):
                    produced += 1
                    yield sample
            if not produced:
                raise ClipforgeRuntimeError(f"WebDataset shards {mine} yield no samples")
            cycle += 1

    def _shuffled(self, samples: Iterator[RawSample], rng: random.Random) -> Iterator[RawSample]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[RawSample] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample


# ---- what the loop uses ------------------------------------------------------------------------------


class _WorkerInit:
    """Seeds python, numpy and torch in each worker from (seed, epoch, rank, worker): for user code
    that reaches for global RNGs; clipforge's own augmentation uses per-sample generators."""

    def __init__(self, seed: int, epoch: int, rank: int) -> None:
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __call__(self, worker_id: int) -> None:
        s = _derive_seed(self.seed, self.epoch, self.rank, worker_id)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)


def is_webdataset(spec: str, data_format: str = "auto") -> bool:
    if data_format != "auto":
        return data_format == "webdataset"
    return source_kind(spec) in ("webdataset", "folder", "glob")  # a folder or glob of training data: its shards


class TrainData:
    """The training stream of one rank: `loader(epoch, position)` yields that epoch's micro-batches.

    `position` (from a checkpoint) = {"micro_batches": consumed in the epoch, and for WebDataset
    "role_counts"/"next_role"}; the loop keeps it current with `advance(position, batch)`.
    """

    def __init__(
        self, spec: str, transform: TrainTransform, *, context_length: int, batch_size: int, accum_steps: int,
        rank: int, world_size: int, workers: int, seed: int, data_format: str = "auto",
        image_root: Optional[str] = None, csv_separator: Optional[str] = None, num_samples: Optional[int] = None,
        resampled: bool = False, shuffle_buffer: int = 1000, pin_memory: bool = False,
        caption_column: Optional[str] = None, balance_by: Optional[str] = None, balance_power: float = 1.0,
        tokenizer: Optional[TokenizerConfig] = None,
    ) -> None:
        self.batch_size, self.accum_steps = batch_size, accum_steps
        self.rank, self.world_size, self.workers, self.seed = rank, world_size, workers, seed
        self.pin_memory = pin_memory
        self.webdataset = is_webdataset(spec, data_format)
        global_batch = world_size * accum_steps * batch_size
        self.weights: Optional[torch.Tensor] = None
        if self.webdataset:
            if balance_by is not None or caption_column is not None:
                raise InvalidInputError("balance_by and caption_column apply to CSV/JSONL pairs, not WebDataset shards")
            shards = expand_shards(spec)
            if num_samples is None:
                num_samples, problems = count_samples(shards)
                for problem in problems:
                    logger.warning("counting samples: %s", problem)
            self.num_samples = num_samples
            self.stream = ShardStream(
                shards, transform, seed=seed, batch_size=batch_size, context_length=context_length, rank=rank,
                world_size=world_size, num_workers=workers, resampled=resampled, shuffle_buffer=shuffle_buffer,
                tokenizer=tokenizer,
            )
        else:
            pairs = read_table(spec, image_root=image_root, separator=csv_separator, caption_column=caption_column)
            if pairs and not any(p.path for p in pairs):
                raise InvalidInputError(f"{spec}: no image column (image/path/filepath) or no image path in any row")
            self.num_samples = len(pairs)
            if balance_by is not None:
                self.weights = balance_weights(group_values(pairs, balance_by, spec), balance_power)
            self.dataset = PairDataset(pairs, transform, seed)
            self.collate = CollatePairs(transform.image_size, context_length, tokenizer=tokenizer)
        self.steps_per_epoch = self.num_samples // global_batch
        if self.steps_per_epoch < 1:
            raise InvalidInputError(
                f"{spec}: {self.num_samples} samples is less than one global batch "
                f"({world_size} ranks x {accum_steps} micro-batches x {batch_size})"
            )

    @staticmethod
    def new_position() -> dict[str, Any]:
        return {"micro_batches": 0, "role_counts": [], "next_role": 0}

    def advance(self, position: dict[str, Any], batch: Batch) -> None:
        position["micro_batches"] += 1
        if batch.role >= 0:
            counts = position["role_counts"] or [0] * max(self.workers, 1)
            counts[batch.role] += 1
            position["role_counts"] = counts
            position["next_role"] = (batch.role + 1) % max(self.workers, 1)

    def loader(self, epoch: int, position: Optional[dict[str, Any]] = None) -> Iterator[Batch]:
        """This rank's micro-batches for `epoch`, starting after `position` (exactly the remaining ones)."""
        position = position or self.new_position()
        remaining = self.steps_per_epoch * self.accum_steps - position["micro_batches"]
        common = dict(
            num_workers=self.workers, pin_memory=self.pin_memory,
            worker_init_fn=_WorkerInit(self.seed, epoch, self.rank),
            # Worker base seeds come from this generator, not torch's global RNG (resume stays exact).
            generator=torch.Generator().manual_seed(_derive_seed(self.seed, epoch, self.rank, 3)),
        )
        if self.webdataset:
            self.stream.set_position(epoch, position.get("role_counts"), position.get("next_role", 0))
            loader = DataLoader(self.stream, batch_size=None, **common)
        else:
            self.dataset.epoch = epoch
            sampler = EpochBatchSampler(
                self.num_samples, self.batch_size, self.accum_steps, self.rank, self.world_size,
                self.seed, epoch, start=position["micro_batches"], weights=self.weights,
            )
            loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate, **common)
        return _take(loader, remaining)


def _take(loader: DataLoader, n: int) -> Iterator[Batch]:
    if n <= 0:
        return
    for i, batch in enumerate(loader):
        yield batch
        if i + 1 >= n:
            break
