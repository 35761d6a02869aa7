"""Training-time augmentation without torchvision: random resized crop (+ optional flip), RGB, normalize.

`TrainTransform` reproduces open_clip's training transform (`image_transform(is_train=True)`:
torchvision `RandomResizedCrop(S, scale=(0.9, 1.0), interpolation=BICUBIC)`, `_convert_to_rgb`,
`ToTensor`, `Normalize(mean, std)`): the crop parameters are drawn with torchvision's algorithm
and the same random calls, so with a generator seeded like torch's global RNG the output is
bit-identical to torchvision's (tests/test_train_units.py checks it).

Randomness comes from an explicit `torch.Generator`, never global state: the data pipeline seeds
one per sample from (seed, epoch, sample), which makes augmentation independent of how samples
are spread over ranks and DataLoader workers, and makes resumed runs exact.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from clipforge.image.preprocess import to_8bit

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def random_resized_crop_params(
    width: int,
    height: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width), drawn exactly as torchvision's RandomResizedCrop.get_params."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return i, j, h, w
    # Fallback: a central crop with the aspect ratio clamped into range.
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainTransform:
    """Callable `(PIL image, generator) -> float32 tensor [3, S, S]`, normalized with the model's mean/std."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: Sequence[float] = (0.9, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        hflip: bool = False,
    ) -> None:
        if interpolation not in _FILTERS:
            raise ValueError(f"interpolation must be one of {sorted(_FILTERS)}, got {interpolation!r}")
        self.image_size = int(image_size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.hflip = hflip
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (f"TrainTransform(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r}, hflip={self.hflip})")

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = to_8bit(image)  # 16-bit greyscale scaled, as clipforge's Preprocess does
        top, left, h, w = random_resized_crop_params(image.width, image.height, self.scale, self.ratio, generator)
        # Crop then resize, in this order and with these PIL calls, as torchvision's PIL path does.
        image = image.crop((left, top, left + w, top + h))
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, _FILTERS[self.interpolation])
        if self.hflip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if image.mode != "RGB":
            if "transparency" in image.info:  # a palette key never changes RGB; avoid PIL's warning
                image = image.copy()
                del image.info["transparency"]
            image = image.convert("RGB")
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # [S, S, 3]
        x = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self._mean).div_(self._std)


def sample_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from integers (seed, epoch, sample, ...) through numpy's SeedSequence,
    so nearby keys give unrelated streams. Keys must be non-negative."""
    state = np.random.SeedSequence([int(k) for k in key] + [len(key)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
