"""The client side of the control socket: the CLI (and scripts) talking to a running daemon.

Plain blocking sockets and the sans-I/O framing: the CLI does not start trio just to ask.
Every connection opens with the handshake (``Hello`` → ``Welcome``), then carries one
request: a typed call (answered by its typed result, or pages and ``Done``, with the
operation's events on the way), or a subscription to the event stream.

A socket file that nobody answers is stale (a daemon died): the CLI then runs the command
itself, under the home lock, which a dead daemon no longer holds.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

from corestate.protocol import control as c
from corestate.protocol import wire
from corestate.protocol.errors import RemoteProtocolError

from corestate.errors import CoreStateError

SOCKET_NAME = "control.sock"
CLIENT_NAME = "corestate-cli"


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


class DaemonRefused(CoreStateError):
    """The daemon answered a request with a ``Failure``."""

    def __init__(self, failure: c.Failure) -> None:
        super().__init__(failure.message, hint=failure.hint, retryable=failure.retryable)
        self.kind = failure.kind


def connect(home: Path, timeout: float = 2.0) -> socket.socket | None:
    """A connection to the daemon of ``home``, or None when no daemon answers."""
    path = socket_path(home)
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None
    return s


class Connection:
    """One control connection, after the handshake."""

    def __init__(self, s: socket.socket, client: str = CLIENT_NAME) -> None:
        self.sock = s
        self._dec = wire.FrameDecoder(max_frame=c.CONTROL_MAX_FRAME)  # SPEC §8.6
        try:
            self.send(c.Hello(version=c.CONTROL_VERSION, client=client))
        except (BrokenPipeError, ConnectionResetError):
            pass  # a busy daemon answers at once and hangs up: read what it said
        welcome = self.receive()
        if isinstance(welcome, c.Failure):
            raise DaemonRefused(welcome)
        if welcome is None:
            raise CoreStateError("the daemon closed the connection without a word",
                                 hint="see the daemon's log", retryable=True)
        if not isinstance(welcome, c.Welcome):
            raise RemoteProtocolError(f"expected a welcome, got {type(welcome).__name__}")
        self.welcome = welcome

    def send(self, msg: c.Message) -> None:
        self.sock.sendall(wire.encode_frame(c.encode(msg)))

    def receive(self) -> c.Message | None:
        """The next message, or None when the daemon closed the connection."""
        frame = self._dec.next_frame()
        while frame is None:
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self._dec.feed(data)
            frame = self._dec.next_frame()
        return c.decode(frame)

    def messages(self) -> Iterator[c.Message]:
        while (msg := self.receive()) is not None:
            yield msg

    def close(self) -> None:
        self.sock.close()


def call(s: socket.socket, request: c.Message) -> c.Message:
    """A typed call with a single answer: its typed result, or DaemonRefused (the events it
    causes and notices such as ``waiting`` are skipped)."""
    conn = Connection(s)
    conn.sock.settimeout(120.0)
    conn.send(request)
    reply = conn.receive()
    while reply is not None and (type(reply) in c.EVENTS or isinstance(reply, c.Notice)):
        reply = conn.receive()
    if reply is None:
        raise CoreStateError("the daemon closed the connection without an answer",
                             hint="see the daemon's log")
    if isinstance(reply, c.Failure):
        raise DaemonRefused(reply)
    return reply


def subscribe(s: socket.socket, topics: tuple[str, ...] = ()) -> Iterator[c.Message]:
    """The daemon's events (and ``Missed`` markers) until it stops or the caller does; the
    subscription is made before this returns."""
    conn = Connection(s)
    conn.send(c.Subscribe(topics=topics))
    first = conn.receive()
    if isinstance(first, c.Failure):
        raise DaemonRefused(first)
    if not isinstance(first, c.Ok):
        raise RemoteProtocolError(f"expected ok, got {type(first).__name__}")
    conn.sock.settimeout(None)  # events may be hours apart
    return conn.messages()


__all__ = ["CLIENT_NAME", "Connection", "DaemonRefused", "call", "connect",
           "socket_path", "subscribe"]
