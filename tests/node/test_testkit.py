"""The in-process test kit itself (``node.runtime.testkit``): what its hosts and clock
promise, so that the tests built on them can trust them.

- A stream's ``remote_peer`` is the opener's PeerID, derived from its seed (as Noise
  authenticates it): no host can claim another identity.
- A host that goes down breaks its streams as a killed peer's (EOF for readers, broken
  writes), is refused at once afterwards, and can come back; a partitioned host is silent
  until the caller's timeout — virtual seconds, no real waiting.
- A handler's exception resets its stream and leaves the host serving.
- The virtual clock does not jump while a worker thread is at work (trio's MockClock
  with autojump does, and would fire every timeout in the middle of a share write); it
  does jump as soon as nothing but a timer can happen.
"""

from __future__ import annotations

import os
import time

import cbor2
import pytest
import trio
from corestate.node.runtime.testkit import MemoryNetwork, VirtualClock, peer_id_of_seed
from corestate.protocol.errors import PeerUnreachable
from corestate.protocol.keys import NodeKeys
from corestate.protocol.streams import Stream

PROTO = "/corestate/kit-test/1"


async def echo(stream: Stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def test_the_remote_peer_is_the_openers_identity(clock: VirtualClock) -> None:
    net = MemoryNetwork()
    seed = NodeKeys.from_root(b"\x01" * 32).identity_seed
    seen: list[str] = []

    async def who(stream: Stream) -> None:
        seen.append(stream.remote_peer)

    async with net.host().serving() as server, net.host(seed).serving() as client:
        server.set_handler(PROTO, who)
        assert client.peer_id == peer_id_of_seed(seed) == NodeKeys.from_root(b"\x01" * 32).peer_id
        stream = await client.open_stream(server.peer_id, PROTO, addrs=server.addrs())
        assert stream.remote_peer == server.peer_id
        assert await stream.receive_some() == b""  # the handler returned: closed
        assert seen == [client.peer_id]
        assert client.connected_peers() == [server.peer_id]
        assert server.connected_peers() == [client.peer_id]


async def test_a_host_that_goes_down_breaks_its_streams_and_comes_back(clock: VirtualClock) -> None:
    net = MemoryNetwork()
    seed = NodeKeys.from_root(b"\x02" * 32).identity_seed
    async with net.host().serving() as client:
        async with net.host(seed).serving() as server:
            server.set_handler(PROTO, echo)
            addr = server.addrs()
            stream = await client.open_stream(server.peer_id, PROTO, addrs=addr)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            server.go_down()
            # As a killed peer: a clean EOF to the reader, a broken stream to the writer.
            assert await stream.receive_some() == b""
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b"more")
            assert client.connected_peers() == []
        # Down: refused at once, no waiting for a timeout.
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await client.open_stream(server.peer_id, PROTO, addrs=addr, timeout=30)
        assert trio.current_time() == start
        # Back (a new process, the same identity and address).
        async with net.host(seed, server.addr).serving() as again:
            again.set_handler(PROTO, echo)
            stream = await client.open_stream(again.peer_id, PROTO)  # the address is known
            await stream.send_all(b"back")
            assert await stream.receive_some() == b"back"


async def test_unknown_address_or_protocol_is_unreachable(clock: VirtualClock) -> None:
    net = MemoryNetwork()
    async with net.host().serving() as server, net.host().serving() as client:
        with pytest.raises(PeerUnreachable, match="no known address"):
            await client.open_stream(server.peer_id, PROTO)
        with pytest.raises(PeerUnreachable, match="connection refused"):
            await client.open_stream(server.peer_id, PROTO, addrs=[net.new_address()])
        with pytest.raises(PeerUnreachable, match="not supported"):
            await client.open_stream(server.peer_id, PROTO, addrs=server.addrs())


