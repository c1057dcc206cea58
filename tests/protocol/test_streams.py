"""Channel over our Stream interface: one suite, run over the memory pair and a Unix socketpair.

Timeouts are short real ones (the socketpair does real I/O); tests that measure time on
the memory pair alone use trio's autojump clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import blake3
import pytest
import trio
import trio.testing
from corestate.protocol import control, messages
from corestate.protocol.errors import (
    LocalProtocolError,
    PeerClosed,
    PeerTimeout,
    RemoteProtocolError,
    TransferError,
)
from corestate.protocol.streams import (
    BULK_WRITE,
    Channel,
    MemoryStream,
    Stream,
    TrioStream,
    memory_stream_pair,
)
from corestate.protocol.wire import encode_frame, encode_varint
from hypothesis import given, settings
from hypothesis import strategies as st

Pair = tuple[Stream, Stream]


async def socket_pair() -> Pair:
    a, b = trio.socket.socketpair()
    return TrioStream(trio.SocketStream(a)), TrioStream(trio.SocketStream(b))


async def memory_pair() -> Pair:
    return memory_stream_pair("A", "B")


@pytest.fixture(params=["memory", "socket"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    make: Callable[[], Awaitable[Pair]] = memory_pair if request.param == "memory" else socket_pair
    a, b = await make()
    yield a, b
    await a.aclose()
    await b.aclose()


def put_for(data: bytes) -> messages.PutShare:
    return messages.PutShare(
        pack=bytes(32), index=1, size=len(data), digest=blake3.blake3(data).digest()
    )


async def test_messages_both_ways(pair: Pair) -> None:
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)
    await a.send(messages.Capacity())
    assert await b.receive() == messages.Capacity()
    reply = messages.CapacityReply(free=10, quota_left=3)
    await b.send(reply)
    assert await a.receive() == reply


async def test_control_messages_with_the_control_codec(pair: Pair) -> None:
    a = Channel(pair[0], timeout=5, max_frame=control.CONTROL_MAX_FRAME, decode=control.decode)
    b = Channel(pair[1], timeout=5, max_frame=control.CONTROL_MAX_FRAME, decode=control.decode)
    big = control.BackupCall(paths=tuple(b"/" + b"p" * 4095 for _ in range(200)),
                             exclude=tuple("e" * 1024 for _ in range(200)), k=2, n=4, estimate=False,
                             skipped=False)
    async with trio.open_nursery() as n:
        n.start_soon(a.send, big)
        assert await b.receive() == big
    await b.send(control.Done(items=0))
    assert await a.receive() == control.Done(items=0)


async def test_frozen_peer_times_out(pair: Pair) -> None:
    ch = Channel(pair[0], timeout=0.05)
    with pytest.raises(PeerTimeout) as e:
        await ch.receive()
    assert e.value.retryable
    assert e.value.timeout == 0.05
    # A peer that sent a header but then froze is caught inside bulk data too.
    await pair[1].send_all(b"abc")
    with pytest.raises(PeerTimeout):
        await ch.receive_bulk(10, bytes(32))


async def test_clean_eof_between_messages(pair: Pair) -> None:
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)
    await a.send(messages.Ok())
    await a.aclose()
    assert await b.receive_or_eof() == messages.Ok()
    assert await b.receive_or_eof() is None
    with pytest.raises(PeerClosed) as e:
        await b.receive()
    assert e.value.retryable


async def test_eof_mid_frame(pair: Pair) -> None:
    frame = encode_frame(messages.encode(messages.Capacity()))
    await pair[0].send_all(frame[:-1])
    await pair[0].aclose()
    ch = Channel(pair[1], timeout=5)
    with pytest.raises(PeerClosed, match="inside a frame"):
        await ch.receive_or_eof()


async def test_eof_mid_bulk_is_a_truncated_transfer(pair: Pair) -> None:
    data = random.Random(1).randbytes(200_000)
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)

    async def sender() -> None:
        await a.send(put_for(data))
        await a.send_bulk(data[:150_000])
        await a.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(sender)
        put = await b.receive()
        assert isinstance(put, messages.PutShare)
        with pytest.raises(TransferError) as e:
            await b.receive_bulk(put.size, put.digest)
    assert e.value.kind == "truncated"
    assert e.value.retryable
    assert (e.value.expected, e.value.received) == (200_000, 150_000)


async def test_corrupt_bulk(pair: Pair) -> None:
    data = b"share bytes" * 1000
    bad = bytearray(data)
    bad[5000] ^= 1
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)
    async with trio.open_nursery() as n:

        async def sender() -> None:
            await a.send(put_for(data))
            await a.send_bulk(bytes(bad))

        n.start_soon(sender)
        put = await b.receive()
        assert isinstance(put, messages.PutShare)
        with pytest.raises(TransferError) as e:
            await b.receive_bulk(put.size, put.digest)
    assert e.value.kind == "corrupt"
    assert not e.value.retryable


async def test_oversize_frame_fails_before_the_body(pair: Pair) -> None:
    ch = Channel(pair[1], timeout=5, max_frame=1 << 20)
    await pair[0].send_all(encode_varint((1 << 20) + 1))  # and never a body
    with trio.fail_after(2):
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            await ch.receive()


async def test_garbage_frame_is_a_remote_protocol_error(pair: Pair) -> None:
    ch = Channel(pair[1], timeout=5)
    await pair[0].send_all(encode_frame(b"\xa1\x61t\x61x"))
    with pytest.raises(RemoteProtocolError):
        await ch.receive()


async def test_sending_an_oversize_message_is_refused_locally(pair: Pair) -> None:
    ch = Channel(pair[0], timeout=5, max_frame=1000)
    with pytest.raises(LocalProtocolError):
        await ch.send(messages.AuditReply(proof=bytes(2000)))


async def test_many_messages_and_bulk_interleaved(pair: Pair) -> None:
    rng = random.Random(7)
    shares = [rng.randbytes(rng.choice([0, 1, 100, 70_000, 1_500_000])) for _ in range(12)]
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)

    async def sender() -> None:
        for i, share in enumerate(shares):
            await a.send(put_for(share))
            await a.send_bulk(memoryview(share))
            await a.send(messages.HasReply(sizes=(i,)))
        await a.aclose()

    got = []
    async with trio.open_nursery() as n:
        n.start_soon(sender)
        while (msg := await b.receive_or_eof()) is not None:
            assert isinstance(msg, messages.PutShare)
            got.append(await b.receive_bulk(msg.size, msg.digest))
            assert await b.receive() == messages.HasReply(sizes=(len(got) - 1,))
    assert got == shares


def script(shares: list[bytes]) -> tuple[bytes, list[object]]:
    """One byte string holding header + bulk + trailer for each share, and what it means."""
    out = bytearray()
    expect: list[object] = []
    for i, share in enumerate(shares):
        out += encode_frame(messages.encode(put_for(share))) + share
        out += encode_frame(messages.encode(messages.HasReply(sizes=(i,))))
        expect += [share, messages.HasReply(sizes=(i,))]
    return bytes(out), expect


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.lists(st.integers(1, 400), min_size=1, max_size=20),
)
def test_bulk_bytes_buffered_with_frames_are_not_lost(
    shares: list[bytes], pieces: list[int]
) -> None:
    """The sender's bytes arrive cut anywhere: header, bulk and next frame may share a read."""
    data, expect = script(shares)

    async def main() -> None:
        near, far = memory_stream_pair(capacity=1 << 20)
        ch = Channel(far, timeout=5)
        pos, k = 0, 0
        while pos < len(data):
            n = pieces[k % len(pieces)]
            await near.send_all(data[pos : pos + n])
            pos, k = pos + n, k + 1
        await near.aclose()
        got: list[object] = []
        while (msg := await ch.receive_or_eof()) is not None:
            if isinstance(msg, messages.PutShare):
                got.append(await ch.receive_bulk(msg.size, msg.digest))
            else:
                got.append(msg)
        assert got == expect

    trio.run(main)


