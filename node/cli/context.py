"""The node and the mesh a command works on: the daemon's, or opened here under the home lock."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from corestate.node import keystore
from corestate.node.cli.output import CancelledByUser, Out
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.protocol import control as c
from corestate.protocol.messages import Message

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.runtime.port import MeshPort


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes:
    return keystore.read_passphrase(getattr(args, "passphrase_file", None), confirm=confirm)


def _open(args: argparse.Namespace, out: Out | None = None) -> ContextManager[LocalNode]:
    """The node, opened here under the home lock (no daemon runs for it)."""
    home = Home(args.home)
    home.require()
    node = LocalNode.open(home, _passphrase(args), hsm_module=getattr(args, "hsm_module", None))
    args.opened_node = node
    for pid, reason in node.problems:
        msg = f"pack {pid.hex()[:16]} could not be read: {reason} (run `corestate check`)"
        if out is not None:
            out.warn(msg)
        else:
            print(f"warning: {msg}", file=sys.stderr)
    return node


def _port(args: argparse.Namespace) -> MeshPort | None:
    """The way to the mesh of a command run in place: a transient host started on first use."""
    return cast("MeshPort | None", getattr(args, "mesh_port", None))


def invoke(args: argparse.Namespace, out: Out, call: Message,
           on_item: Callable[[Any], None] | None = None) -> Message:
    """Run the typed operation ``call`` (node/app/registry.py): in the daemon of the home
    when one runs, else here under the home lock. A paged answer's records go to
    ``on_item`` as they come, and ``Done`` is returned; else the typed result."""
    from corestate.node.app import Local
    from corestate.node.app.registry import OPERATIONS
    from corestate.node.runtime.client import connect
    op = OPERATIONS[type(call)]
    s = connect(Path(args.home))
    if s is not None:
        with s:
            return _remote(s, call, out, on_item)
    with _open(args, out) as node:
        ctx = Local(on_event=out.emit, on_warn=out.warn, port=_port(args), scheduled=out.scheduled)
        answer = op.run(node, call, ctx)
        if isinstance(answer, Message):
            return answer
        n = 0
        for item in answer:
            if on_item is not None:
                on_item(item)
            n += 1
        return c.Done(items=n)


CANCEL_WAIT = 5.0  # seconds the CLI waits for the daemon to confirm a cancel


def _remote(s: Any, call: Message, out: Out, on_item: Callable[[Any], None] | None) -> Message:
    from corestate.node.runtime.client import Connection
    conn = Connection(s)
    s.settimeout(None)  # a long operation may send nothing for a while
    conn.send(call)
    try:
        return _answer(conn, out, on_item)
    except KeyboardInterrupt:
        # Ctrl-C: the daemon stops the call at its next safe point (SPEC §8.6); wait a
        # little for its word, then leave (closing the connection cancels it anyway).
        with contextlib.suppress(OSError, CoreStateError):
            conn.send(c.Cancel())
            s.settimeout(CANCEL_WAIT)
            deadline = time.monotonic() + CANCEL_WAIT
            while time.monotonic() < deadline:
                msg = conn.receive()
                if msg is None or isinstance(msg, c.Failure) or type(msg) not in c.EVENTS:
                    break
        raise CancelledByUser() from None


def _answer(conn: Any, out: Out, on_item: Callable[[Any], None] | None) -> Message:
    from corestate.node.runtime.client import DaemonRefused
    for msg in conn.messages():
        if isinstance(msg, c.Failure):
            raise DaemonRefused(msg)
        if isinstance(msg, c.Notice):
            out.error(msg.message)
            continue
        if type(msg) in c.EVENTS:
            if out.emit is not None:
                out.emit(msg)
            continue
        if msg.TYPE.endswith("-page"):
            (field,) = msg.SPECS
            for item in getattr(msg, field):
                if on_item is not None:
                    on_item(item)
            continue
        return msg
    raise CoreStateError("the daemon closed the connection before it answered",
                         hint="see the daemon's log", retryable=True)
