"""Image-text cosine similarity, as a matrix and as the heatmap of OpenAI's "Interacting with CLIP" notebook.

`similarity_matrix` is `normalize(image_features) @ normalize(text_features).T`. `plot_similarity`
draws it the way the notebook does (texts as rows, images as columns with thumbnails above, each
cell annotated) and writes a PNG. matplotlib is imported inside `plot_similarity` and used through
its object API with the Agg canvas, so pyplot's global backend and figure state are never touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from clipforge.encoding import encode_pixels, encode_tokens
from clipforge.errors import InvalidInputError, MissingExtraError

__all__ = ["similarity_matrix", "plot_similarity"]

PathLike = Union[str, "os.PathLike[str]"]

_THUMBNAIL_PX = 160  # thumbnails are shrunk before plotting: keeps the PNG small and drawing fast
_MAX_LABEL_CHARS = 60


@torch.no_grad()
def similarity_matrix(model: torch.nn.Module, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [n_images, n_texts] (float32, on the model's device) between `pixels`
    [n_images, 3, S, S] and `tokens` [n_texts, context_length]."""
    image = encode_pixels(model, pixels)  # [n_images, embed_dim], normalized in fp32
    text = encode_tokens(model, tokens)  # [n_texts, embed_dim]
    return image @ text.t()


def plot_similarity(
    matrix: torch.Tensor,
    images: Sequence[object],
    texts: Sequence[str],
    path: PathLike,
    *,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    title: str = "Cosine similarity between text and image features",
    dpi: int = 100,
) -> Path:
    """Write a heatmap of `matrix` [n_images, n_texts] with image thumbnails to `path` (PNG).

    `images` are PIL images or image file paths, one per row of `matrix`. The colour range is the
    data's own unless `vmin`/`vmax` are given (OpenAI's notebook fixes 0.1..0.3, which suits
    trained CLIP models, not every model).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("the heatmap (--png) needs matplotlib: pip install 'clipforge[plot]'") from None

    values = matrix.detach().float().cpu().numpy()
    if values.ndim != 2 or values.shape != (len(images), len(texts)):
        raise InvalidInputError(
            f"matrix must be [n_images={len(images)}, n_texts={len(texts)}], got shape {tuple(values.shape)}"
        )
    similarity = values.T  # the notebook's orientation: texts are rows, images are columns
    n_texts, n_images = similarity.shape
    thumbnails = [_thumbnail(image) for image in images]

    fig = Figure(figsize=(max(6.0, 1.3 * n_images + 5.0), max(4.0, 0.7 * n_texts + 3.0)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    heatmap = ax.imshow(similarity, vmin=vmin, vmax=vmax, aspect="equal")
    ax.set_yticks(range(n_texts), [_short(t) for t in texts])
    ax.set_xticks([])
    # Thumbnails sit above the matrix in data coordinates, one per column, as in the notebook.
    for i, thumb in enumerate(thumbnails):
        ax.imshow(thumb, extent=(i - 0.5, i + 0.5, -1.6, -0.6), origin="lower")
    for x in range(n_images):
        for y in range(n_texts):
            # Light text on the dark end of the colour map, dark text on the light end.
            color = "white" if heatmap.norm(similarity[y, x]) < 0.5 else "black"
            ax.text(x, y, f"{similarity[y, x]:.2f}", ha="center", va="center", size=9, color=color)
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_texts - 0.5, -2.0)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _thumbnail(image: object):
    """A small RGB copy of a PIL image or image file (the caller's image is not modified)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from clipforge.image import load_image

        image = load_image(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"images must be PIL images or file paths, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Flatten transparency onto white: dropping alpha would turn transparent clip-art black.
        rgba = image.convert("RGBA")
        thumb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        thumb = image.convert("RGB")  # convert() always copies
    thumb.thumbnail((_THUMBNAIL_PX, _THUMBNAIL_PX))
    # The notebook's images are square crops; pad to a square so every column has the same shape.
    side = max(thumb.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(thumb, ((side - thumb.width) // 2, (side - thumb.height) // 2))
    return canvas


def _short(text: str) -> str:
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 1] + "…"