async def test_bulk_of_zero_bytes(pair: Pair) -> None:
    a, b = Channel(pair[0], timeout=5), Channel(pair[1], timeout=5)
    await a.send(put_for(b""))
    await a.send_bulk(b"")
    await a.send(messages.Ok())
    put = await b.receive()
    assert isinstance(put, messages.PutShare)
    assert await b.receive_bulk(0, put.digest) == b""
    assert await b.receive() == messages.Ok()


async def test_writing_to_a_closed_peer_is_peer_closed() -> None:
    a, b = memory_stream_pair()
    await b.aclose()
    with pytest.raises(PeerClosed):
        await Channel(a, timeout=5).send(messages.Ok())


# ---------------------------------------------------------------------------------------
# Timing, on the memory pair with the autojump clock.


async def test_slow_but_moving_transfer_does_not_time_out(autojump_clock: trio.abc.Clock) -> None:
    data = random.Random(3).randbytes(3 * BULK_WRITE + 5)
    near, far = memory_stream_pair(capacity=1 << 16)
    send, recv = Channel(near, timeout=1.0), Channel(far, timeout=1.0)

    async def slow_reader() -> None:
        # 64 KiB every 50 ms: each 1 MiB write takes 0.8 s (< 1 s), the whole send 2.5 s.
        chunks: list[bytes] = []
        while sum(len(c) for c in chunks) < len(data):
            await trio.sleep(0.05)
            chunks.append(await far.receive_some(1 << 16))
        assert b"".join(chunks) == data

    start = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(slow_reader)
        await send.send_bulk(data)
    assert trio.current_time() - start > 2.0

    # And the receiving side: 1 KiB every 0.5 s against a 1 s timeout, 10 s in all.
    async def slow_writer() -> None:
        for i in range(20):
            await trio.sleep(0.5)
            await near.send_all(data[i * 1024 : (i + 1) * 1024])

    async with trio.open_nursery() as n:
        n.start_soon(slow_writer)
        got = await recv.receive_bulk(20 * 1024, blake3.blake3(data[: 20 * 1024]).digest())
    assert got == data[: 20 * 1024]


