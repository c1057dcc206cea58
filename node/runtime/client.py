"""The CLI side of the control socket: hand a command to the running daemon.

Plain blocking sockets and the sans-I/O framing: the CLI does not start trio just to ask.
The daemon answers with ``Output`` text, ``Progress`` (drawn here as a bar with ETA when
stderr is a terminal) and a final ``Exit``.

A socket file that nobody answers is stale (a daemon died): the CLI then runs the command
itself, under the home lock, which a dead daemon no longer holds.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from corestate.protocol import control as c
from corestate.protocol import wire
from corestate.protocol.errors import ProtocolError

SOCKET_NAME = "control.sock"


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


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


def _frames(s: socket.socket) -> Iterator[object]:
    dec = wire.FrameDecoder(max_frame=c.CONTROL_MAX_FRAME)  # SPEC §8.6: holds the largest Output
    while True:
        frame = dec.next_frame()
        while frame is None:
            data = s.recv(1 << 16)
            if not data:
                return
            dec.feed(data)
            frame = dec.next_frame()
        yield c.decode(frame)


def send(s: socket.socket, msg: object) -> None:
    s.sendall(wire.encode_frame(c.encode(msg)))


def run_remote(s: socket.socket, argv: list[str], cwd: str,
               on_progress: Callable[[str, int, int, str], None] | None = None) -> int:
    """Send ``argv`` to the daemon; relay its output; return its exit code."""
    s.settimeout(None)  # a long backup prints nothing for minutes without --json
    tty = sys.stderr.isatty()
    width = 80
    with contextlib.suppress(OSError):
        width = min(1000, __import__("os").get_terminal_size(sys.stderr.fileno()).columns)
    send(s, c.Run(argv=argv, cwd=cwd, tty=tty, width=width))
    try:
        for msg in _frames(s):
            if isinstance(msg, c.Output):
                stream = sys.stdout if msg.fd == 1 else sys.stderr
                stream.write(msg.text)
                stream.flush()
            elif isinstance(msg, c.Progress):
                if on_progress is not None:
                    on_progress(msg.label, msg.done, msg.total, msg.unit)
            elif isinstance(msg, c.Exit):
                return msg.code
    except ProtocolError as exc:
        print(f"error: the daemon sent something unexpected: {exc}", file=sys.stderr)
        return 1
    print("error: the daemon closed the connection before the command finished "
          "(see the daemon's log)", file=sys.stderr)
    return 1
