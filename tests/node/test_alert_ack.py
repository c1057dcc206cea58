"""Acknowledging alerts (``AlertAckCall``, answered by the daemon from its event bus): the
keys of recent alerts are remembered and announced (``alert.acked``); unknown keys and
alerts that rolled out of the recent ones are not kept."""

from __future__ import annotations

import trio
from corestate.node.runtime.events import RECENT_ALERTS, EventBus, alert
from corestate.protocol import control as c


def key(a: c.Alert) -> c.AlertKey:
    return c.AlertKey(time_ns=a.time_ns, alert=a.alert)


async def test_acknowledged_alerts_are_marked_and_announced() -> None:
    bus = EventBus()
    first, second = alert("failed-audit", "one", peer="p"), alert("holder-lost", "two")
    bus.publish(first)
    bus.publish(second)
    sub = bus.subscribe(("alert",))
    assert bus.acknowledge((key(first), c.AlertKey(time_ns=1, alert="never")), now_ns=5) == 1
    assert bus.acked == {(first.time_ns, first.alert)}
    got: list[c.Message] = []
    with trio.move_on_after(0.2):
        async for ev in sub:
            got.append(ev)
    assert got == [c.AlertAcked(time_ns=5, alerts=(key(first),))]
    # Nothing known: no event, nothing remembered.
    assert bus.acknowledge((c.AlertKey(time_ns=2, alert="never"),), now_ns=6) == 0
    assert bus.acked == {(first.time_ns, first.alert)}


async def test_the_acknowledged_set_stays_as_small_as_the_recent_alerts() -> None:
    bus = EventBus()
    old = alert("failed-audit", "old")
    bus.publish(old)
    assert bus.acknowledge((key(old),), now_ns=1) == 1
    newer = [alert("corrupt-share", f"n{i}") for i in range(RECENT_ALERTS)]
    for a in newer:
        bus.publish(a)
    # The old alert rolled out: acknowledging another forgets the old key.
    assert bus.acknowledge((key(newer[0]),), now_ns=2) == 1
    assert bus.acked == {(newer[0].time_ns, newer[0].alert)}
    assert bus.acknowledge((key(old),), now_ns=3) == 0