async def test_back_pressure_stalls_a_writer_until_the_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    near, far = memory_stream_pair(capacity=4096)
    ch = Channel(near, timeout=3.0)
    start = trio.current_time()
    with pytest.raises(PeerTimeout):
        await ch.send_bulk(bytes(10_000))  # nobody reads: blocked after 4096 bytes
    assert trio.current_time() - start == pytest.approx(3.0)
    assert await far.receive_some(100_000) == bytes(4096)


# ---------------------------------------------------------------------------------------
# The memory pair itself, and send_bulk's writes.


async def test_memory_pair_basics() -> None:
    a, b = memory_stream_pair("alice", "bob", capacity=8)
    assert (a.remote_peer, b.remote_peer) == ("bob", "alice")
    await a.send_all(b"12345678")
    with trio.move_on_after(0.01) as cs:
        await a.send_all(b"9")  # full: waits for the reader
    assert cs.cancelled_caught
    assert await b.receive_some(3) == b"123"
    assert await b.receive_some() == b"45678"
    await a.send_all(memoryview(b"xyz"))
    await a.aclose()
    assert await b.receive_some() == b"xyz"  # buffered bytes survive the writer's close
    assert await b.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await b.send_all(b"to a closed peer")
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"")


async def test_memory_pair_refuses_two_readers() -> None:
    a, _b = memory_stream_pair()
    async with trio.open_nursery() as n:
        n.start_soon(a.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await a.receive_some()
        n.cancel_scope.cancel()


async def test_a_blocked_reader_wakes_when_its_own_end_closes() -> None:
    a, _b = memory_stream_pair()
    async with trio.open_nursery() as n:

        async def reader() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await a.receive_some()

        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await a.aclose()


class Recorder:
    remote_peer = "R"

    def __init__(self) -> None:
        self.writes: list[bytes | memoryview] = []

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return b""

    async def send_all(self, data: bytes | memoryview) -> None:
        self.writes.append(data)

    async def aclose(self) -> None:
        pass


async def test_send_bulk_writes_memoryview_slices_of_at_most_1_mib() -> None:
    rec = Recorder()
    data = bytes(2 * BULK_WRITE + 10)
    await Channel(rec).send_bulk(data)
    assert [len(w) for w in rec.writes] == [BULK_WRITE, BULK_WRITE, 10]
    assert all(isinstance(w, memoryview) and w.obj is data for w in rec.writes)


def test_memory_stream_is_a_stream() -> None:
    s: Stream = memory_stream_pair()[0]
    assert isinstance(s, MemoryStream)