async def test_a_partition_is_silent_until_the_timeout_on_the_virtual_clock(clock: VirtualClock) -> None:
    net = MemoryNetwork()
    async with net.host().serving() as server, net.host().serving() as client:
        server.set_handler(PROTO, echo)
        stream = await client.open_stream(server.peer_id, PROTO, addrs=server.addrs())
        net.partition(server.peer_id)
        real = time.monotonic()
        start = trio.current_time()
        with pytest.raises(PeerUnreachable, match="partitioned"):
            await client.open_stream(server.peer_id, PROTO, timeout=20)
        assert trio.current_time() - start == 20
        # An open stream passes nothing while cut: the caller's timeout ends the wait.
        await stream.send_all(b"lost?")
        with trio.move_on_after(30) as scope:
            await stream.receive_some()
        assert scope.cancelled_caught
        assert time.monotonic() - real < 5  # fifty virtual seconds, no real waiting
        # Healed: what was sent arrives.
        net.heal()
        assert await stream.receive_some() == b"lost?"


async def test_a_failing_handler_resets_its_stream_and_the_host_serves_on(clock: VirtualClock) -> None:
    net = MemoryNetwork()

    async def broken(stream: Stream) -> None:
        await stream.receive_some()
        raise RuntimeError("a bug in a handler")

    async with net.host().serving() as server, net.host().serving() as client:
        server.set_handler(PROTO, broken)
        server.set_handler("/echo", echo)
        stream = await client.open_stream(server.peer_id, PROTO, addrs=server.addrs())
        await stream.send_all(b"x")
        assert await stream.receive_some() == b""
        assert [(p, peer, type(e)) for p, peer, e in server.failures] == [(PROTO, client.peer_id, RuntimeError)]
        other = await client.open_stream(server.peer_id, "/echo")
        await other.send_all(b"still here")
        assert await other.receive_some() == b"still here"


async def test_the_clock_stands_still_while_a_thread_works(clock: VirtualClock) -> None:
    with trio.move_on_after(20) as scope:
        await trio.to_thread.run_sync(time.sleep, 0.1)
        await trio.sleep(0)
    assert not scope.cancelled_caught
    assert trio.current_time() < 20
    # And jumps when nothing but the timer can happen.
    real = time.monotonic()
    await trio.sleep(3600)
    assert trio.current_time() >= 3600
    assert time.monotonic() - real < 1


def test_mockclock_autojump_would_fire_timeouts_during_a_thread() -> None:
    """Why the kit has a clock of its own (if trio changes this, MockClock will do)."""
    from trio.testing import MockClock

    async def main() -> bool:
        with trio.move_on_after(20) as scope:
            await trio.to_thread.run_sync(time.sleep, 0.1)
            await trio.sleep(0)
        return scope.cancelled_caught

    assert trio.run(main, clock=MockClock(autojump_threshold=0))


async def test_a_deadlocked_kit_test_fails_instead_of_hanging(clock: VirtualClock) -> None:
    from corestate.node.runtime.testkit import KitError, memory_mesh, scratch_dir

    real = time.monotonic()
    with scratch_dir() as homes, pytest.raises(KitError, match="real seconds"):
        async with memory_mesh(homes, 1, real_timeout=0.5) as kit:
            assert kit.nodes[0].up
            await trio.Event().wait()  # nothing will ever set it, and no timer runs
    assert time.monotonic() - real < 5


def test_kit_homes_are_sealed_cheaply_and_the_default_cost_is_untouched() -> None:
    from corestate.node import keystore
    from corestate.node.runtime.testkit import CHEAP_KDF

    root = os.urandom(32)
    cheap = keystore.seal(root, b"pw", cost=CHEAP_KDF)
    assert (cbor2.loads(cheap)["ops"], cbor2.loads(cheap)["mem"]) == CHEAP_KDF
    assert keystore.unseal(cheap, b"pw") == root  # the cost travels with the key
    default = cbor2.loads(keystore.seal(root, b"pw"))
    assert (default["ops"], default["mem"]) == (keystore.OPS, keystore.MEM) == (3, 64 << 20)
