"""One transport suite, run over the in-memory pair, over the test kit's memory hosts
(``node.runtime.testkit.MemoryHost``) and over real libp2p on loopback.

Each test gets ``connect(handler)``: it serves ``handler`` on a fresh server stream and
returns the client end. Whatever the transport, a Channel must carry messages and bulk
data, catch a truncated or corrupt transfer by its length and hash, refuse an oversize
frame, and never wait forever on a frozen peer.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import blake3
import pytest
import trio
from corestate.node.runtime.testkit import MemoryNetwork
from corestate.protocol import messages as m
from corestate.protocol.errors import (
    LocalProtocolError,
    PeerClosed,
    PeerTimeout,
    RemoteProtocolError,
    TransferError,
)
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import open_host
from corestate.protocol.streams import Channel, Stream, memory_stream_pair
from corestate.protocol.wire import encode_frame

Handler = Callable[[Stream], Awaitable[None]]
Connect = Callable[[Handler], Awaitable[Stream]]

PACK = bytes(range(32))
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


@pytest.fixture(params=["memory", "memoryhost", "libp2p"])
async def connect(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Connect]:
    if request.param == "memory":

        async def connect_memory(handler: Handler) -> Stream:
            client, server = memory_stream_pair("client", "server")

            async def serve() -> None:
                # As the libp2p host does: the stream is closed when the handler ends.
                try:
                    await handler(server)
                finally:
                    await server.aclose()

            nursery.start_soon(serve)
            return client

        yield connect_memory
        return

    server_seed = NodeKeys.from_root(b"\x21" * 32).identity_seed
    client_seed = NodeKeys.from_root(b"\x22" * 32).identity_seed
    if request.param == "memoryhost":
        net = MemoryNetwork()
        async with (
            net.host(server_seed).serving() as mserver,
            net.host(client_seed).serving() as mclient,
        ):
            mids = itertools.count()

            async def connect_memoryhost(handler: Handler) -> Stream:
                protocol_id = f"/corestate/test-transport-{next(mids)}/1"
                mserver.set_handler(protocol_id, handler)
                stream = await mclient.open_stream(mserver.peer_id, protocol_id, addrs=mserver.addrs())
                assert stream.remote_peer == mserver.peer_id
                return stream

            yield connect_memoryhost
        return

    async with (
        open_host(server_seed, LOOPBACK) as server,
        open_host(client_seed, LOOPBACK) as client,
    ):
        ids = itertools.count()

        async def connect_libp2p(handler: Handler) -> Stream:
            protocol_id = f"/corestate/test-transport-{next(ids)}/1"
            server.set_handler(protocol_id, handler)
            return await client.open_stream(server.peer_id, protocol_id, addrs=server.addrs())

        yield connect_libp2p


async def test_request_and_reply(connect: Connect) -> None:
    async def serve(stream: Stream) -> None:
        channel = Channel(stream, timeout=5)
        while (request := await channel.receive_or_eof()) is not None:
            if isinstance(request, m.Capacity):
                await channel.send(m.CapacityReply(free=1 << 40, quota_left=123))
            else:
                await channel.send(
                    m.Error(code="unsupported", message=request.TYPE, retryable=False)
                )

    channel = Channel(await connect(serve), timeout=5)
    await channel.send(m.Capacity())
    assert await channel.receive() == m.CapacityReply(free=1 << 40, quota_left=123)
    await channel.send(m.HasShares(items=((PACK, 3),)))
    assert await channel.receive() == m.Error(code="unsupported", message="has", retryable=False)
    await channel.aclose()


async def test_bulk_both_ways_with_digest(connect: Connect) -> None:
    share = os.urandom(3 * (1 << 20) + 12345)  # several 1 MiB writes and a tail
    digest = blake3.blake3(share).digest()
    stored: list[bytes] = []

    async def serve(stream: Stream) -> None:
        channel = Channel(stream, timeout=5)
        put = await channel.receive()
        assert isinstance(put, m.PutShare)
        stored.append(await channel.receive_bulk(put.size, put.digest))
        await channel.send(m.Ok())
        get = await channel.receive()
        assert isinstance(get, m.GetShare)
        data = stored[0][get.offset :]
        await channel.send(m.ShareData(size=len(data), digest=blake3.blake3(data).digest()))
        await channel.send_bulk(data)
        # The next message right behind the bulk bytes must not be swallowed by them.
        await channel.send(m.Ok())

    channel = Channel(await connect(serve), timeout=5)
    await channel.send(m.PutShare(pack=PACK, index=1, size=len(share), digest=digest))
    await channel.send_bulk(share)
    assert await channel.receive() == m.Ok()
    assert stored == [share]

    await channel.send(m.GetShare(pack=PACK, index=1, offset=100, length=-1))
    header = await channel.receive()
    assert isinstance(header, m.ShareData)
    assert await channel.receive_bulk(header.size, header.digest) == share[100:]
    assert await channel.receive() == m.Ok()
    await channel.aclose()


async def test_truncated_bulk_is_detected(connect: Connect) -> None:
    share = os.urandom(1 << 20)

    async def serve(stream: Stream) -> None:
        # A server killed mid-transfer: announces the whole share, sends half, ends.
        channel = Channel(stream, timeout=5)
        await channel.receive()
        await channel.send(m.ShareData(size=len(share), digest=blake3.blake3(share).digest()))
        await channel.send_bulk(share[: len(share) // 2])

    channel = Channel(await connect(serve), timeout=5)
    await channel.send(m.GetShare(pack=PACK, index=0, offset=0, length=-1))
    header = await channel.receive()
    assert isinstance(header, m.ShareData)
    with pytest.raises(TransferError) as info:
        await channel.receive_bulk(header.size, header.digest)
    assert info.value.kind == "truncated"
    assert info.value.retryable
    assert info.value.expected == len(share)
    assert info.value.received == len(share) // 2


async def test_corrupt_bulk_is_detected(connect: Connect) -> None:
    share = os.urandom(1 << 16)

    async def serve(stream: Stream) -> None:
        channel = Channel(stream, timeout=5)
        await channel.send(m.ShareData(size=len(share), digest=blake3.blake3(share).digest()))
        await channel.send_bulk(b"\xff" + share[1:])

    channel = Channel(await connect(serve), timeout=5)
    header = await channel.receive()
    assert isinstance(header, m.ShareData)
    with pytest.raises(TransferError) as info:
        await channel.receive_bulk(header.size, header.digest)
    assert info.value.kind == "corrupt"
    assert not info.value.retryable


async def test_peer_closing_before_the_reply(connect: Connect) -> None:
    async def serve(stream: Stream) -> None:
        await Channel(stream, timeout=5).receive()

    channel = Channel(await connect(serve), timeout=5)
    await channel.send(m.Capacity())
    with pytest.raises(PeerClosed):
        await channel.receive()


async def test_oversize_frame_is_refused(connect: Connect) -> None:
    async def serve(stream: Stream) -> None:
        # 64 KiB declared against the client's 4 KiB limit; the body never has to come.
        await stream.send_all(encode_frame(b"\0" * (64 << 10))[:16])
        await trio.sleep_forever()

    channel = Channel(await connect(serve), timeout=5, max_frame=4096)
    with trio.fail_after(5), pytest.raises(RemoteProtocolError):
        await channel.receive()

    # Nor does a channel send one.
    with pytest.raises(LocalProtocolError):
        await channel.send(m.AuditReply(proof=b"\0" * 8192))


async def test_frozen_peer_times_out(connect: Connect) -> None:
    async def serve(stream: Stream) -> None:
        await trio.sleep_forever()  # accepts the stream, then never reads nor answers

    channel = Channel(await connect(serve), timeout=0.5)
    await channel.send(m.Capacity())
    start = trio.current_time()
    with pytest.raises(PeerTimeout) as info:
        await channel.receive()
    assert 0.4 < trio.current_time() - start < 3
    assert info.value.retryable
    assert info.value.timeout == 0.5
