"""One libp2p host of the NAT lab, run in a namespace by tests/node/test_nat_lab.py and
tests/bench/bench_nat.py: ``python natpeer.py ROLE JSON``. It prints one JSON line when
ready (its peer id, addresses, circuits) and, as the dialer, one line of measurements.

Roles: ``relay`` (hop for the peer ids in ``members``), ``listen`` (reserves on the relay,
serves the sink protocol), ``dial`` (reaches the listener through its circuit, sends
``size`` bytes relayed, waits up to ``wait`` s for DCUtR, sends ``size`` bytes again on a
new stream, reports times and rates). The sink answers each stream with the SHA-256 of
what it read, so every transfer is verified end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import trio
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import RelayOptions, open_host
from corestate.protocol.streams import Stream

SINK = "/corestate/test-sink/1"


def seed(n: int) -> bytes:
    return NodeKeys.from_root(bytes([n]) * 32).identity_seed


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def sink(stream: Stream) -> None:
    header = b""
    while len(header) < 8:
        data = await stream.receive_some(8 - len(header))
        if not data:
            return
        header += data
    left = int.from_bytes(header, "big")
    digest = hashlib.sha256()
    while left:
        data = await stream.receive_some(min(left, 1 << 16))
        if not data:
            return
        digest.update(data)
        left -= len(data)
    await stream.send_all(digest.digest())


async def send(stream: Stream, size: int) -> float:
    """Send ``size`` random bytes through the sink; the rate in MB/s, checked."""
    block = os.urandom(1 << 16)
    digest = hashlib.sha256()
    started = time.monotonic()
    await stream.send_all(size.to_bytes(8, "big"))
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        await stream.send_all(chunk)
        digest.update(chunk)
        sent += len(chunk)
    answer = b""
    while len(answer) < 32:
        data = await stream.receive_some(32 - len(answer))
        if not data:
            raise RuntimeError("the sink hung up before answering")
        answer += data
    if answer != digest.digest():
        raise RuntimeError("the sink read other bytes than we sent")
    return size / (time.monotonic() - started) / 1e6


async def main(role: str, cfg: dict[str, Any]) -> None:
    options = RelayOptions(hop=role == "relay")
    async with open_host(seed(cfg["seed"]), [cfg["listen"]], relay=options) as host:
        if role == "relay":
            members = set(cfg.get("members", []))
            host.set_relay_policy(lambda peer: peer in members)
            say({"peer_id": host.peer_id, "addrs": host.addrs()})
            await trio.sleep_forever()
        if role == "listen":
            host.set_handler(SINK, sink)
            circuits = await host.reserve(cfg["relay"], cfg["relay_addrs"], timeout=20)
            say({"peer_id": host.peer_id, "addrs": host.addrs(), "circuits": circuits})
            await trio.sleep_forever()
        # dial
        target = cfg["target"]
        started = time.monotonic()
        stream = await host.open_stream(target, SINK, addrs=cfg["target_addrs"], timeout=30)
        connected = time.monotonic() - started
        first = host.connection(target)
        relayed_rate = await send(stream, cfg["size"])
        await stream.aclose()
        direct_after = None
        with trio.move_on_after(cfg["wait"]):
            while host.connection(target) != "direct":
                await trio.sleep(0.05)
            direct_after = time.monotonic() - started - connected
        stream = await host.open_stream(target, SINK, timeout=30)
        second = host.connection(target)
        second_rate = await send(stream, cfg["size"])
        await stream.aclose()
        say({
            "connected_s": round(connected, 3),
            "first": first,
            "relayed_mb_s": round(relayed_rate, 1),
            "direct_after_s": None if direct_after is None else round(direct_after, 2),
            "second": second,
            "second_stream_relayed": getattr(stream, "relayed", None),
            "second_mb_s": round(second_rate, 1),
        })


if __name__ == "__main__":
    trio.run(main, sys.argv[1], json.loads(sys.argv[2]))
