"""Errors of corestate.protocol; all derive from CoreStateError."""

from __future__ import annotations

from corestate.errors import CoreStateError


class ProtocolError(CoreStateError):
    """Root of the errors raised by corestate.protocol."""


class CorruptObject(ProtocolError):
    """Bytes that do not decode, decrypt or hash to what they claim.

    ``what`` names the object (a pack id, a blob id, a tree id) so that ``check`` can say
    which one is damaged. Never retryable: the same bytes give the same answer.
    """

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}", retryable=False)
        self.what = what
        self.reason = reason
