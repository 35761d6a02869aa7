"""The errors of `clipforge serve`: one class for "this request is refused", carrying its HTTP status.

`ApiError` is what every check in the serve package raises for a bad request; the app turns it
into `{"error": message, "code": code}` with `status`. `ServeError` is for problems with how the
server is started (a non-loopback address without a token, a missing extra), which the CLI prints
as one line.
"""

from __future__ import annotations

from clipforge.errors import ClipforgeError

__all__ = ["ServeError", "ApiError", "MISSING_EXTRA_HINT"]

MISSING_EXTRA_HINT = "clipforge serve needs its optional dependencies: pip install 'clipforge[serve]'"


class ServeError(ClipforgeError, ValueError):
    """The server cannot start as asked (unsafe address without a token, missing dependency, ...)."""


class ApiError(ClipforgeError, ValueError):
    """A request the server refuses: `status` (4xx/5xx), `code` (short, stable) and a message naming the problem."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def payload(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}
