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


class LocalProtocolError(ProtocolError):
    """This side was about to send something the protocol forbids: a bug here, not there.

    Raised when a message is built with a field out of its declared limits, or a frame is
    larger than the channel allows. Never retryable.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the wire protocol (framing or message encoding).

    The stream it came on is no longer usable. Not retryable: the peer would send the same.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class PeerClosed(ProtocolError):
    """The peer's side ended (EOF or a broken stream) before a whole message arrived."""

    def __init__(self, message: str, *, peer: str = "") -> None:
        super().__init__(message, retryable=True)
        self.peer = peer


class PeerTimeout(ProtocolError):
    """One wait on the peer (a read or a write) took longer than ``timeout`` seconds."""

    def __init__(self, message: str, *, peer: str = "", timeout: float = 0.0) -> None:
        super().__init__(message, retryable=True)
        self.peer = peer
        self.timeout = timeout


class TransferError(ProtocolError):
    """Bulk bytes that do not match the size and BLAKE3 their header announced.

    ``kind`` is ``"truncated"`` (the stream ended early; a killed peer looks like a clean
    EOF, so this is the only sign of it — worth retrying) or ``"corrupt"`` (all bytes came
    and hash to something else — the same peer will most likely send the same again).
    """

    def __init__(self, kind: str, message: str, *, expected: int = 0, received: int = 0) -> None:
        super().__init__(message, retryable=kind == "truncated")
        self.kind = kind
        self.expected = expected
        self.received = received


class PeerUnreachable(ProtocolError):
    """No stream could be opened to ``peer`` (dial failed or timed out). Retryable."""

    def __init__(self, message: str, *, peer: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint, retryable=True)
        self.peer = peer
