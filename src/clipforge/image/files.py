"""Loading image files with errors that say which file failed and why.

`load_image` decodes a file fully (so every decoding error surfaces here, not later inside a
transform) and classifies failures into a short `ImageLoadError.code`. It never touches PIL's
global state: the pixel limit is an argument, and PIL's own bomb warning is silenced locally
because this check supersedes it.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from typing import Collection, Optional, Union

from PIL import Image

__all__ = ["ImageLoadError", "load_image", "DEFAULT_MAX_PIXELS", "SUPPORTED_MODES", "ERROR_CODES"]

PathLike = Union[str, "os.PathLike[str]"]

# PIL's own default (1024 * 1024 * 1024 // 4 // 3, ~89.5 Mpx), stated here so that it is ours.
DEFAULT_MAX_PIXELS = 89_478_485

# Modes whose conversion to RGB is well defined and tested against the references.
# LAB is left out: PIL's LAB -> RGB is not colour-managed; convert with PIL.ImageCms yourself.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
)

ERROR_CODES = {
    "missing": "no such file",
    "not_a_file": "the path is not a regular file",
    "unreadable": "the file cannot be read (permissions, I/O error)",
    "empty": "the file has zero bytes",
    "not_an_image": "PIL recognises no image format in the file",
    "truncated": "the image data ends early",
    "corrupt": "the image data cannot be decoded",
    "decompression_bomb": "the image has more pixels than the limit",
    "unsupported_mode": "the image's pixel mode is not supported",
    "preprocess_failed": "the image loaded but preprocessing raised",
}


class ImageLoadError(ValueError):
    """An image file could not be turned into pixels. `str()` names the file and the reason.

    Attributes: `path` (str), `reason` (human readable), `code` (one of `ERROR_CODES`).
    """

    def __init__(self, path: PathLike, reason: str, code: str = "corrupt") -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.code = code
        super().__init__(f"cannot load image {self.path!r}: {reason} [{code}]")

    # Exceptions pickle through `args`; errors cross DataLoader worker processes, so keep all fields.
    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.code))


def load_image(
    path: PathLike,
    *,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    modes: Collection[str] = SUPPORTED_MODES,
    draft_size: Optional[int] = None,
) -> Image.Image:
    """Open and fully decode an image file (its first frame); raise `ImageLoadError` on failure.

    max_pixels: refuse images with more pixels (width * height) than this; None disables the
        check. PIL still applies its own hard ceiling of 2 * `PIL.Image.MAX_IMAGE_PIXELS`
        (reported as "decompression_bomb" too); raising that is the application's decision.
    modes: pixel modes accepted; anything else is an "unsupported_mode" error.
    draft_size: opt-in fast path for JPEGs: let libjpeg decode at 1/2, 1/4 or 1/8 scale while
        the shortest side stays >= 2 * draft_size. Pixels then differ slightly from an exact
        decode (see docs/preprocessing.md); other formats ignore it.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file", "missing") from None
    except OSError as e:
        raise ImageLoadError(path, f"cannot stat: {e.strerror or e}", "unreadable") from None
    if not os.path.isfile(path):
        raise ImageLoadError(path, "not a regular file", "not_a_file")
    if st.st_size == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)", "empty")

    try:
        with open(path, "rb") as f:
            with warnings.catch_warnings():
                # Our max_pixels check below supersedes PIL's warning threshold.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(f)
            _check_pixels(path, image.size, max_pixels)
            if draft_size is not None and image.format == "JPEG":
                image.draft(image.mode, (2 * draft_size, 2 * draft_size))
            image.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, str(e), "decompression_bomb") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image format", "not_an_image") from None
    except PermissionError as e:
        raise ImageLoadError(path, f"permission denied: {e.strerror or e}", "unreadable") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as e:
        # The exception types PIL's decoders raise for bad data; anything else is a bug, not data.
        message = str(e) or type(e).__name__
        code = "truncated" if "truncated" in message.lower() or isinstance(e, EOFError) else "corrupt"
        raise ImageLoadError(path, f"{type(e).__name__}: {message}", code) from None

    if image.mode not in modes:
        raise ImageLoadError(path, f"pixel mode {image.mode!r} is not supported", "unsupported_mode")
    return image


def _check_pixels(path: str, size: tuple[int, int], max_pixels: Optional[int]) -> None:
    if max_pixels is None:
        return
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise ImageLoadError(
            path, f"{size[0]}x{size[1]} = {pixels} pixels exceeds max_pixels={max_pixels}", "decompression_bomb"
        )
