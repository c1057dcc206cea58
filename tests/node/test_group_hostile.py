"""A group daemon under hostile peers built from the protocol modules (real daemons, real
libp2p on loopback): strangers flooding the sync and join services with 4 MiB frames must
not stall the node (its control socket answers within a second), and a peer speaking
another version of the sync or join protocol gets a refusal that says so."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from corestate.node.runtime import client
from corestate.node.runtime.localmesh import LocalMesh
from corestate.protocol import control as c
from corestate.protocol import group as gw
from corestate.protocol import wire
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import open_host

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
FLOOD_FRAME = 4 << 20  # what the old services read from anyone before checking membership


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """One group admin for the module: the tests only talk to it (and it must serve on)."""
    mesh = LocalMesh(tmp_path_factory.mktemp("hostile") / "mesh", 1)
    mesh.create()
    try:
        mesh.start()
        mesh.run(mesh.nodes[0], "group", "create", "office")
        yield mesh
    finally:
        mesh.close()


def node_info_seconds(home: Path) -> float:
    """One `node info` over the daemon's control socket, as the CLI sends it."""
    start = time.monotonic()
    s = client.connect(home, timeout=30)
    assert s is not None, "no daemon answers the control socket"
    with s:
        s.settimeout(30)
        reply = client.call(s, c.NodeInfoCall())
        assert isinstance(reply, c.NodeInfoResult)
        return time.monotonic() - start


def flood_payload() -> bytes:
    """A 4 MiB payload that is cheap to send and dear to parse: a sync message whose
    ``have`` is an array of four million one-byte integers."""
    import cbor2
    n = FLOOD_FRAME - 64
    return bytes(cbor2.dumps({"t": "sync", "v": 1, "have": [0] * n}, canonical=True))


async def flood(addr: str, peer: str, protocol: str, payload: bytes, until: float) -> int:
    """A fresh identity opens streams to ``protocol`` and writes a 4 MiB frame on each,
    again and again until ``until``; returns how many frames it started."""
    frame = wire.encode_frame(payload)
    sent = 0
    async with open_host(NodeKeys.from_root(os.urandom(32)).identity_seed, LOOPBACK) as host:
        while time.monotonic() < until:
            try:
                with trio.move_on_after(max(0.1, until - time.monotonic())):
                    stream = await host.open_stream(peer, protocol, addrs=[addr], timeout=10)
                    sent += 1
                    try:
                        for i in range(0, len(frame), 1 << 18):
                            await stream.send_all(frame[i:i + (1 << 18)])
                        with trio.move_on_after(5):
                            while await stream.receive_some():
                                pass
                    finally:
                        with trio.move_on_after(1):
                            await stream.aclose()
            except Exception:  # the node refused, reset or closed: that is its right
                await trio.sleep(0.05)
    return sent


def test_strangers_flooding_sync_and_join_do_not_stall_the_node(admin: LocalMesh) -> None:
    node = admin.nodes[0]
    quiet = min(node_info_seconds(node.home) for _ in range(3))
    payload = flood_payload()
    assert len(wire.encode_frame(payload)) <= FLOOD_FRAME + 8
    latencies: list[float] = []
    started: list[int] = []

    async def main() -> None:
        until = time.monotonic() + 8
        async with trio.open_nursery() as nursery:
            async def one(protocol: str) -> None:
                started.append(await flood(node.addr, node.peer_id, protocol, payload, until))
            for protocol in (gw.SYNC_PROTOCOL, gw.SYNC_PROTOCOL, gw.SYNC_PROTOCOL, gw.JOIN_PROTOCOL):
                nursery.start_soon(one, protocol)
            await trio.sleep(1.5)  # the flood is under way
            while time.monotonic() < until - 0.5:
                latencies.append(await trio.to_thread.run_sync(node_info_seconds, node.home))
                await trio.sleep(0.2)

    trio.run(main)
    assert sum(started) >= 4, started
    worst = max(latencies)
    print(f"node info: quiet {quiet:.3f} s, under flood worst {worst:.3f} s of {len(latencies)}")
    assert worst < 1.0, f"node info took {worst:.2f} s during the flood (quiet: {quiet:.2f} s)"
    # The node still works afterwards.
    assert admin.run(node, "group", "members", "--json").returncode == 0


def test_a_peer_speaking_an_earlier_version_is_told_so(admin: LocalMesh) -> None:
    from corestate.protocol import messages as m
    from corestate.protocol.streams import Channel
    node = admin.nodes[0]
    answers: dict[str, m.Message] = {}

    async def main() -> None:
        async with open_host(NodeKeys.from_root(os.urandom(32)).identity_seed, LOOPBACK) as host:
            for protocol in gw.OLD_PROTOCOLS:
                with trio.fail_after(15):  # a clear answer, not a silent hang
                    stream = await host.open_stream(node.peer_id, protocol, addrs=[node.addr])
                    ch = Channel(stream, timeout=10)
                    # What a version-1 peer sends first (the old JoinRequest is the same shape).
                    await ch.send(m.Ok())
                    answers[protocol] = await ch.receive()
                    await ch.aclose()

    trio.run(main)
    for protocol in gw.OLD_PROTOCOLS:
        err = answers[protocol]
        assert isinstance(err, m.Error) and err.code == "version", err
        assert gw.SYNC_PROTOCOL in err.message and "upgrade" in err.message


def test_a_stranger_is_refused_before_it_sends_anything(admin: LocalMesh) -> None:
    from corestate.protocol import messages as m
    from corestate.protocol.streams import Channel
    node = admin.nodes[0]
    got: list[m.Message] = []

    async def main() -> None:
        async with open_host(NodeKeys.from_root(os.urandom(32)).identity_seed, LOOPBACK) as host:
            with trio.fail_after(15):
                stream = await host.open_stream(node.peer_id, gw.SYNC_PROTOCOL, addrs=[node.addr])
                ch = Channel(stream, timeout=10, decode=gw.decode)
                got.append(await ch.receive())  # nothing sent: the refusal comes anyway
                await ch.aclose()

    trio.run(main)
    (err,) = got
    assert isinstance(err, m.Error) and err.code == "refused" and "not a member" in err.message
