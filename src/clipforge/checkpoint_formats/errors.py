"""The one exception this package raises for anything wrong with a checkpoint."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file or state dict that clipforge refuses to read, convert or write.

    The message always says what was wrong (a refused global, an unknown key, a shape) and,
    where there is one, how to fix it.
    """
