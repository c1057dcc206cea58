"""The one error root of CoreState.

Every package derives its errors from :class:`CoreStateError` in its own ``errors.py``.
Errors carry structured fields and say whether retrying can help; only the CLI and the TUI
turn them into words for a person.
"""

from __future__ import annotations


class CoreStateError(Exception):
    """Root of every CoreState error.

    ``retryable`` tells a caller whether the same call may succeed later (a peer that was
    down, a full disk that was cleaned) or never will (a wrong passphrase, a corrupt pack).
    ``hint`` is what a person should do about it, when there is something to do.
    """

    retryable: bool = False
    hint: str = ""

    def __init__(self, message: str, *, hint: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        if hint:
            self.hint = hint
        if retryable is not None:
            self.retryable = retryable
