"""Loading image files with errors that say which file failed and why.

`load_image` decodes a file fully (so every decoding error surfaces here, not later inside a
transform) and classifies failures into a short `ImageLoadError.code`. It never touches PIL's
global state: the pixel limit is an argument, and PIL's own bomb warning is silenced locally
because this check supersedes it.

Only an allow-list of formats is decoded (`FORMATS`): PIL would otherwise hand an EPS file,
whatever its name, to Ghostscript, a separate program run on untrusted input.

An image is a file path or an `ImageRef`: bytes at an offset of a file (a member of an uncompressed
tar shard, decoded straight from the shard) or bytes in memory.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Collection, Optional, Union

from PIL import Image

from clipforge.errors import ClipforgeError, InvalidInputError

__all__ = ["ImageLoadError", "ImageRef", "load_image", "DEFAULT_MAX_PIXELS", "SUPPORTED_MODES", "ERROR_CODES", "FORMATS"]

PathLike = Union[str, "os.PathLike[str]"]

# The formats clipforge decodes (PIL format names). Everything else is "not_an_image", even when PIL
# could open it: EPS/PS/PDF would run Ghostscript; exotic formats are attack surface nobody needs here.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

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
    "bad_path": "the path cannot name a file (e.g. it holds a NUL byte)",
}


@dataclass(frozen=True)
class ImageRef:
    """An image that is not a whole file of its own: `size` bytes at `offset` of the file at `path`
    (a member of an uncompressed tar), or `data` in memory. `name` is what messages call it."""

    name: str
    path: Optional[str] = None
    offset: int = 0
    size: Optional[int] = None
    data: Optional[bytes] = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise InvalidInputError("an ImageRef needs exactly one of `path` (with offset/size) or `data`")


ImageSource = Union[PathLike, ImageRef]


class ImageLoadError(ClipforgeError, ValueError):
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


def image_name(source: ImageSource) -> str:
    """What messages and manifests call an image: its path, or an ImageRef's name."""
    return source.name if isinstance(source, ImageRef) else os.fspath(source)


def load_image(
    path: ImageSource,
    *,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    modes: Collection[str] = SUPPORTED_MODES,
    draft_size: Optional[int] = None,
) -> Image.Image:
    """Open and fully decode an image file or `ImageRef` (its first frame); raise `ImageLoadError` on failure.

    max_pixels: refuse images with more pixels (width * height) than this; None disables the
        check. PIL still applies its own hard ceiling of 2 * `PIL.Image.MAX_IMAGE_PIXELS`
        (reported as "decompression_bomb" too); raising that is the application's decision.
    modes: pixel modes accepted; anything else is an "unsupported_mode" error.
    draft_size: opt-in fast path for JPEGs: let libjpeg decode at 1/2, 1/4 or 1/8 scale while
        the shortest side stays >= 2 * draft_size. Pixels then differ slightly from an exact
        decode (see docs/preprocessing.md); other formats ignore it.
    """
    if isinstance(path, ImageRef):
        ref, path = path, path.name
        if ref.data is not None:
            data = ref.data
        else:
            try:
                with open(ref.path, "rb") as f:  # type: ignore[arg-type]
                    f.seek(ref.offset)
                    data = f.read(-1 if ref.size is None else ref.size)
            except FileNotFoundError:
                raise ImageLoadError(path, f"no such file: {ref.path}", "missing") from None
            except OSError as e:
                raise ImageLoadError(path, f"cannot read: {e.strerror or e}", "unreadable") from None
            if ref.size is not None and len(data) < ref.size:
                raise ImageLoadError(path, f"only {len(data)} of {ref.size} bytes are there", "truncated")
        if not data:
            raise ImageLoadError(path, "the image is empty (0 bytes)", "empty")
        return _decode(path, io.BytesIO(data), max_pixels, modes, draft_size)

    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file", "missing") from None
    except ValueError as e:  # "embedded null byte"
        raise ImageLoadError(path.replace("\0", "\\0"), f"not a usable path: {e}", "bad_path") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageLoadError(path, "a loop of symbolic links", "unreadable") from None
        raise ImageLoadError(path, f"cannot stat: {e.strerror or e}", "unreadable") from None
    if not os.path.isfile(path):
        raise ImageLoadError(path, "not a regular file", "not_a_file")
    if st.st_size == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)", "empty")
    try:
        f = open(path, "rb")
    except PermissionError as e:
        raise ImageLoadError(path, f"permission denied: {e.strerror or e}", "unreadable") from None
    except OSError as e:
        raise ImageLoadError(path, f"cannot open: {e.strerror or e}", "unreadable") from None
    with f:
        return _decode(path, f, max_pixels, modes, draft_size)


def _decode(
    path: str, f: BinaryIO, max_pixels: Optional[int], modes: Collection[str], draft_size: Optional[int]
) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our max_pixels check below supersedes PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(f, formats=FORMATS)
        _check_pixels(path, image.size, max_pixels)
        if draft_size is not None and image.format == "JPEG":
            image.draft(image.mode, (2 * draft_size, 2 * draft_size))
        image.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, str(e), "decompression_bomb") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, f"not an image in a decoded format ({', '.join(FORMATS)})", "not_an_image") from None
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
