"""The base of every exception clipforge raises for a problem the user can fix.

`clipforge.cli.main` catches `ClipforgeError` in one place and prints its message on one line
(no traceback, non-zero exit; `CLIPFORGE_DEBUG=1` shows the traceback). Library callers can catch it
to handle all of clipforge's user-facing errors at once; each subclass also derives from the
built-in type that fits it (ValueError, FileNotFoundError, ...), so `except ValueError` keeps working.
Anything else escaping the CLI is a bug in clipforge, and its traceback is shown.
"""

from __future__ import annotations

__all__ = ["ClipforgeError", "InvalidInputError", "MissingFileError", "ClipforgeRuntimeError", "MissingExtraError",
           "AssumptionWarning"]


class ClipforgeError(Exception):
    """A problem with the input, a file, a name or the environment, stated in one line."""


class InvalidInputError(ClipforgeError, ValueError):
    """An argument, a value in a file, or a combination of them that clipforge cannot use."""


class MissingFileError(ClipforgeError, FileNotFoundError):
    """A file or folder that should be there and is not."""


class ClipforgeRuntimeError(ClipforgeError, RuntimeError):
    """A run that cannot go on (a check failed, the data ran dry); the message says what happened."""


class MissingExtraError(ClipforgeError, ImportError):
    """An optional dependency a feature needs is not installed; the message names the pip extra."""


class AssumptionWarning(UserWarning):
    """clipforge assumed something a file did not say (an activation, a preprocessing); the message
    names the assumption and the argument that pins it. The CLI prints it as one line."""
