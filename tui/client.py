"""The TUI's client of the control socket, on asyncio (Textual's loop).

The daemon's own client (``node/runtime/client.py``) is blocking and lives in ``node``, which
the TUI may not import; this one speaks the same protocol (SPEC.md §8.6) from
``protocol.control`` and ``protocol.wire`` alone. Invariants:

- one connection carries one request, as the daemon wants: the handshake (``Hello`` →
  ``Welcome``), then a typed call or a ``Subscribe``;
- every read on a call has a timeout (a daemon that stops answering must not freeze a screen);
  a subscription has none, since events may be hours apart, and ends on the daemon's EOF;
- a ``Failure`` becomes :class:`DaemonFailure` (kind, message, hint, retryable), a daemon that
  is not there or goes away becomes :class:`Disconnected`; the screens turn both into words;
- events that arrive during a call (its own progress) go to ``on_event``; ``Notice`` to
  ``on_notice``; cancelling the awaiting task sends ``Cancel`` before hanging up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from corestate.protocol import control as c
from corestate.protocol import wire
from corestate.protocol.errors import RemoteProtocolError

from corestate.errors import CoreStateError

CLIENT_NAME = "corestate-tui"
CALL_TIMEOUT = 120.0  # between two messages of a call's answer (progress comes every second)
CONNECT_TIMEOUT = 5.0

EventHandler = Callable[[c.Message], None]


class Disconnected(CoreStateError):
    """No daemon answers on the socket, or it went away mid-request."""


class DaemonFailure(CoreStateError):
    """The daemon answered a request with a ``Failure``."""

    def __init__(self, failure: c.Failure) -> None:
        super().__init__(failure.message, hint=failure.hint, retryable=failure.retryable)
        self.kind = failure.kind


class _Conn:
    """One connection after the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 welcome: c.Welcome) -> None:
        self.reader, self.writer, self.welcome = reader, writer, welcome
        self._dec = wire.FrameDecoder(max_frame=c.CONTROL_MAX_FRAME)

    @classmethod
    async def open(cls, path: Path) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=c.CONTROL_MAX_FRAME),
                CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise Disconnected(f"no daemon answers on {path}",
                               hint="start one with `corestate node run`", retryable=True) from exc
        conn = cls(reader, writer, c.Welcome(version=0, peer_id="", home=""))
        try:
            await conn.send(c.Hello(version=c.CONTROL_VERSION, client=CLIENT_NAME))
        except Disconnected:
            pass  # a busy daemon answers at once and hangs up: read what it said
        welcome = await conn.receive(CONNECT_TIMEOUT)
        if isinstance(welcome, c.Failure):
            conn.close()
            raise DaemonFailure(welcome)
        if not isinstance(welcome, c.Welcome):
            conn.close()
            raise RemoteProtocolError(f"expected a welcome, got {type(welcome).__name__}")
        conn.welcome = welcome
        return conn

    async def send(self, msg: c.Message) -> None:
        try:
            self.writer.write(wire.encode_frame(c.encode(msg)))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise Disconnected("the daemon went away", hint="see the daemon's log",
                               retryable=True) from exc

    async def receive(self, timeout: float | None) -> c.Message:
        """The next message; Disconnected at EOF or after ``timeout`` seconds of silence."""
        frame = self._dec.next_frame()
        while frame is None:
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
            except TimeoutError as exc:
                raise Disconnected(f"the daemon said nothing for {timeout:.0f}s",
                                   hint="see the daemon's log", retryable=True) from exc
            except (ConnectionError, OSError) as exc:
                raise Disconnected("the daemon went away", hint="see the daemon's log",
                                   retryable=True) from exc
            if not data:
                raise Disconnected("the daemon closed the connection",
                                   hint="is it still running? `corestate node run`", retryable=True)
            self._dec.feed(data)
            frame = self._dec.next_frame()
        return c.decode(frame)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Client:
    """Calls to the daemon whose control socket is ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def call(self, request: c.Message, *, on_event: EventHandler | None = None,
                   on_notice: EventHandler | None = None) -> c.Message:
        """A typed call with a single answer: its typed result."""
        answer = await self._request(request, on_event, on_notice, paged=False)
        return answer[0]

    async def paged(self, request: c.Message, *, on_event: EventHandler | None = None,
                    on_notice: EventHandler | None = None) -> list[c.Message]:
        """A typed call answered in pages: the pages, in order, up to ``Done``."""
        return await self._request(request, on_event, on_notice, paged=True)

    async def paged_upto(self, request: c.Message, max_items: int) -> tuple[list[c.Message], bool]:
        """Like :meth:`paged`, but stop reading once the pages hold ``max_items`` records
        (the call is cancelled and the connection closed: a listing of millions of files
        is not held whole). Returns the pages and whether the answer was complete."""
        cut: list[bool] = []
        pages = await self._request(request, None, None, paged=True, max_items=max_items, cut=cut)
        return pages, not cut

    async def _request(self, request: c.Message, on_event: EventHandler | None,
                       on_notice: EventHandler | None, *, paged: bool, max_items: int | None = None,
                       cut: list[bool] | None = None) -> list[c.Message]:
        conn = await _Conn.open(self.path)
        pages: list[c.Message] = []
        items = 0
        try:
            await conn.send(request)
            while True:
                msg = await conn.receive(CALL_TIMEOUT)
                if type(msg) in c.EVENTS:
                    if on_event is not None:
                        on_event(msg)
                elif isinstance(msg, c.Notice):
                    if on_notice is not None:
                        on_notice(msg)
                elif isinstance(msg, c.Failure):
                    raise DaemonFailure(msg)
                elif isinstance(msg, c.Done):
                    return pages
                elif paged and not isinstance(msg, c.StatusResult):
                    pages.append(msg)
                    items += _records(msg)
                    if max_items is not None and items >= max_items:
                        if cut is not None:
                            cut.append(True)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(conn.send(c.Cancel()), 1.0)
                        return pages
                else:
                    return [msg]
        except asyncio.CancelledError:
            # The person changed their mind: stop the operation at its next safe point.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.send(c.Cancel()), 1.0)
            raise
        finally:
            conn.close()

    @contextlib.asynccontextmanager
    async def subscribe(self, topics: tuple[str, ...] = ()) -> AsyncIterator[
            tuple[c.Welcome, AsyncIterator[c.Message]]]:
        """The daemon's events (and ``Missed``) until it stops; the subscription is made
        before the body runs. The iterator ends with Disconnected when the daemon goes."""
        conn = await _Conn.open(self.path)
        try:
            await conn.send(c.Subscribe(topics=topics))
            first = await conn.receive(CONNECT_TIMEOUT)
            if isinstance(first, c.Failure):
                raise DaemonFailure(first)
            if not isinstance(first, c.Ok):
                raise RemoteProtocolError(f"expected ok, got {type(first).__name__}")

            async def events() -> AsyncIterator[c.Message]:
                while True:
                    yield await conn.receive(None)

            yield conn.welcome, events()
        finally:
            conn.close()


def _records(page: c.Message) -> int:
    """How many records a page carries (its one tuple field)."""
    return sum(len(v) for name in page.SPECS if isinstance(v := getattr(page, name), tuple))


__all__ = ["CLIENT_NAME", "Client", "DaemonFailure", "Disconnected"]
