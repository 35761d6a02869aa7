"""The one exception this package raises for anything wrong with a checkpoint."""

from __future__ import annotations

from ..errors import ClipforgeError


class CheckpointError(ClipforgeError, ValueError):
    """A checkpoint file or state dict that clipforge refuses to read, convert or write.

    The message always says what was wrong (a refused global, an unknown key, a shape, a size the
    file cannot hold) and, where there is one, how to fix it. It derives from `ClipforgeError` (the
    CLI prints it on one line) and from `ValueError` (older callers catch that).
    """
