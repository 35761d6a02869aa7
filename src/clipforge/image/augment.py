"""Training-time augmentation without torchvision: random resized crop (+ optional flip), RGB, normalize;
optionally style augmentations (stroke width, background colour, colour jitter, greyscale).

`TrainTransform` reproduces open_clip's training transform (`image_transform(is_train=True)`:
torchvision `RandomResizedCrop(S, scale=(0.9, 1.0), interpolation=BICUBIC)`, `_convert_to_rgb`,
`ToTensor`, `Normalize(mean, std)`): the crop parameters are drawn with torchvision's algorithm
and the same random calls, so with a generator seeded like torch's global RNG the output is
bit-identical to torchvision's (tests/test_train_units.py checks it).

The style augmentations are off by default (then no random number is drawn for them, so the
default output stays torchvision's). They exist for small from-scratch runs on drawings, where a
model otherwise learns the data set's line weights, white backdrops and palettes instead of content.

Randomness comes from an explicit `torch.Generator`, never global state: the data pipeline seeds
one per sample from (seed, epoch, sample), which makes augmentation independent of how samples
are spread over ranks and DataLoader workers, and makes resumed runs exact.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from clipforge.errors import InvalidInputError
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
        stroke_p: float = 0.0,
        background_p: float = 0.0,
        color_jitter: float = 0.0,
        hue_jitter: float = 0.0,
        grayscale_p: float = 0.0,
        outline_p: float = 0.0,
        silhouette_p: float = 0.0,
    ) -> None:
        if interpolation not in _FILTERS:
            raise InvalidInputError(f"interpolation must be one of {sorted(_FILTERS)}, got {interpolation!r}")
        for name, value in (("stroke_p", stroke_p), ("background_p", background_p), ("grayscale_p", grayscale_p),
                            ("color_jitter", color_jitter), ("outline_p", outline_p), ("silhouette_p", silhouette_p)):
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= hue_jitter <= 0.5:
            raise InvalidInputError(f"hue_jitter must be in [0, 0.5] (a fraction of the colour wheel), got {hue_jitter}")
        self.stroke_p, self.background_p, self.grayscale_p = stroke_p, background_p, grayscale_p
        self.color_jitter, self.hue_jitter = color_jitter, hue_jitter
        self.outline_p, self.silhouette_p = outline_p, silhouette_p
        self.image_size = int(image_size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.hflip = hflip
        self._mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (f"TrainTransform(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r}, hflip={self.hflip}, stroke_p={self.stroke_p}, "
                f"background_p={self.background_p}, color_jitter={self.color_jitter}, "
                f"hue_jitter={self.hue_jitter}, grayscale_p={self.grayscale_p}, outline_p={self.outline_p}, "
                f"silhouette_p={self.silhouette_p})")

    def __call__(self, image: Image.Image, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Augment one image. `generator` None draws from torch's global RNG, as torchvision's transforms do."""
        image = to_8bit(image)  # 16-bit greyscale scaled, as clipforge's Preprocess does
        top, left, h, w = random_resized_crop_params(image.width, image.height, self.scale, self.ratio, generator)
        # Crop then resize, in this order and with these PIL calls, as torchvision's PIL path does.
        image = image.crop((left, top, left + w, top + h))
        if self.stroke_p and _chance(self.stroke_p, generator):
            # Before the resize, at the stored resolution: a 3x3 min (max) filter thickens (thins) dark lines.
            thicker = _chance(0.5, generator)
            image = _rgb(image).filter(ImageFilter.MinFilter(3) if thicker else ImageFilter.MaxFilter(3))
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, _FILTERS[self.interpolation])
        if self.hflip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = _rgb(image)
        # At most one of the drawing-style changes: line art, or a flat one-colour silhouette.
        if self.outline_p and _chance(self.outline_p, generator):
            image = _outline(image)
        elif self.silhouette_p and _chance(self.silhouette_p, generator):
            image = _silhouette(image, generator)
        if self.background_p and _chance(self.background_p, generator):
            image = _swap_background(image, generator)
        if self.color_jitter or self.hue_jitter:
            image = self._jitter(image, generator)
        if self.grayscale_p and _chance(self.grayscale_p, generator):
            image = image.convert("L").convert("RGB")
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # [S, S, 3]
        x = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self._mean).div_(self._std)


    def _jitter(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        """Brightness, contrast and saturation factors in [1 - j, 1 + j], hue turned by up to +-hue_jitter."""
        j = self.color_jitter
        if j:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhance(image).enhance(_uniform(1 - j, 1 + j, generator))
        if self.hue_jitter:
            shift = int(round(_uniform(-self.hue_jitter, self.hue_jitter, generator) * 256))
            h, s, v = image.convert("HSV").split()
            h = h.point(lambda x: (x + shift) % 256)
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
        return image


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "transparency" in image.info:  # a palette key never changes RGB; avoid PIL's warning
        image = image.copy()
        del image.info["transparency"]
    return image.convert("RGB")


def _chance(p: float, generator: torch.Generator) -> bool:
    return torch.rand(1, generator=generator).item() < p


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=generator).item()


def _outline(image: Image.Image) -> Image.Image:
    """The drawing as black lines on white: edges of the greyscale image, thresholded."""
    edges = np.array(image.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.uint8)
    lines = np.where(edges > 40, 0, 255).astype(np.uint8)
    return Image.fromarray(lines, "L").convert("RGB")


def _silhouette(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Every non-backdrop pixel in one random colour, darker where the drawing was dark (its lines stay)."""
    pixels = np.array(image, dtype=np.float32)
    foreground = pixels.min(axis=-1) < 245  # [H, W]
    colour = torch.randint(0, 256, (3,), generator=generator).numpy().astype(np.float32)
    shade = (pixels.mean(axis=-1, keepdims=True) < 60).astype(np.float32)  # near-black lines stay black
    filled = colour * (1 - shade)
    out = np.where(foreground[..., None], filled, 255.0).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def _swap_background(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Near-white pixels (the white backdrop clip art is rendered on) -> a random colour, or a
    random two-colour gradient, so that "white around the drawing" stops being a feature."""
    pixels = np.array(image, dtype=np.uint8)
    background = pixels.min(axis=-1) >= 245  # [H, W]
    if not background.any():
        return image
    colours = torch.randint(0, 256, (2, 3), generator=generator).numpy().astype(np.float32)
    if _chance(0.5, generator):
        fill = np.broadcast_to(colours[0], pixels.shape)
    else:  # a vertical or horizontal gradient
        n = pixels.shape[0] if _chance(0.5, generator) else pixels.shape[1]
        t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
        ramp = colours[0] * (1 - t) + colours[1] * t  # [n, 3]
        fill = ramp[:, None, :] if n == pixels.shape[0] else ramp[None, :, :]
        fill = np.broadcast_to(fill, pixels.shape)
    out = np.where(background[..., None], fill, pixels).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def sample_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from integers (seed, epoch, sample, ...) through numpy's SeedSequence,
    so nearby keys give unrelated streams. Keys must be non-negative."""
    state = np.random.SeedSequence([int(k) for k in key] + [len(key)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
