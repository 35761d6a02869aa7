"""The base of every exception clipforge raises for a problem the user can fix.

`clipforge.cli.main` catches `ClipforgeError` in one place and prints its message on one line
(no traceback, non-zero exit). Library callers can catch it to handle all of clipforge's
user-facing errors at once; each subclass also derives from the built-in type that fits it
(ValueError, FileNotFoundError, ...), so existing `except ValueError` code keeps working.
"""

from __future__ import annotations


class ClipforgeError(Exception):
    """A problem with the input, a file, a name or the environment, stated in one line."""
