"""Image preprocessing: PIL images or files -> normalized tensors, as the references make them.

`Preprocess` turns one `PIL.Image` into `[3, S, S]` exactly as OpenAI's `clip` (mode "openai")
or transformers' `CLIPImageProcessor` (mode "hf") does; `load_image` decodes files with clear
errors; `iter_image_batches` does both in DataLoader workers. See docs/preprocessing.md.
Nothing here imports torchvision.
"""

from clipforge.image.batches import ImageBatch, ImageFileDataset, iter_image_batches
from clipforge.image.files import (
    DEFAULT_MAX_PIXELS,
    ERROR_CODES,
    FORMATS,
    SUPPORTED_MODES,
    ImageLoadError,
    ImageRef,
    ImageSource,
    image_name,
    load_image,
)
from clipforge.image.preprocess import Preprocess

__all__ = [
    "Preprocess",
    "load_image",
    "ImageRef",
    "ImageSource",
    "image_name",
    "ImageLoadError",
    "FORMATS",
    "ImageBatch",
    "ImageFileDataset",
    "iter_image_batches",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_MODES",
    "ERROR_CODES",
]
