"""Shared fixtures: real images (Debian's openclipart-png clip-art) and real captions, prepared by the references."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (references, image_fixtures, ...)
import image_fixtures  # noqa: E402,F401  (fixes where the clip-art corpus lives before any test moves the caches)

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

# Real captions: Debian package descriptions (short and one far past 77 tokens) and clip-art titles.
CAPTIONS = [
    "a diagram",
    "Red Rose (still life), red flower painting",
    "GNU C compiler - the compiler for the C programming language",
    "cat sitting on a wooden chair, cartoon clip-art",
    "Python interface to the Tk GUI toolkit & friends: \u201ccurly quotes\u201d and caf\u00e9",
    " ".join(
        "This package contains the documentation and examples for a collection of command line tools "
        "that read, write and convert images between many formats, with support for transparency, "
        "palettes, colour profiles and metadata of every kind".split() * 2
    ),
]


@functools.lru_cache(maxsize=None)
def _real_images() -> tuple:
    from image_fixtures import corpus_sample
    from PIL import Image

    return tuple(Image.open(p).copy() for p in corpus_sample(4))


@pytest.fixture(scope="session")
def real_pixels():
    """`real_pixels(size)`: 4 real clip-art images through OpenAI's own preprocess at that size, [4, 3, size, size]."""
    import clip

    @functools.lru_cache(maxsize=None)
    def make(size: int) -> torch.Tensor:
        transform = clip.clip._transform(size)
        return torch.stack([transform(image) for image in _real_images()])

    return make


@pytest.fixture(scope="session")
def real_tokens() -> torch.Tensor:
    """The captions through OpenAI's own tokenizer (truncating the long one), [6, 77]."""
    import clip

    return clip.tokenize(CAPTIONS, truncate=True)
