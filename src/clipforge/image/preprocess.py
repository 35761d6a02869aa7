"""PIL image -> normalized float tensor, bit-for-bit the pipeline the weights were trained with.

Two pipelines, chosen by `PreprocessConfig.mode`, each with two resize modes (`resize_mode`):
"shortest" (the shortest side to S, then a centre crop: CLIP) or "squash" (straight to S x S,
aspect ratio ignored, no crop: SigLIP; open_clip's `resize_mode="squash"` in "openai" mode,
transformers' `SiglipImageProcessor` in "hf" mode).

* "openai" reproduces OpenAI's `clip` preprocess (and open_clip's `image_transform(n, is_train=False)`):
  torchvision `Resize(S)` on the shortest side, `CenterCrop(S)`, RGB conversion *after* the
  resize, `ToTensor`, `Normalize`. torchvision is not imported: its PIL code path is just a
  few PIL calls plus two rounding rules, reproduced here.
* "hf" reproduces transformers' `CLIPImageProcessor` (v5, torchvision backend on CPU): RGB
  conversion first (alpha composited on white), resize of a uint8 tensor with torch's
  antialiased bicubic kernel, center crop with floored offsets, fused rescale + normalize.
  `hf_backend="pil"` reproduces the PIL backend instead (`CLIPImageProcessorPil` in v5, the
  default `CLIPImageProcessor` of transformers 4.x): the resize is PIL's.

This module knows nothing about models: it sees a config and pixels, nothing else.
Deviation from both references, by design: 16-bit greyscale images ("I;16*", and "I" holding
values above 255) are scaled to 8 bits first; the references clip them and return white.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from clipforge.configs import PreprocessConfig
from clipforge.errors import InvalidInputError

__all__ = ["Preprocess", "resized_shortest_side", "to_8bit", "composite_on_white", "has_alpha"]

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def resized_shortest_side(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shortest side to `size`.

    The long side is truncated, not rounded: `int(size * long / short)`, as torchvision's
    `Resize(int)` and transformers' `get_resize_output_image_size` both do.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def has_alpha(image: Image.Image) -> bool:
    """True when the image carries transparency: an alpha band or a transparency key.

    Same test as transformers' `convert_to_rgb` (so LAB's "A" band counts, as there).
    """
    return "A" in image.getbands() or image.info.get("transparency") is not None


def composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten transparency onto an opaque white background and return an RGB image."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit greyscale to 8-bit "L"; any other image is returned unchanged.

    PIL's `convert("RGB")` clips integer pixels at 255, so a 16-bit PNG becomes (nearly) all
    white in both references. Here v -> round(v * 255 / 65535). Mode "I" is treated as 16-bit
    only when it holds values above 255 (values above 65535 and below 0 are clipped); "I"
    images within 0..255 are left alone, and there the references are already right.
    Any transparency key of the 16-bit image is dropped.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
    elif image.mode == "I" and image.getextrema()[1] > 255:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    else:
        return image
    # Integer rounding keeps this exact and platform independent.
    scaled = (values * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8 -> mode "L"


# Wider than this (long side / short side) is refused; the widest real clip art (dividers) is ~30:1.
MAX_ASPECT_RATIO = 400


class Preprocess:
    """Callable: `PIL.Image -> torch.float32 tensor [3, S, S]`, S = `config.image_size`.

    alpha_on_white: flatten transparency onto white before anything else. `None` (default)
        means "whatever the mode's reference does": off for "openai" (alpha is dropped after
        a premultiplied resize, so fully transparent areas mostly come out black), on for "hf"
        (transformers composites on white).
    exif_transpose: apply the EXIF orientation tag first. Off by default, like both references.
    hf_backend: for mode "hf" only: which transformers backend to match, "torchvision" (the
        v5 `CLIPImageProcessor`) or "pil" (v5 `CLIPImageProcessorPil`, v4 `CLIPImageProcessor`).
        They differ by a few uint8 levels after the resize (up to 0.09 after normalization).
    """

    def __init__(
        self,
        config: PreprocessConfig = PreprocessConfig(),
        *,
        alpha_on_white: Optional[bool] = None,
        exif_transpose: bool = False,
        hf_backend: Literal["torchvision", "pil"] = "torchvision",
    ) -> None:
        if config.mode not in ("openai", "hf"):
            raise InvalidInputError(f"PreprocessConfig.mode must be 'openai' or 'hf', got {config.mode!r}")
        if config.interpolation not in _PIL_FILTERS:
            raise InvalidInputError(f"interpolation must be one of {sorted(_PIL_FILTERS)}, got {config.interpolation!r}")
        if hf_backend not in ("torchvision", "pil"):
            raise InvalidInputError(f"hf_backend must be 'torchvision' or 'pil', got {hf_backend!r}")
        if config.image_size < 1:
            raise InvalidInputError(f"image_size must be positive, got {config.image_size}")
        if config.resize_mode not in ("shortest", "squash"):
            raise InvalidInputError(f"resize_mode must be 'shortest' or 'squash', got {config.resize_mode!r}")
        self.config = config
        self.alpha_on_white = (config.mode == "hf") if alpha_on_white is None else bool(alpha_on_white)
        self.exif_transpose = exif_transpose
        self.hf_backend = hf_backend
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def __repr__(self) -> str:
        c = self.config
        backend = f", hf_backend={self.hf_backend!r}" if c.mode == "hf" else ""
        squash = ", resize_mode='squash'" if c.resize_mode == "squash" else ""
        return (
            f"Preprocess(mode={c.mode!r}{backend}{squash}, image_size={c.image_size}, "
            f"interpolation={c.interpolation!r}, mean={tuple(c.mean)}, std={tuple(c.std)}, "
            f"alpha_on_white={self.alpha_on_white}, exif_transpose={self.exif_transpose})"
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"Preprocess expects a PIL.Image.Image, got {type(image).__name__}")
        # The shortest side is resized to S first: a 1 x 4000 strip would become S x 896,000 pixels
        # (about a gigabyte) before the crop keeps an S x S sliver of it. Such images are refused
        # (in both resize modes, so that one image is accepted or refused whatever the model).
        long, short = max(image.size), max(1, min(image.size))
        if long / short > MAX_ASPECT_RATIO:
            raise InvalidInputError(
                f"the image is {image.width}x{image.height}: an aspect ratio over {MAX_ASPECT_RATIO}:1 is refused "
                f"(resizing its short side to {self.config.image_size} px would need {long * self.config.image_size // short:,} px)"
            )
        if self.exif_transpose:
            image = ImageOps.exif_transpose(image)
        image = to_8bit(image)
        if self.alpha_on_white and has_alpha(image):
            image = composite_on_white(image)
        if self.config.mode == "openai":
            return self._openai(image)
        if self.hf_backend == "pil":
            return self._hf_pil(image)
        return self._hf(image)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess a sequence of images into one tensor [N, 3, S, S] (N may be 0)."""
        if len(images) == 0:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack([self(image) for image in images])

    # -- the two pipelines ------------------------------------------------------------------

    def _new_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) after the resize step."""
        size = self.config.image_size
        if self.config.resize_mode == "squash":
            return size, size
        return resized_shortest_side(image.width, image.height, size)

    def _openai(self, image: Image.Image) -> torch.Tensor:
        size = self.config.image_size
        new_size = self._new_size(image)
        if new_size != image.size:  # torchvision skips the resize when the size already fits
            # PIL itself swaps in NEAREST for "1" and "P" and premultiplies alpha for LA/RGBA,
            # exactly as it does under torchvision.
            image = image.resize(new_size, _PIL_FILTERS[self.config.interpolation])
        image = _center_crop_openai(image, size)  # a no-op after a squash
        rgb = _convert_rgb(image)  # after the resize, as OpenAI does: alpha is simply dropped
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))  # [S, S, 3]
        x = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)  # ToTensor
        return x.sub_(self._mean).div_(self._std)

    def _hf(self, image: Image.Image) -> torch.Tensor:
        size = self.config.image_size
        image = _convert_rgb(image)  # alpha, if wanted, was composited already
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # [3, H, W]
        new_w, new_h = self._new_size(image)
        if (new_w, new_h) != image.size:
            # torch's CPU uint8 kernel: antialiased, rounds and saturates to uint8, as the
            # torchvision backend of transformers does on CPU.
            pixels = F.interpolate(
                pixels[None], size=(new_h, new_w), mode=self.config.interpolation, align_corners=False, antialias=True
            )[0]
        pixels = _center_crop_hf(pixels, size)
        # Rescale and normalize fused into one subtraction and division, as transformers does.
        mean, std = self._mean * 255.0, self._std * 255.0
        return pixels.to(torch.float32).sub_(mean).div_(std)

    def _hf_pil(self, image: Image.Image) -> torch.Tensor:
        size = self.config.image_size
        image = _convert_rgb(image)
        # The PIL backend resizes even when the size already fits (PIL then returns a copy).
        image = image.resize(self._new_size(image), _PIL_FILTERS[self.config.interpolation])
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # [3, H, W]
        pixels = _center_crop_hf_pil(pixels, size)
        # Rescale in float64 then round to float32, then normalize in float32, as its numpy code does.
        x = pixels.to(torch.float64).mul_(1 / 255).to(torch.float32)
        return x.sub_(self._mean).div_(self._std)


def _convert_rgb(image: Image.Image) -> Image.Image:
    """`image.convert("RGB")`, minus PIL's warning about palette transparency.

    A transparency key never changes the RGB pixels; PIL still warns on every palette image
    whose key is per-entry alpha. Dropping alpha here is the documented behaviour, so the key
    is removed first (from a copy: the caller's image is never modified).
    """
    if image.mode == "RGB":
        return image
    if "transparency" in image.info:
        image = image.copy()
        del image.info["transparency"]
    return image.convert("RGB")


def _center_crop_openai(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop on a PIL image: zero padding if too small, rounded offsets."""
    width, height = image.size
    if width == size and height == size:
        return image
    # Too small: torchvision pads (left/top get the floor half) to exactly the crop size along
    # that axis. PIL's crop fills outside the image with zeros, which is the same thing.
    if width < size:
        left = -((size - width) // 2)
    else:
        left = int(round((width - size) / 2.0))
    if height < size:
        top = -((size - height) // 2)
    else:
        top = int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _center_crop_hf(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """transformers' center crop on [C, H, W]: zero padding if too small, floored offsets."""
    _, height, width = pixels.shape
    if width < size or height < size:
        pad_w, pad_h = max(size - width, 0), max(size - height, 0)
        # (left, right, top, bottom): the floor half goes left/top.
        pixels = F.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        _, height, width = pixels.shape
    top = int((height - size) / 2.0)
    left = int((width - size) / 2.0)
    return pixels[:, top : top + size, left : left + size]


def _center_crop_hf_pil(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """transformers' numpy center crop on [C, H, W]: floored offsets; if too small, zero padding
    with the ceil half on the left/top (the opposite of torchvision's)."""
    _, height, width = pixels.shape
    if width >= size and height >= size:
        top, left = (height - size) // 2, (width - size) // 2
        return pixels[:, top : top + size, left : left + size]
    pad_w, pad_h = max(size - width, 0), max(size - height, 0)
    pixels = F.pad(pixels, (pad_w - pad_w // 2, pad_w // 2, pad_h - pad_h // 2, pad_h // 2))
    _, height, width = pixels.shape
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[:, top : top + size, left : left + size]
