"""Which tower a file's tensor belongs to, by its key: for reading one tower only.

One table for every family and format, on the keys as stored (wrapper prefixes such as `module.`
removed first): image-tower keys start with one of IMAGE_KEY_PREFIXES; the temperature and bias
of the logits are SHARED (both one-tower models keep them); everything else is the text tower's.
That holds for OpenAI / open_clip (`visual.`), transformers (`vision_model.`, `visual_projection`)
and every family clipforge reads; a family whose files break it adds its prefixes here.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

from .open_clip import strip_wrapper_prefix

Tower = Literal["image", "text", "shared"]

IMAGE_KEY_PREFIXES = ("visual.", "vision_model.", "visual_projection.")
SHARED_KEYS = frozenset({"logit_scale", "logit_bias"})


def key_tower(key: str) -> Tower:
    """"image", "text" or "shared" for a tensor key as stored in a file (any family, any format)."""
    bare = strip_wrapper_prefix(key)
    if bare in SHARED_KEYS:
        return "shared"
    if bare.startswith(IMAGE_KEY_PREFIXES):
        return "image"
    return "text"


def skip_for_tower(tower: str) -> Optional[Callable[[str], bool]]:
    """A predicate saying which keys a reader may leave unread when only `tower` is wanted."""
    if tower == "both":
        return None
    other = "text" if tower == "image" else "image"
    return lambda key: key_tower(key) == other
