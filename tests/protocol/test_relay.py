"""Circuit relay v2 and DCUtR through corestate.protocol.p2p, on loopback.

A relay serves the peers its policy admits and refuses the others; a peer with a
reservation is reachable through its circuit address alone; the connection is reported
relayed, then direct once DCUtR upgraded it (on loopback nothing stands in the way).
The NAT lab (tests/node/test_nat_lab.py) does the same across real NATs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from corestate.protocol.errors import PeerUnreachable
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import RelayOptions, open_host
from corestate.protocol.streams import Stream

# libp2p 0.8.1 sometimes leaves the socket of a cancelled dial (a hole punch or a direct
# attempt that lost the race) to the garbage collector, which may run in a later test
# (seen about 1 run in 5 here); the connections we hold are all closed. Only that warning
# is ignored.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_cancelled_dials() -> Iterator[None]:
    """Collect such sockets before the test ends, while the warning is still ignored: left
    to a later test's garbage collection, the warning fails that test (warnings are errors)."""
    yield
    gc.collect()

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ECHO = "/corestate/test-echo/1"


def seed(n: int) -> bytes:
    return NodeKeys.from_root(bytes([n]) * 32).identity_seed


async def echo(stream: Stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def roundtrip(stream: Stream, payload: bytes) -> bytes:
    await stream.send_all(payload)
    got = bytearray()
    while len(got) < len(payload):
        data = await stream.receive_some(65536)
        assert data, f"EOF after {len(got)} of {len(payload)} bytes"
        got += data
    return bytes(got)


async def test_a_member_is_reachable_through_its_circuit_and_strangers_are_refused() -> None:
    no_punch = RelayOptions(hole_punch=False)
    async with (
        open_host(seed(1), LOOPBACK, relay=RelayOptions(hop=True)) as relay,
        open_host(seed(2), LOOPBACK, relay=no_punch) as a,
        open_host(seed(3), LOOPBACK, relay=no_punch) as b,
        open_host(seed(4), LOOPBACK, relay=no_punch) as stranger,
    ):
        members = {a.peer_id, b.peer_id}
        relay.set_relay_policy(lambda peer: peer in members)
        a.set_handler(ECHO, echo)
        with trio.fail_after(30):
            circuits = await a.reserve(relay.peer_id, relay.addrs())
        assert circuits and all("/p2p-circuit/p2p/" + a.peer_id in c for c in circuits)
        assert all("/ip4/0.0.0.0/" not in c for c in circuits)

        with pytest.raises(PeerUnreachable, match="refused"):
            await stranger.reserve(relay.peer_id, relay.addrs(), timeout=20)
        # A stranger cannot use the relay to reach a member either.
        with pytest.raises(PeerUnreachable):
            await stranger.open_stream(a.peer_id, ECHO, addrs=circuits, timeout=10)

        with trio.fail_after(30):
            stream = await b.open_stream(a.peer_id, ECHO, addrs=circuits)
            payload = bytes(range(256)) * 4096  # 1 MiB through the relay
            assert await roundtrip(stream, payload) == payload
            await stream.aclose()
        assert b.connection(a.peer_id) == "relayed"
        assert a.connection(b.peer_id) == "relayed"
        assert b.connection(stranger.peer_id) == "none"


async def test_dcutr_upgrades_a_relayed_connection_and_streams_go_direct() -> None:
    async with (
        open_host(seed(1), LOOPBACK, relay=RelayOptions(hop=True)) as relay,
        open_host(seed(2), LOOPBACK) as a,
        open_host(seed(3), LOOPBACK) as b,
    ):
        relay.set_relay_policy(lambda peer: True)
        a.set_handler(ECHO, echo)
        with trio.fail_after(30):
            circuits = await a.reserve(relay.peer_id, relay.addrs())
            stream = await b.open_stream(a.peer_id, ECHO, addrs=circuits)
            assert await roundtrip(stream, b"x" * 1000) == b"x" * 1000
        assert b.connection(a.peer_id) == "relayed"
        started = time.monotonic()
        with trio.fail_after(30):
            while b.connection(a.peer_id) != "direct":
                await trio.sleep(0.1)
        print(f"direct after {time.monotonic() - started:.2f} s")
        with trio.fail_after(30):
            fresh = await b.open_stream(a.peer_id, ECHO)
            assert not getattr(fresh, "relayed", True)
            assert await roundtrip(fresh, b"y" * 100_000) == b"y" * 100_000
        # The old stream over the relay still works (the relayed path is the fallback).
        with trio.fail_after(30):
            assert await roundtrip(stream, b"z" * 1000) == b"z" * 1000


async def test_dial_back_reports_what_the_peer_reached_and_refuses_strangers() -> None:
    async with (
        open_host(seed(1), LOOPBACK) as a,
        open_host(seed(2), LOOPBACK) as b,
        open_host(seed(3), LOOPBACK) as stranger,
    ):
        a.serve_dial_back(lambda peer: peer == b.peer_id)
        b.serve_dial_back(lambda peer: peer == a.peer_id)
        with trio.fail_after(30):
            assert await b.dial_back(a.peer_id) is None  # not connected: cannot tell
            a.set_handler(ECHO, echo)
            s1 = await b.open_stream(a.peer_id, ECHO, addrs=a.addrs())
            await s1.aclose()
            reached = await b.dial_back(a.peer_id)
            assert reached == [b.addrs()[0].rsplit("/p2p/", 1)[0]]
            s2 = await stranger.open_stream(a.peer_id, ECHO, addrs=a.addrs())
            await s2.aclose()
            assert await stranger.dial_back(a.peer_id) is None  # refused: not admitted


async def test_relay_limits_cut_a_circuit_past_its_bytes_and_pace_it_at_its_rate() -> None:
    """A circuit carries at most ``circuit_bytes`` (both ways together) at ``circuit_rate``
    each way; a client paces what it sends over relays at ``relayed_rate``. A relay
    without limits, in the same test, shows what the limits change."""
    no_punch = RelayOptions(hole_punch=False)
    mib = 2**20
    async with (
        open_host(seed(1), LOOPBACK, relay=RelayOptions(hop=True, circuit_bytes=3 * mib)) as small,
        open_host(seed(5), LOOPBACK, relay=RelayOptions(hop=True, circuit_rate=mib // 4)) as slow_relay,
        open_host(seed(6), LOOPBACK, relay=RelayOptions(hop=True)) as free,
        open_host(seed(2), LOOPBACK, relay=no_punch) as a,
        open_host(seed(3), LOOPBACK, relay=no_punch) as b,
        open_host(seed(7), LOOPBACK, relay=no_punch) as c,
        open_host(seed(8), LOOPBACK, relay=no_punch) as d,
        open_host(seed(4), LOOPBACK, relay=RelayOptions(hole_punch=False, relayed_rate=mib // 4)) as paced,
    ):
        # One client per relay: a client connected to A already would reuse that connection.
        payload = b"p" * mib
        for relay in (small, slow_relay, free):
            relay.set_relay_policy(lambda peer: True)
        a.set_handler(ECHO, echo)
        with trio.fail_after(120):
            through = {r.peer_id: await a.reserve(r.peer_id, r.addrs()) for r in (small, slow_relay, free)}

            async def timed_roundtrips(relay: Any, client: Any, count: int) -> list[float]:
                stream = await client.open_stream(a.peer_id, ECHO, addrs=through[relay.peer_id])
                times = []
                for _ in range(count):
                    started = time.monotonic()
                    assert await roundtrip(stream, payload) == payload
                    times.append(time.monotonic() - started)
                await stream.aclose()
                return times

            # No limits: three round trips of 1 MiB each way (6 MiB) go through.
            free_times = await timed_roundtrips(free, b, 3)
            # 3 MiB: the first round trip (2 MiB) passes, the second is cut.
            stream = await c.open_stream(a.peer_id, ECHO, addrs=through[small.peer_id])
            assert await roundtrip(stream, payload) == payload
            with pytest.raises((AssertionError, trio.BrokenResourceError)):
                await roundtrip(stream, payload)
            # 256 KiB/s each way: 1 MiB takes over 3 s (a second's burst, then the rate).
            (paced_trip,) = await timed_roundtrips(slow_relay, d, 1)
            assert paced_trip >= 2.5 > max(free_times), (paced_trip, free_times)

            # The client's own pace over relays: 1 MiB at 256 KiB/s.
            pace = await paced.open_stream(a.peer_id, ECHO, addrs=through[free.peer_id])
            assert pace.relayed  # type: ignore[attr-defined]
            started = time.monotonic()
            await pace.send_all(payload)
            paced_send = time.monotonic() - started
            print(f"free {free_times}, relay-paced round trip {paced_trip:.2f} s, client-paced send {paced_send:.2f} s")
            assert paced_send >= 2.5
            await pace.reset()  # type: ignore[attr-defined]


async def test_a_circuit_ends_at_its_time_limit() -> None:
    """``circuit_seconds``: a circuit older than its limit is cut, even an idle one."""
    no_punch = RelayOptions(hole_punch=False)
    async with (
        open_host(seed(1), LOOPBACK, relay=RelayOptions(hop=True, circuit_seconds=2)) as relay,
        open_host(seed(2), LOOPBACK, relay=no_punch) as a,
        open_host(seed(3), LOOPBACK, relay=no_punch) as b,
    ):
        relay.set_relay_policy(lambda peer: True)
        a.set_handler(ECHO, echo)
        with trio.fail_after(60):
            circuits = await a.reserve(relay.peer_id, relay.addrs())
            stream = await b.open_stream(a.peer_id, ECHO, addrs=circuits)
            assert await roundtrip(stream, b"early" * 1000) == b"early" * 1000
            await trio.sleep(3)
            with pytest.raises((AssertionError, trio.BrokenResourceError)):
                await roundtrip(stream, b"late" * 1000)
