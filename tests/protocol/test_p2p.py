"""corestate.protocol.p2p on real libp2p hosts over loopback.

What a daemon relies on: a stable PeerID from the identity seed; streams that carry bytes
intact; a host that survives failing handlers and hostile connections (garbage, silence,
an offer of the plaintext security protocol); bounded waits on a frozen peer; fast,
clear dial failures; a peer that comes back being reachable at once.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from contextlib import AsyncExitStack

import blake3
import pytest
import trio
from corestate.protocol.errors import PeerClosed, PeerTimeout, PeerUnreachable
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import P2PHost, open_host
from corestate.protocol.streams import Channel, Stream
from libp2p.peer.id import ID

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ECHO = "/corestate/test-echo/1"


def seed(n: int) -> bytes:
    return NodeKeys.from_root(bytes([n]) * 32).identity_seed


async def echo(stream: Stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def receive_exactly(stream: Stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return bytes(buf)


async def assert_echo(client: P2PHost, server: P2PHost, payload: bytes = b"ping") -> None:
    with trio.fail_after(10):
        stream = await client.open_stream(server.peer_id, ECHO, addrs=server.addrs())
        await stream.send_all(payload)
        assert await receive_exactly(stream, len(payload)) == payload
        await stream.aclose()


def loopback_port(host: P2PHost) -> int:
    addr = next(a for a in host.addrs() if a.startswith("/ip4/127.0.0.1/"))
    return int(addr.split("/")[4])


async def test_peer_id_is_the_identity_seed_key() -> None:
    keys = NodeKeys.from_root(b"\x07" * 32)
    async with open_host(keys.identity_seed, LOOPBACK) as host:
        first = host.peer_id
    async with open_host(keys.identity_seed, LOOPBACK) as host:
        assert host.peer_id == first
    assert first == keys.peer_id
    assert first.startswith("12D3KooW")


async def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        async with open_host(b"short", LOOPBACK):
            pass


async def test_addrs_are_concrete_and_carry_the_peer_id() -> None:
    async with open_host(seed(1)) as host:  # default: 0.0.0.0, port 0
        addrs = host.addrs()
    assert addrs
    assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in addrs)
    for addr in addrs:
        assert "/0.0.0.0/" not in addr
        assert addr.endswith(f"/p2p/{host.peer_id}")
        assert int(addr.split("/")[4]) > 0
    assert len({a.split("/")[4] for a in addrs}) == 1  # one listener, one port


async def test_echo_and_remote_peer() -> None:
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:
        seen: list[str] = []

        async def handler(stream: Stream) -> None:
            seen.append(stream.remote_peer)
            await echo(stream)

        a.set_handler(ECHO, handler)
        stream = await b.open_stream(a.peer_id, ECHO, addrs=a.addrs())
        assert stream.remote_peer == a.peer_id
        await stream.send_all(b"hello")
        assert await receive_exactly(stream, 5) == b"hello"
        await stream.aclose()
        await stream.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        assert seen == [b.peer_id]
        assert a.peer_id in b.connected_peers()


async def test_8_mib_arrive_intact() -> None:
    payload = os.urandom(8 << 20)
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:

        async def digest_of(stream: Stream) -> None:
            hasher, got = blake3.blake3(), 0
            while got < len(payload):
                data = await stream.receive_some(1 << 20)
                if not data:
                    break
                hasher.update(data)
                got += len(data)
            await stream.send_all(hasher.digest())

        a.set_handler("/corestate/test-digest/1", digest_of)
        with trio.fail_after(30):
            stream = await b.open_stream(a.peer_id, "/corestate/test-digest/1", addrs=a.addrs())
            view = memoryview(payload)
            for start in range(0, len(view), 1 << 20):
                await stream.send_all(view[start : start + (1 << 20)])
            assert await receive_exactly(stream, 32) == blake3.blake3(payload).digest()


async def test_failing_handler_resets_its_stream_and_the_host_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:

        async def boom(stream: Stream) -> None:
            await stream.receive_some()
            raise RuntimeError("handler bug")

        a.set_handler("/corestate/test-boom/1", boom)
        a.set_handler(ECHO, echo)
        with caplog.at_level(logging.WARNING, logger="corestate.p2p"), trio.fail_after(10):
            for _ in range(2):
                stream = await b.open_stream(a.peer_id, "/corestate/test-boom/1", addrs=a.addrs())
                await stream.send_all(b"request")
                assert await stream.receive_some() == b""  # reset reads as EOF
                await assert_echo(b, a)
        failures = [r for r in caplog.records if r.name == "corestate.p2p"]
        assert len(failures) == 2
        assert "/corestate/test-boom/1" in failures[0].getMessage()
        assert failures[0].exc_info is not None


def multistream_message(text: str) -> bytes:
    body = text.encode() + b"\n"
    assert len(body) < 128
    return bytes([len(body)]) + body


async def read_until_closed(stream: trio.SocketStream, limit: float) -> tuple[bytes, bool]:
    """Everything the host sends, and whether it closed the connection within ``limit``."""
    got = b""
    with trio.move_on_after(limit):
        try:
            while data := await stream.receive_some(4096):
                got += data
        except trio.BrokenResourceError:
            pass
        return got, True
    return got, False


async def test_hostile_raw_connections_do_not_hurt_the_host() -> None:
    async with (
        open_host(seed(1), LOOPBACK) as a,
        open_host(seed(2), LOOPBACK) as b,
        AsyncExitStack() as raw,
        trio.open_nursery() as nursery,
    ):
        a.set_handler(ECHO, echo)
        port = loopback_port(a)

        async def connect() -> trio.SocketStream:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            raw.push_async_callback(stream.aclose)
            return stream

        dropped: dict[str, trio.Event] = {}

        async def watch(name: str, stream: trio.SocketStream) -> None:
            dropped[name] = trio.Event()
            await read_until_closed(stream, 60)
            dropped[name].set()

        # Silent: connects and never sends a byte. Random: bytes that may announce a
        # long multistream message which never comes. Both must wait for the host's
        # handshake timeout (10 s in libp2p); meanwhile the host must serve others.
        nursery.start_soon(watch, "silent", await connect())
        random_bytes = await connect()
        await random_bytes.send_all(os.urandom(4096))
        nursery.start_soon(watch, "random", random_bytes)

        # A whole multistream message that is not the multistream header: dropped at once.
        garbage = await connect()
        await garbage.send_all(bytes([64]) + os.urandom(64))
        _, closed = await read_until_closed(garbage, 5)
        assert closed, "the host kept a connection that sent garbage"

        # Noise is offered and accepted (so the refusal below is about plaintext)...
        noise = await connect()
        await noise.send_all(multistream_message("/multistream/1.0.0"))
        await noise.send_all(multistream_message("/noise"))
        reply = b""
        with trio.move_on_after(5):
            while multistream_message("/noise") not in reply:
                data = await noise.receive_some(4096)
                if not data:
                    break
                reply += data
        assert multistream_message("/noise") in reply

        # ...plaintext is not: the host answers "na" and never echoes the protocol back.
        plain = await connect()
        await plain.send_all(multistream_message("/multistream/1.0.0"))
        await plain.send_all(multistream_message("/plaintext/2.0.0"))
        reply, _ = await read_until_closed(plain, 2)
        assert multistream_message("na") in reply
        assert b"/plaintext/2.0.0" not in reply

        await assert_echo(b, a)
        with trio.fail_after(15):
            await dropped["silent"].wait()
            await dropped["random"].wait()
        await assert_echo(b, a)


async def test_a_peer_that_stops_reading_times_out_the_sender_only() -> None:
    async with (
        open_host(seed(1), LOOPBACK) as a,
        open_host(seed(2), LOOPBACK) as b,
        open_host(seed(3), LOOPBACK) as c,
    ):
        stalled = trio.Event()

        async def never_reads(stream: Stream) -> None:
            stalled.set()
            await trio.sleep_forever()

        a.set_handler("/corestate/test-stall/1", never_reads)
        a.set_handler(ECHO, echo)
        stream = await b.open_stream(a.peer_id, "/corestate/test-stall/1", addrs=a.addrs())
        channel = Channel(stream, timeout=1.0)
        with trio.fail_after(20), pytest.raises((PeerTimeout, PeerClosed)) as info:
            await channel.send_bulk(bytes(64 << 20))
        # Channel's per-write timeout (1 s) fires before yamux's own 5 s window wait.
        assert isinstance(info.value, PeerTimeout)
        assert stalled.is_set()
        await channel.aclose()
        # The stalled stream blocks neither other peers nor other streams of the same peer.
        await assert_echo(c, a)
        await assert_echo(b, a)


async def test_dial_to_a_dead_address_fails_fast_and_says_where() -> None:
    port = free_port()
    dead = NodeKeys.from_root(b"\x09" * 32).peer_id
    async with open_host(seed(2), LOOPBACK) as b:
        start = trio.current_time()
        with pytest.raises(PeerUnreachable) as info:
            await b.open_stream(dead, ECHO, addrs=[f"/ip4/127.0.0.1/tcp/{port}"], timeout=5)
        assert trio.current_time() - start < 2
        assert info.value.retryable
        assert info.value.peer == dead
        assert dead in str(info.value)
        assert f"/ip4/127.0.0.1/tcp/{port}" in str(info.value)

        # No address at all: also PeerUnreachable, at once.
        with pytest.raises(PeerUnreachable, match="no known address"):
            await b.open_stream(NodeKeys.from_root(b"\x0a" * 32).peer_id, ECHO, timeout=5)


async def test_unresponsive_address_times_out() -> None:
    # A listening socket that never accepts: TCP connects, the Noise handshake never starts.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        dead = NodeKeys.from_root(b"\x09" * 32).peer_id
        async with open_host(seed(2), LOOPBACK) as b:
            start = trio.current_time()
            with pytest.raises(PeerUnreachable, match="within 1 s"):
                await b.open_stream(dead, ECHO, addrs=[f"/ip4/127.0.0.1/tcp/{port}"], timeout=1)
            assert trio.current_time() - start < 3


async def test_a_peer_that_comes_back_is_reachable_at_once() -> None:
    port = free_port()
    keys = NodeKeys.from_root(b"\x0b" * 32)
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{keys.peer_id}"
    async with open_host(seed(2), LOOPBACK) as b:
        with pytest.raises(PeerUnreachable):
            await b.open_stream(keys.peer_id, ECHO, addrs=[addr], timeout=5)
        # The same failure through libp2p's own dialing also puts the peer in its 60 s
        # negative dial cache; open_stream must lift that block before dialing again.
        swarm = b._swarm
        with pytest.raises(Exception, match=r"unable to connect|negative cache"):
            await swarm.dial_peer(ID.from_base58(keys.peer_id))
        assert swarm._negative_peer_cache.is_blocked(keys.peer_id)

        async with open_host(keys.identity_seed, [f"/ip4/127.0.0.1/tcp/{port}"]) as back:
            back.set_handler(ECHO, echo)
            start = trio.current_time()
            with trio.fail_after(5):
                stream = await b.open_stream(keys.peer_id, ECHO, addrs=[addr])
            assert trio.current_time() - start < 2
            assert not swarm._negative_peer_cache.is_blocked(keys.peer_id)
            await stream.send_all(b"back")
            assert await receive_exactly(stream, 4) == b"back"
            await stream.aclose()


async def test_the_first_reachable_address_wins() -> None:
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:
        a.set_handler(ECHO, echo)
        dead = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{a.peer_id}"
        stream = await b.open_stream(a.peer_id, ECHO, addrs=[dead, *a.addrs()], timeout=5)
        await stream.send_all(b"x")
        assert await receive_exactly(stream, 1) == b"x"
        await stream.aclose()


async def test_an_address_of_another_peer_is_refused() -> None:
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:
        other = NodeKeys.from_root(b"\x0c" * 32).peer_id
        with pytest.raises(ValueError, match="belongs to"):
            await b.open_stream(other, ECHO, addrs=a.addrs())


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def multicast_works() -> bool:
    """Can this machine hear its own multicast? (Not in every container or CI runner.)"""
    group = "224.0.0.251"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(("", 0))
            port = rx.getsockname()[1]
            rx.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")),
            )
            rx.settimeout(1.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"corestate-probe", (group, port))
            return rx.recvfrom(64)[0] == b"corestate-probe"
    except OSError:
        return False


async def test_mdns_discovery() -> None:
    if not multicast_works():
        pytest.skip("multicast to 224.0.0.251 is not delivered on this machine (no mDNS)")
    found: list[tuple[str, list[str]]] = []
    async with open_host(seed(1), mdns=True) as a:
        a.set_handler(ECHO, echo)
        async with open_host(seed(2), mdns=True) as b:
            b.on_peer_discovered(lambda peer, addrs: found.append((peer, addrs)))
            with trio.fail_after(15):
                while not any(peer == a.peer_id for peer, _ in found):
                    await trio.sleep(0.1)
            addrs = next(addrs for peer, addrs in found if peer == a.peer_id)
            assert addrs
            assert all("/0.0.0.0/" not in x and x.endswith(a.peer_id) for x in addrs)
            stream = await b.open_stream(a.peer_id, ECHO, addrs=addrs, timeout=5)
            await stream.send_all(b"hi")
            assert await receive_exactly(stream, 2) == b"hi"
            await stream.aclose()


async def test_an_oversized_negotiation_message_is_refused_without_memory_growth() -> None:
    """GHSA-hmjq-g7pp-rw3x: libp2p 0.8.1 reads a multistream message of any announced
    length. A stranger announces 256 MiB and sends 4 MiB of it: the host must drop the
    connection after the length prefix and allocate nothing near the claim."""
    import tracemalloc

    from corestate.protocol.p2p import NEGOTIATION_MAX_BYTES

    claimed = 256 * 2**20

    def uvarint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            if n:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:
        a.set_handler(ECHO, echo)
        port = loopback_port(a)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            attacker = await trio.open_tcp_stream("127.0.0.1", port)
            sent = 0
            with trio.move_on_after(20):
                try:
                    await attacker.send_all(uvarint(claimed))
                    chunk = b"x" * 65536
                    while sent < 4 * 2**20:
                        await attacker.send_all(chunk)
                        sent += len(chunk)
                except trio.BrokenResourceError:
                    pass
            _, closed = await read_until_closed(attacker, 10)
            await attacker.aclose()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert closed, "the host kept a connection that announced a 256 MiB negotiation message"
        assert peak - before < 8 * 2**20, f"memory grew by {(peak - before) / 2**20:.1f} MiB"
        # The cap leaves room for real negotiation: the host still serves others.
        assert NEGOTIATION_MAX_BYTES >= 256
        await assert_echo(b, a)


async def test_an_error_in_the_hosts_block_reaches_the_caller() -> None:
    """The relay and DCUtR services run beside the block: they must not swallow its error
    (libp2p's background_trio_service did, hiding failures of everything above)."""
    with pytest.raises(BaseException) as caught:
        async with open_host(seed(1), LOOPBACK):
            raise ValueError("boom")
    assert "boom" in repr(caught.value) or any(
        "boom" in repr(e) for e in getattr(caught.value, "exceptions", ()))


@pytest.mark.parametrize("over", [False, True], ids=["within", "past"])
async def test_expect_bulk_opens_the_window_to_the_body_and_no_further(over: bool) -> None:
    """A receiver that admitted a body of ``size`` opens yamux's window to it: the sender
    writes the whole body while the receiver reads nothing yet. Past ``BULK_WINDOW`` the
    sender must wait for the reader, and the bytes still arrive intact."""
    from corestate.protocol.p2p import BULK_WINDOW
    size = BULK_WINDOW + (1 << 20) if over else BULK_WINDOW - (64 << 10)
    payload = os.urandom(size)
    sent, reading, done = trio.Event(), trio.Event(), trio.Event()
    finished: list[bool] = []  # per send: whether the receiver had begun to read by then
    got: list[bytes] = []
    async with open_host(seed(1), LOOPBACK) as a, open_host(seed(2), LOOPBACK) as b:

        async def receiver(stream: Stream) -> None:
            await stream.expect_bulk(size)  # type: ignore[attr-defined]
            # Read nothing until the sender is done or stuck (libp2p's sender gives up
            # after 5 s without a window update).
            with trio.move_on_after(3):
                await sent.wait()
            reading.set()
            got.append(await receive_exactly(stream, size))
            done.set()

        a.set_handler("/corestate/test-window/1", receiver)
        with trio.fail_after(90):
            stream = await b.open_stream(a.peer_id, "/corestate/test-window/1", addrs=a.addrs())
            await trio.sleep(0.5)  # the receiver runs; its window update reaches this side

            async def send() -> None:
                await stream.send_all(payload)
                finished.append(reading.is_set())
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await done.wait()
    assert got and got[0] == payload
    # Within the window the whole body went before anyone read; past it, only after.
    assert finished == [over]
