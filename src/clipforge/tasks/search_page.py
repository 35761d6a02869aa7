"""A self-contained HTML page of search results: thumbnails inlined as base64 JPEG data URIs.

Why inline: the page can be mailed, archived or opened on another machine without the images.
Thumbnails are made with PIL; an image that cannot be read gets a labelled placeholder instead.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Optional, Sequence, Union

from PIL import Image

__all__ = ["thumbnail_data_uri", "thumbnail_jpeg", "render_results_page", "write_results_page"]

THUMBNAIL_SIZE = 192


def thumbnail_data_uri(path: str, size: int = THUMBNAIL_SIZE) -> str:
    """`data:image/jpeg;base64,...` of a thumbnail of the image at `path` (a file or `shard.tar::member`).

    Raises `ImageLoadError` when the image cannot be read.
    """
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(path, size)).decode("ascii")


def thumbnail_jpeg(path: str, size: int = THUMBNAIL_SIZE) -> bytes:
    """JPEG bytes of a thumbnail (at most `size` x `size`, transparency flattened onto white) of the
    image at `path` (a file or `shard.tar::member`). Raises `ImageLoadError` when it cannot be read.
    """
    from clipforge.image import load_image
    from clipforge.sources import image_source_of

    image = load_image(image_source_of(path)).copy()
    image.thumbnail((size, size))
    if image.mode != "RGB":
        # Flatten transparency onto white, as a browser would show it on this page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _figure(path: str, caption: str, size: int) -> str:
    from clipforge.image import ImageLoadError

    try:
        picture = f'<img src="{thumbnail_data_uri(path, size)}" alt="{html.escape(os.path.basename(path))}">'
    except ImageLoadError as e:
        picture = f'<div class="missing">unavailable<br>[{html.escape(e.code)}]</div>'
    return (
        f'<figure>{picture}<figcaption>{caption}<br><span class="path" title="{html.escape(path)}">'
        f"{html.escape(path)}</span></figcaption></figure>"
    )


def render_results_page(
    query: str,
    paths: Sequence[str],
    scores: Sequence[float],
    *,
    query_image: Optional[str] = None,
    title: str = "clipforge search",
    thumbnail_size: int = THUMBNAIL_SIZE,
) -> str:
    """The HTML text: the query (text, or its image) and a grid of ranked results with scores."""
    head = f"<h1>{html.escape(title)}</h1><p class=\"query\">query: {html.escape(query)}</p>"
    if query_image is not None:
        head += _figure(query_image, "query image", thumbnail_size)
    grid = "".join(
        _figure(path, f"#{rank} &middot; score {score:.4f}", thumbnail_size)
        for rank, (path, score) in enumerate(zip(paths, scores), 1)
    )
    width = thumbnail_size + 16
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}: {html.escape(query)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ width: {width}px; margin: 0; display: inline-block; vertical-align: top; }}
figure img, .missing {{ max-width: {thumbnail_size}px; max-height: {thumbnail_size}px; display: block; }}
.missing {{ width: {thumbnail_size}px; height: {thumbnail_size // 2}px; background: #eee; color: #a00; text-align: center; padding-top: 1em; }}
figcaption {{ font-size: 12px; }}
.path {{ color: #555; word-break: break-all; }}
</style></head>
<body>{head}
<div class="grid">{grid}</div>
</body></html>
"""


def write_results_page(
    out_path: Union[str, os.PathLike],
    query: str,
    paths: Sequence[str],
    scores: Sequence[float],
    **kwargs: object,
) -> str:
    """Write `render_results_page(...)` to `out_path` (UTF-8); returns the path."""
    text = render_results_page(query, paths, scores, **kwargs)  # type: ignore[arg-type]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(out_path)
