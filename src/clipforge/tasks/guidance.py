"""CLIP guidance: a differentiable path from an image tensor to CLIP space, and the loss that steers it.

This is the recipe of CLIP-guided diffusion / VQGAN+CLIP (Katherine Crowson's notebooks): take random
square cutouts of the image, resize each to the model's input size, normalize with the model's own
mean/std, embed them, and pull the embeddings toward a text embedding with the squared great-circle
distance. Everything is torch ops (F.interpolate with antialiasing, no torchvision), so gradients
reach the image. The cutouts differ from the notebooks in one respect: they are resized with
antialiased interpolation (the notebooks use adaptive average pooling).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F

from clipforge.configs import PreprocessConfig
from clipforge.errors import InvalidInputError
from clipforge.image import Preprocess
from clipforge.models import ClipModel

InputRange = Literal["[-1,1]", "[0,1]"]
Reduction = Literal["sum", "mean", "none"]


def spherical_distance_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between directions (inputs are normalized here), over the last dim.

    For unit vectors at angle t, |x - y| = 2 sin(t / 2), so 2 * arcsin(|x - y| / 2)^2 = t^2 / 2:
    half the squared angle, smooth where the cosine's gradient vanishes. Broadcasts like `x - y`.
    """
    x = F.normalize(image_embeds, dim=-1)
    y = F.normalize(text_embeds, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


class ClipGuidance:
    """Embed images [B, 3, H, W] through random cutouts; `loss` pulls them toward text embeddings.

    preprocess_config: the model's PreprocessConfig (or the Preprocess from clipforge.load): its
        mean/std normalize the cutouts and its interpolation ("bicubic"/"bilinear") resizes them.
    cutouts: views per image when `augment` is on.
    cut_power: cutout side = min_size + (max_size - min_size) * u ** cut_power, u ~ U(0, 1), where
        max_size is the image's shorter side and min_size min(that, the model's size): >1 favours
        small cutouts (detail), <1 large ones (composition).
    augment: random cutouts (and random horizontal flips). Off: one view per image, its largest
        centred square resized to the model's size, deterministic.
    input_range: what pixel values mean: "[-1,1]" (diffusion models' range) or "[0,1]".
    """

    def __init__(
        self,
        model: ClipModel,
        preprocess_config: Union[PreprocessConfig, Preprocess, None] = None,
        cutouts: int = 8,
        cut_power: float = 1.0,
        augment: bool = True,
        input_range: InputRange = "[-1,1]",
    ) -> None:
        if isinstance(preprocess_config, Preprocess):
            preprocess_config = preprocess_config.config
        config = preprocess_config or model.record.preprocess  # the model's own numerics
        if config.image_size != model.config.image_size:
            raise InvalidInputError(f"preprocess_config is for {config.image_size}px, the model takes {model.config.image_size}px")
        if input_range not in ("[-1,1]", "[0,1]"):
            raise InvalidInputError(f"input_range must be '[-1,1]' or '[0,1]', got {input_range!r}")
        if config.interpolation not in ("bicubic", "bilinear"):
            raise InvalidInputError(f"interpolation must be 'bicubic' or 'bilinear', got {config.interpolation!r}")
        if cutouts < 1:
            raise InvalidInputError(f"cutouts must be at least 1, got {cutouts}")
        if cut_power <= 0:
            raise InvalidInputError(f"cut_power must be positive, got {cut_power}")
        self.model = model
        self.config = config
        self.size = config.image_size
        self.cutouts = int(cutouts)
        self.cut_power = float(cut_power)
        self.augment = bool(augment)
        self.input_range = input_range

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Pixels in `input_range` -> the model's normalized input values (same shape)."""
        if self.input_range == "[-1,1]":
            image = image.add(1).div(2)
        mean = image.new_tensor(self.config.mean).view(1, 3, 1, 1)
        std = image.new_tensor(self.config.std).view(1, 3, 1, 1)
        return (image - mean) / std

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """[N, 3, h, w] -> [N, 3, S, S] with antialiased interpolation (S = the model's size)."""
        return F.interpolate(image, size=(self.size, self.size), mode=self.config.interpolation,
                             align_corners=False, antialias=True)

    def views(self, image: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Model-ready views [n_views * B, 3, S, S] (view-major: view v of image b is row v * B + b)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise InvalidInputError(f"image must be [batch, 3, height, width], got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        if not self.augment:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            return self.normalize(self.resize(image[:, :, top : top + side, left : left + side]))
        max_size = min(height, width)
        min_size = min(height, width, self.size)
        views = []
        for _ in range(self.cutouts):
            # Sizes and offsets come from a CPU generator so a seed reproduces them on any device.
            u = torch.rand((), generator=generator).item()
            side = int(u**self.cut_power * (max_size - min_size) + min_size)
            top = int(torch.randint(0, height - side + 1, (), generator=generator))
            left = int(torch.randint(0, width - side + 1, (), generator=generator))
            view = self.resize(image[:, :, top : top + side, left : left + side])
            if torch.rand((), generator=generator).item() < 0.5:
                view = view.flip(-1)
            views.append(view)
        return self.normalize(torch.cat(views))

    def embed(self, image: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Image embeddings of every view, [n_views, B, embed_dim] (n_views = 1 without augment)."""
        batch = image.shape[0]
        embeds = self.model.encode_image(self.views(image, generator))
        return embeds.view(-1, batch, embeds.shape[-1])

    __call__ = embed

    def loss(
        self,
        image: torch.Tensor,
        text_embeds: torch.Tensor,
        reduction: Reduction = "sum",
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Spherical distance of each view to the text embedding, averaged over views.

        text_embeds: [D] or [1, D] (one target for all images) or [B, D] (one per image).
        reduction: over images; "sum" (default, as CLIP-guided diffusion: each image's gradient does
        not shrink with the batch), "mean", or "none" ([B]).
        """
        embeds = self.embed(image, generator)  # [views, B, D]
        if text_embeds.dim() == 1:
            text_embeds = text_embeds[None]
        if text_embeds.dim() != 2 or text_embeds.shape[0] not in (1, image.shape[0]):
            raise InvalidInputError(f"text_embeds must be [D], [1, D] or [{image.shape[0]}, D], got {tuple(text_embeds.shape)}")
        per_image = spherical_distance_loss(embeds, text_embeds.to(embeds.dtype)[None]).mean(dim=0)  # [B]
        if reduction == "sum":
            return per_image.sum()
        if reduction == "mean":
            return per_image.mean()
        if reduction == "none":
            return per_image
        raise InvalidInputError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
