"""Errors of corestate.erasure; all derive from CoreStateError.

Each error carries the fields a caller needs to act (which share, how many more are needed)
and says whether retrying can help. Messages are for logs; the CLI and TUI phrase them.
"""

from __future__ import annotations

from corestate.errors import CoreStateError


class ErasureError(CoreStateError):
    """Root of the errors raised by corestate.erasure."""


class InvalidParameters(ErasureError, ValueError):
    """A caller asked for something the code cannot do (k < 1, n > 255, k > n, bad index...).

    A programming or configuration error: retrying with the same arguments never helps.
    """

    retryable = False

    def __init__(self, reason: str, *, k: object = None, n: object = None) -> None:
        super().__init__(f"invalid erasure parameters: {reason} (k={k!r}, n={n!r})")
        self.reason = reason
        self.k = k
        self.n = n


class NotEnoughShares(ErasureError):
    """Fewer than ``need`` usable shares: the pack cannot be rebuilt from what we have.

    ``have`` counts distinct usable shares; ``rejected`` lists the shares that were offered
    but excluded (corrupt, of another pack, ...). More shares may arrive from other peers,
    so this is retryable.
    """

    retryable = True
    hint = "fetch shares from more peers; any k distinct valid shares rebuild the pack"

    def __init__(self, have: int, need: int, *, rejected: tuple[object, ...] = ()) -> None:
        super().__init__(f"not enough shares: have {have}, need {need}")
        self.have = have
        self.need = need
        self.rejected = rejected


class CorruptShare(ErasureError):
    """A share failed verification: its bytes do not match its hash (or its header).

    ``index`` is the share index when it could be read (None when the header itself is
    unreadable); ``reason`` says which check failed. The same bytes will never verify, so
    this is not retryable; fetching the share from elsewhere or repairing it is.
    """

    retryable = False
    hint = "exclude this share, fetch another one and schedule a repair of this index"

    def __init__(self, index: int | None, reason: str) -> None:
        where = "share" if index is None else f"share {index}"
        super().__init__(f"{where} is corrupt: {reason}")
        self.index = index
        self.reason = reason
