"""The daemon's event stream: typed events (protocol/control.py) fanned out to subscribers.

Invariants:

- publishing never blocks and never grows memory without bound: each subscriber has a
  queue of ``QUEUE`` events; what does not fit is dropped *for that subscriber* and
  counted, and the next event it does get is preceded by one ``Missed`` with the count;
- a subscriber gets only the kinds of its topics (a kind's first word), all when none;
- events may be published from the event loop or from a worker thread (commands run in
  threads): :meth:`EventBus.publish` hands the latter to the loop;
- the last ``RECENT_ALERTS`` alerts are kept for ``status``, with the ones a person
  acknowledged (``AlertAckCall``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import trio
from corestate.protocol import control as c
from corestate.protocol.messages import Message

log = logging.getLogger("corestate.events")

QUEUE = 256
RECENT_ALERTS = 32


class Subscription:
    """One subscriber's bounded queue. Iterate it (in the event loop) for its events."""

    def __init__(self, bus: EventBus, topics: tuple[str, ...], size: int) -> None:
        self._bus = bus
        self.topics = frozenset(topics)
        self.size = size
        self._queue: collections.deque[Message] = collections.deque()
        self._missed = 0
        self._wake = trio.Event()
        self.closed = False

    def wants(self, kind: str) -> bool:
        return not self.topics or c.topic(kind) in self.topics

    def offer(self, ev: Message) -> None:
        if len(self._queue) >= self.size:
            self._missed += 1
            return
        if self._missed:
            self._queue.append(c.Missed(count=self._missed))
            self._missed = 0
        self._queue.append(ev)
        self._wake.set()

    @property
    def missed(self) -> int:
        """Events dropped and not yet reported."""
        return self._missed

    async def __aiter__(self) -> AsyncIterator[Message]:
        while not self.closed:
            while self._queue:
                yield self._queue.popleft()
            self._wake = trio.Event()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._bus._subs.discard(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.recent_alerts: collections.deque[c.Alert] = collections.deque(maxlen=RECENT_ALERTS)
        self.acked: set[tuple[int, str]] = set()  # (time_ns, alert) of recent alerts a person saw
        try:
            self._token: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
        except RuntimeError:  # built outside a loop (a test, a tool): publish in place
            self._token = None

    def publish(self, ev: Message | str, **fields: Any) -> None:
        """Send ``ev`` to every subscriber that wants it. A string is shorthand for an
        alert: ``publish("alert", what="corrupt-share", peer=..., ...)``."""
        if isinstance(ev, str):
            ev = legacy_alert(ev, fields)
        if self._token is not None:
            try:
                trio.lowlevel.current_task()
            except RuntimeError:  # a worker thread: hand it to the loop
                trio.from_thread.run_sync(self._publish, ev, trio_token=self._token)
                return
        self._publish(ev)

    def _publish(self, ev: Message) -> None:
        if isinstance(ev, c.Alert):
            self.recent_alerts.append(ev)
            log.warning("alert %s (%s): %s %s", ev.alert, ev.severity, ev.message,
                        " ".join(f"{k}={v}" for k, v in sorted(ev.details.items())))
        elif not isinstance(ev, (c.BackupProgress, c.RestoreProgress)):
            log.info("%s %s", ev.TYPE, " ".join(f"{k}={v}" for k, v in c.event_fields(ev).items()
                                                if k not in ("kind", "time_ns")))
        for sub in list(self._subs):
            if sub.wants(ev.TYPE):
                sub.offer(ev)

    def acknowledge(self, keys: tuple[c.AlertKey, ...], now_ns: int) -> int:
        """Mark recent alerts as seen by a person (``alert.acked`` tells every subscriber);
        how many of ``keys`` named one. Only keys of alerts still kept are remembered, so
        the set stays as small as the recent alerts."""
        recent = {(a.time_ns, a.alert) for a in self.recent_alerts}
        hit = tuple(k for k in keys if (k.time_ns, k.alert) in recent)
        self.acked = (self.acked & recent) | {(k.time_ns, k.alert) for k in hit}
        if hit:
            self._publish(c.AlertAcked(time_ns=now_ns, alerts=hit))
        return len(hit)

    def subscribe(self, topics: tuple[str, ...] = (), size: int = QUEUE) -> Subscription:
        sub = Subscription(self, topics, size)
        self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)


_ALERT_TEXT = {
    "corrupt-share": "a holder served a share that does not match what was stored",
    "failed-audit": "a holder failed an audit of a share it should hold",
    "catalog-fork": "a member signed two different histories (fork evidence kept)",
    "clock-ahead": "a member's clock is far ahead; its future-dated entries were clamped",
}


def legacy_alert(kind: str, fields: dict[str, Any]) -> c.Alert:
    """The alert the older ``publish("alert", what=..., **details)`` calls meant."""
    if kind != "alert":
        raise ValueError(f"only alerts may be published by name, not {kind!r}")
    what = str(fields.pop("what", "unknown"))
    return alert(what, _ALERT_TEXT.get(what, what), **fields)


def alert(name: str, message: str, *, severity: str = "warning", **details: Any) -> c.Alert:
    return c.Alert(time_ns=time.time_ns(), alert=name[:64], severity=severity, message=message[:4096],
                   details={str(k)[:64]: str(v)[:1024] for k, v in list(details.items())[:16]})


__all__ = ["EventBus", "Subscription", "alert", "legacy_alert"]
