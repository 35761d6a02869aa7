"""Images (file paths or `ImageRef`s) -> batches of pixels, decoded and resized in DataLoader workers.

A bad file never takes a batch down: it becomes an error record, is left out of `pixels`, and
is reported in `ImageBatch.errors`. Order follows `paths` exactly (no shuffling, in-order
delivery), so `indices` can be used to scatter results back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from clipforge.errors import InvalidInputError
from clipforge.image.files import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageSource,
    image_name,
    load_image,
)
from clipforge.image.preprocess import Preprocess

__all__ = ["ImageBatch", "ImageFileDataset", "iter_image_batches"]

Item = tuple[int, Union[torch.Tensor, ImageLoadError]]


@dataclass
class ImageBatch:
    pixels: torch.Tensor  # [n, 3, S, S], the good images of this batch, in order
    indices: list[int]  # positions in `paths` of the rows of `pixels`
    errors: list[tuple[int, str, ImageLoadError]] = field(default_factory=list)  # (index, name, error)

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> "ImageBatch":
        # Called by DataLoader(pin_memory=True) for custom batch types.
        return ImageBatch(self.pixels.pin_memory(), self.indices, self.errors)


class ImageFileDataset(Dataset):
    """`dataset[i] -> (i, tensor [3, S, S])`, or `(i, ImageLoadError)` when image i is bad."""

    def __init__(
        self,
        paths: Sequence[ImageSource],
        preprocess: Preprocess,
        *,
        max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
        draft: bool = False,
    ) -> None:
        self.paths = [p if not isinstance(p, os.PathLike) else os.fspath(p) for p in paths]
        self.names = [image_name(p) for p in self.paths]
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        path = self.paths[index]
        draft_size = self.preprocess.image_size if self.draft else None
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft_size=draft_size)
        except ImageLoadError as e:
            return index, e
        try:
            return index, self.preprocess(image)
        except (OSError, ValueError, TypeError, MemoryError) as e:
            # The file decoded but its pixels could not be prepared: report it, keep the rest.
            return index, ImageLoadError(self.names[index], f"{type(e).__name__}: {e}", "preprocess_failed")


class _CollateImages:
    """Splits a list of items into good pixels and error records (a class, so it pickles)."""

    def __init__(self, paths: Sequence[str], image_size: int) -> None:
        self.paths = paths
        self.image_size = image_size

    def __call__(self, items: list[Item]) -> ImageBatch:
        good = [(i, x) for i, x in items if isinstance(x, torch.Tensor)]
        errors = [(i, self.paths[i], x) for i, x in items if isinstance(x, ImageLoadError)]
        if good:
            pixels = torch.stack([x for _, x in good])
        else:
            pixels = torch.empty(0, 3, self.image_size, self.image_size)
        return ImageBatch(pixels=pixels, indices=[i for i, _ in good], errors=errors)


def iter_image_batches(
    paths: Sequence[ImageSource],
    preprocess: Preprocess,
    batch_size: int = 64,
    num_workers: Optional[int] = None,
    *,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    draft: bool = False,
    pin_memory: bool = False,
    multiprocessing_context: Optional[str] = None,
) -> Iterator[ImageBatch]:
    """Yield one `ImageBatch` per `batch_size` consecutive paths, in order.

    Decoding and preprocessing run in `num_workers` DataLoader worker processes (None: up to 8,
    one per CPU; 0: in this process). Each batch holds the good images of its slice of `paths`;
    a batch whose files all failed has `pixels` of shape [0, 3, S, S] and is still yielded, so
    every path is accounted for exactly once, in `indices` or in `errors`.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    dataset = ImageFileDataset(paths, preprocess, max_pixels=max_pixels, draft=draft)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_CollateImages(dataset.names, preprocess.image_size),
        pin_memory=pin_memory,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )
    return iter(loader)  # not a generator: argument errors surface at the call, workers start now
