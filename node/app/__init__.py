"""The application layer: one typed operation per thing a user or a daemon asks of a node.

An operation is a function ``run(node, call, ctx)``: ``call`` is the operation's typed
request (a control message, protocol/control.py), ``ctx`` the ports it may use (events,
warnings, the way to the mesh). It returns its typed result, or — when the answer can be
longer than a frame (a listing) — an iterator of typed records, sent in pages. It reports
progress and events through ``ctx.emit`` and raises CoreStateError subclasses; it never
parses argv and never prints. The CLI renders results as text or JSON; the daemon sends
them over the control socket (node/runtime/daemon.py); both find operations in
``node/app/registry.py``.

Invariants:

- an operation's answer is the same whoever asks: the CLI in place (``Local`` context) and
  the daemon for a client run the same function;
- operations that write (or must not interleave with writers) run under the daemon's
  command lock, one at a time (``Operation.lock``);
- an operation stops only where it leaves the home consistent: it calls ``ctx.check()``
  at its safe points (between files, packs, batches), which raises ``Cancelled`` once its
  client asked to stop; what landed before is kept (the next run reuses it);
- nothing here imports the CLI or the runtime (import-linter contracts): the mesh is
  reached through ``Context.mesh()``, a port the caller provides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from corestate.protocol.messages import Message, Record

if TYPE_CHECKING:
    from corestate.node.local import LocalNode


class Running(Protocol):
    """What only a running daemon has: its live host, the shares it holds for peers, its
    age (node/runtime/live.py). Callable from an operation's worker thread."""

    def uptime_ms(self) -> int: ...
    def addrs(self) -> list[str]: ...  # where its host listens, each ending in /p2p/<id>
    def connected(self) -> list[str]: ...  # peers connected now
    def reachability(self) -> str: ...  # "public", "private", "unknown" (node/core/reach.py)
    def connection(self, peer: str) -> str: ...  # "direct", "relayed", "none"
    def vault_stats(self) -> dict[str, int]: ...  # shares, bytes, senders held for peers
    def held_for(self, peer: str) -> int: ...  # bytes held for ``peer``
    def set_quota(self, peer: str, quota: int | None) -> None: ...  # None: back to the pool
    def kick_sync(self) -> bool: ...  # a sync round with every member now (False: no group service)


class Context(Protocol):
    """What an operation may use besides the node."""

    scheduled: bool  # the daemon's schedule asked, not a person

    def emit(self, ev: Message) -> None:
        """A typed event (progress, alert, ...): to the daemon's subscribers and the client."""

    def warn(self, text: str) -> None:
        """Something the person should read, that does not stop the operation."""

    def mesh(self) -> Any:
        """The way to the mesh (a ``MeshPort``), or None when none is open."""

    def live(self) -> Running | None:
        """The running daemon the operation runs in, or None (a CLI without a daemon)."""

    def cancelled(self) -> bool:
        """Whether the client asked to stop the operation."""

    def check(self) -> None:
        """Raise ``Cancelled`` if the client asked to stop (call only at a safe point)."""


Answer: TypeAlias = Message | Iterator[Record]


@dataclass(frozen=True, slots=True)
class Operation:
    call: type[Message]
    run: Callable[[LocalNode, Any, Context], Answer]
    page: type[Message] | None = None  # a paged answer: its page message, one tuple field
    lock: bool = True  # runs under the daemon's command lock

    def page_of(self, items: tuple[Record, ...]) -> Message:
        assert self.page is not None
        (field,) = self.page.SPECS
        return self.page(**{field: items})


@dataclass(slots=True)
class Local:
    """The context of an operation the CLI runs in place (no daemon)."""

    on_event: Callable[[Message], None] | None = None
    on_warn: Callable[[str], None] | None = None
    port: Any = None
    scheduled: bool = False
    # Lent by a running daemon when it runs a CLI command in place (None otherwise; an
    # operation reads them with getattr, node/app/backup.py): its change journal of the
    # configured paths, and what starts its group anti-entropy round at once.
    journal: Any = None
    kick_members: Callable[[], None] | None = None
    running: Running | None = None  # the CLI runs in the daemon (a command it still runs as argv)
    stop: threading.Event = field(default_factory=threading.Event)  # set: cancel at the next check

    def emit(self, ev: Message) -> None:
        if self.on_event is not None:
            self.on_event(ev)

    def warn(self, text: str) -> None:
        if self.on_warn is not None:
            self.on_warn(text)

    def mesh(self) -> Any:
        return self.port

    def live(self) -> Running | None:
        return self.running

    def cancelled(self) -> bool:
        return self.stop.is_set()

    def check(self) -> None:
        check_stop(self.stop)


def check_stop(stop: threading.Event) -> None:
    """``Cancelled`` when ``stop`` is set: the body of every context's ``check``."""
    if stop.is_set():
        from corestate.node.errors import Cancelled
        raise Cancelled()


__all__ = ["Answer", "Context", "Local", "Operation", "Running", "check_stop"]
