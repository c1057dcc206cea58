"""The daemon's event stream: progress, peer changes and alerts, fanned out to subscribers.

A slow subscriber never blocks the daemon: each one has a bounded queue and events that
do not fit are dropped for it (and counted, so it can say it missed some).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

log = logging.getLogger("corestate.events")


class EventBus:
    def __init__(self) -> None:
        self._subs: list[trio.MemorySendChannel[tuple[str, dict[str, Any]]]] = []
        self.dropped = 0

    def publish(self, kind: str, **fields: Any) -> None:
        log.info("%s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))
        for s in list(self._subs):
            try:
                s.send_nowait((kind, fields))
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subs.remove(s)

    def subscribe(self) -> trio.MemoryReceiveChannel[tuple[str, dict[str, Any]]]:
        send, recv = trio.open_memory_channel[tuple[str, dict[str, Any]]](256)
        self._subs.append(send)
        return recv
