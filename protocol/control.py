"""Messages of the local control protocol: CLI and TUI to the daemon (SPEC.md, "Wire protocol").

The control socket is a Unix socket (mode 0600) carrying the same frames and the same
canonical CBOR maps as the share service; only the set of messages differs. A client
sends ``Run`` (a command line, answered by ``Output``/``Progress`` and one final
``Exit``) or ``Subscribe`` (answered by ``Ok``, then ``Event``\\ s until it hangs up);
``Ok`` and ``Error`` from :mod:`corestate.protocol.messages` are valid replies too.

This module is all the TUI needs to know of the daemon: it imports no trio, no libp2p and
no node code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from corestate.protocol.messages import (
    INT64_MAX,
    Codec,
    Error,
    MaxItems,
    MaxLen,
    Message,
    Ok,
    Range,
    encode,
    message,
)

__all__ = [
    "CONTROL_CODEC",
    "CONTROL_MAX_FRAME",
    "CONTROL_MESSAGES",
    "Error",
    "Event",
    "Exit",
    "Input",
    "Message",
    "Ok",
    "Output",
    "Progress",
    "Run",
    "Subscribe",
    "decode",
    "encode",
]

MAX_OUTPUT = 1 << 20
# The largest control message (a Run with 256 arguments of 4096 bytes, or an Output of
# 1 MiB) plus its envelope fits in this; use it as the control channel's max_frame.
CONTROL_MAX_FRAME = (1 << 20) + (16 << 10)


@message
@dataclass(frozen=True, slots=True)
class Run(Message):
    """Run a command line in the daemon, as if typed at a shell in ``cwd``."""

    TYPE: ClassVar[str] = "run"
    argv: Annotated[tuple[Annotated[str, MaxLen(4096)], ...], MaxItems(256)]
    cwd: Annotated[str, MaxLen(4096)]
    tty: bool  # the client is a terminal: progress may be drawn
    width: Annotated[int, Range(0, 1000)]  # terminal columns, 0 = unknown


@message
@dataclass(frozen=True, slots=True)
class Output(Message):
    """Text the command wrote to stdout (fd 1) or stderr (fd 2)."""

    TYPE: ClassVar[str] = "out"
    fd: Annotated[int, Range(1, 2)]
    text: Annotated[str, MaxLen(MAX_OUTPUT)]


@message
@dataclass(frozen=True, slots=True)
class Progress(Message):
    """How far a long step is: ``done`` of ``total`` ``unit`` (total -1 = unknown)."""

    TYPE: ClassVar[str] = "prog"
    label: Annotated[str, MaxLen(256)]
    done: Annotated[int, Range(0, INT64_MAX)]
    total: Annotated[int, Range(-1, INT64_MAX)]
    unit: Annotated[str, MaxLen(16)]  # "B", "files", ...


@message
@dataclass(frozen=True, slots=True)
class Exit(Message):
    """The command ended with this exit status; the last message of a Run."""

    TYPE: ClassVar[str] = "exit"
    code: Annotated[int, Range(0, 255)]


@message
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Turn this connection into an event stream."""

    TYPE: ClassVar[str] = "sub"


@message
@dataclass(frozen=True, slots=True)
class Event(Message):
    """Something happened in the daemon (progress, an alert, a peer coming or going)."""

    TYPE: ClassVar[str] = "event"
    kind: Annotated[str, MaxLen(64)]
    fields: Annotated[
        dict[Annotated[str, MaxLen(64)], Annotated[str, MaxLen(4096)] | int | bool],
        MaxItems(64),
    ]


@message
@dataclass(frozen=True, slots=True)
class Input(Message):
    """Text typed at the client (reserved: a passphrase asked for by a running command)."""

    TYPE: ClassVar[str] = "in"
    text: Annotated[str, MaxLen(4096)]


CONTROL_MESSAGES: tuple[type[Message], ...] = (
    Run,
    Output,
    Progress,
    Exit,
    Subscribe,
    Event,
    Input,
    Ok,
    Error,
)
CONTROL_CODEC = Codec(CONTROL_MESSAGES)


def decode(payload: bytes) -> Message:
    """Decode one control message; anything else raises RemoteProtocolError."""
    return CONTROL_CODEC.decode(payload)
