#!/usr/bin/env python3
"""Hostile-peer benchmark (issue 11): what a stranger on the network costs a node.

One real daemon (``corestate node run`` in its own process, made by ``LocalMesh``, the
default config: a 64 MiB pool for strangers) and hostile peers in this process, libp2p
hosts with fresh identities speaking the wire protocol through ``corestate.protocol``
(``p2p``, ``messages``, ``streams``, ``group``). Printed against the targets of issue 11:

- **memory**: a stranger sends 8 concurrent 60 MiB PUTs; the rise of the daemon's peak
  RSS (``VmHWM`` of /proc/<pid>/status, before and after). Target: < 200 MiB.
- **``node info`` latency** over the control socket, as the CLI sends it (``corestate node
  info --json`` run in a separate process, so that the flood's own CPU here does not
  count; the interpreter's start is not in the time), median and max of ``--calls`` calls: with no
  load, then while each flood runs. Target: < 1 s. The floods:
  - AUDIT requests, 4 at a time, against a stranger's 48 MiB share of 1 KiB blocks;
  - over-quota PUTs of 60 MiB, 4 at a time (the stranger already holds 48 MiB);
  - 4 non-member frames of about 4 MiB at a time to the catalog sync protocol
    (``corestate.protocol.group.SYNC_PROTOCOL``; the daemon first creates a group, since
    only then does it serve sync — and then its share service serves members only, which
    is why this flood runs last).

Run it against another checkout (e.g. the code before issue 11) with that checkout's
interpreter: the script imports only what every version has.

Usage (from the repository root):

    python tests/bench/bench_hostile.py                 # ~2 minutes
    python tests/bench/bench_hostile.py --calls 9 --keep

Options: ``--workdir DIR`` (default tests/bench/.work/hostile, removed at the end unless
``--keep``), ``--calls N`` (node info calls per phase, default 5), ``--warmup S`` (seconds
a flood runs before the calls, default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import blake3
import cbor2
import trio
from corestate.erasure import share as sharefmt
from corestate.node.runtime.localmesh import LocalMesh, MeshNode
from corestate.protocol import group as g
from corestate.protocol import messages as m
from corestate.protocol import wire
from corestate.protocol.errors import ProtocolError
from corestate.protocol.p2p import P2PHost, open_host
from corestate.protocol.streams import Channel

MiB = 1 << 20
SHARE_PROTOCOL = "/corestate/share/1"
MEMORY_TARGET = 200 * MiB
LATENCY_TARGET = 1.0

# Measured in a child process, with the CLI itself (whatever the control protocol of the
# checkout is): `corestate node info --json` through the daemon; one JSON list of seconds
# on stdout.
_LATENCY_PROBE = r"""
import contextlib, io, json, sys, time
from pathlib import Path
from corestate.node.cli import main
home, calls, pause = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
out = []
for _ in range(calls):
    t = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["--home", str(home), "node", "info", "--json"])
    if code != 0:
        raise SystemExit(f"node info exited {code}")
    out.append(time.monotonic() - t)
    time.sleep(pause)
print(json.dumps(out))
"""


def peak_rss(node: MeshNode) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def info_latency(node: MeshNode, calls: int) -> list[float]:
    p = subprocess.run([sys.executable, "-P", "-c", _LATENCY_PROBE, str(node.home), str(calls), "0.2"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"latency probe failed: {p.stderr[-2000:]}")
    return [float(x) for x in json.loads(p.stdout.strip().splitlines()[-1])]


async def channel(host: P2PHost, node: MeshNode, protocol: str = SHARE_PROTOCOL,
                  timeout: float = 30.0) -> Channel:
    stream = await host.open_stream(node.peer_id, protocol, addrs=[node.addr], timeout=timeout)
    return Channel(stream, timeout=timeout)


async def push(ch: Channel, body: bytes, stall: float = 8.0) -> None:
    """Write ``body`` until done, broken, or stalled (a holder that stopped reading)."""
    view = memoryview(body)
    try:
        for at in range(0, len(body), MiB):
            with trio.fail_after(stall):
                await ch.stream.send_all(view[at:at + MiB])
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def put_and_read(host: P2PHost, node: MeshNode, header: m.PutShare, body: bytes,
                       stall: float = 8.0) -> Any:
    """A PUT that pushes its whole body whatever the answer (an attacker does not stop),
    reading the answer meanwhile; the answer, or the error that ended the request."""
    try:
        ch = await channel(host, node)
    except ProtocolError as exc:
        return exc
    try:
        await ch.send(header)
        reply: Any = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(push, ch, body, stall)
            with trio.move_on_after(60):
                try:
                    reply = await ch.receive()
                except ProtocolError as exc:
                    reply = exc
        return reply
    except ProtocolError as exc:
        return exc
    finally:
        with trio.move_on_after(2):
            await ch.aclose()


async def flood(workers: int, one: Callable[[], Awaitable[Any]], stop: trio.Event) -> Counter[str]:
    """Run ``one`` again and again in ``workers`` tasks until ``stop``; the outcomes of the
    requests that ended (reply types and error codes)."""
    seen: Counter[str] = Counter()

    async def loop() -> None:
        while not stop.is_set():
            try:
                r = await one()
            except (ProtocolError, trio.TooSlowError) as exc:
                r = exc
                await trio.sleep(0.05)
            seen[getattr(r, "code", None) or type(r).__name__] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(loop)
        await stop.wait()
        nursery.cancel_scope.cancel()
    return seen


async def latency_under(node: MeshNode, calls: int, warmup: float,
                        flood_fn: Callable[[trio.Event], Awaitable[Counter[str]]] | None,
                        ) -> tuple[list[float], Counter[str]]:
    if flood_fn is None:
        return await trio.to_thread.run_sync(info_latency, node, calls), Counter()
    stop = trio.Event()
    made: Counter[str] = Counter()
    lat: list[float] = []

    async def run_flood() -> None:
        nonlocal made
        made = await flood_fn(stop)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_flood)
        await trio.sleep(warmup)
        try:
            lat = await trio.to_thread.run_sync(info_latency, node, calls)
        finally:
            stop.set()
    return lat, made


def sync_frame() -> bytes:
    """One frame of about 4 MiB (within the sync protocol's frame limit) that is cheap to
    send and dear to decode: a ``SyncPush`` whose ``ops`` are millions of one-byte items.
    A receiver that decodes before it checks membership pays for every item."""
    limit = min(getattr(g, "SYNC_MAX_FRAME", 4 * MiB), 4 * MiB)
    head = cbor2.dumps({"t": g.SyncPush.TYPE, "v": m.VERSION, "catalog": b"", "ops": []}, canonical=True)
    count = limit - len(head) - 16  # one byte per item, the array head grows by 4
    payload = cbor2.dumps({"t": g.SyncPush.TYPE, "v": m.VERSION, "catalog": b"", "ops": [0] * count},
                          canonical=True)
    return wire.encode_frame(payload)


async def main_async(args: argparse.Namespace, lm: LocalMesh) -> list[tuple[str, str, str]]:
    node = lm.nodes[0]
    rows: list[tuple[str, str, str]] = []
    print(f"daemon pid {node.proc.pid if node.proc else '?'}, home {node.home}", flush=True)
    async with open_host(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"]) as host:
        # (a) memory under 8 concurrent 60 MiB PUTs from a stranger.
        body = os.urandom(60 * MiB)
        digest = blake3.blake3(body).digest()
        before = peak_rss(node)
        t0 = time.monotonic()
        replies: list[Any] = []

        async def one_put() -> None:
            replies.append(await put_and_read(host, node, m.PutShare(
                pack=os.urandom(32), index=0, size=len(body), digest=digest), body))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(one_put)
        rise = peak_rss(node) - before
        kinds = sorted(getattr(r, "code", type(r).__name__) for r in replies)
        print(f"memory: 8 x 60 MiB PUTs in {time.monotonic() - t0:.1f} s, replies {kinds}", flush=True)
        rows.append(("peak RSS rise, 8 x 60 MiB stranger PUTs",
                     f"{rise / MiB:.0f} MiB (peak {peak_rss(node) / MiB:.0f} MiB)",
                     f"< {MEMORY_TARGET // MiB} MiB " + ("PASS" if rise < MEMORY_TARGET else "FAIL")))

        def lat_row(what: str, lat: list[float], made: Counter[str]) -> None:
            med, worst = statistics.median(lat), max(lat)
            extra = f", {sum(made.values())} flood requests" if made else ""
            if made:
                print(f"  flood outcomes: {dict(made)}", flush=True)
            rows.append((f"node info, {what}", f"median {med:.2f} s / max {worst:.2f} s{extra}",
                         f"< {LATENCY_TARGET:g} s " + ("PASS" if worst < LATENCY_TARGET else "FAIL")))
            print(f"{what}: {[round(x, 2) for x in lat]}{extra}", flush=True)

        lat, _ = await latency_under(node, args.calls, args.warmup, None)
        lat_row("no load", lat, Counter())

        # (b1) AUDITs of a 1 KiB-block share the stranger holds.
        data = os.urandom(48 * MiB - sharefmt.HEADER_SIZE)
        pack = blake3.blake3(data).digest()
        share = sharefmt.make_shares(data, 1, 1, pack_id=pack, block_size=1024)[0]
        del data
        reply = await put_and_read(host, node, m.PutShare(pack=pack, index=0, size=len(share),
                                   digest=blake3.blake3(share).digest()), share)
        if not isinstance(reply, m.Ok):
            raise RuntimeError(f"the audit share was not stored: {reply}")
        blocks = sharefmt.read_header(share).block_count
        del share

        async def one_audit() -> Any:
            ch = await channel(host, node)
            ch.max_frame = m.AUDIT_MAX_FRAME
            try:
                await ch.send(m.AuditShare(pack=pack, index=0, block=int.from_bytes(os.urandom(4), "big") % blocks))
                return await ch.receive()
            finally:
                with trio.move_on_after(2):
                    await ch.aclose()

        lat, made = await latency_under(node, args.calls, args.warmup,
                                        lambda stop: flood(4, one_audit, stop))
        lat_row("AUDIT flood (1 KiB blocks)", lat, made)

        # (b2) over-quota PUTs: 60 MiB against the 16 MiB left of the pool.
        async def one_over() -> Any:
            return await put_and_read(host, node, m.PutShare(pack=os.urandom(32), index=0, size=len(body),
                                                             digest=digest), body, stall=2.0)

        lat, made = await latency_under(node, args.calls, args.warmup,
                                        lambda stop: flood(8, one_over, stop))
        lat_row("over-quota PUT flood (60 MiB)", lat, made)

        # (b3) 4 MiB sync frames from a non-member, once the daemon is in a group.
        await trio.to_thread.run_sync(lambda: lm.run(node, "group", "create", "bench"))
        frame = sync_frame()

        async def one_sync() -> Any:
            stream = await host.open_stream(node.peer_id, g.SYNC_PROTOCOL, addrs=[node.addr], timeout=30)
            try:
                ch = Channel(stream, timeout=30, max_frame=g.SYNC_MAX_FRAME, decode=g.decode)
                await ch.stream.send_all(frame)
                return await ch.receive_or_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                return exc
            finally:
                with trio.move_on_after(2):
                    await stream.aclose()

        lat, made = await latency_under(node, args.calls, args.warmup,
                                        lambda stop: flood(4, one_sync, stop))
        lat_row(f"sync flood ({len(frame) / MiB:.1f} MiB frames, non-member)", lat, made)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "hostile")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    lm = LocalMesh(args.workdir, 1)
    try:
        lm.create()
        lm.start()
        rows = trio.run(main_async, args, lm)
    finally:
        lm.close()
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nhostile peers against one daemon (load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'':{w0}} | {'result':{w1}} | target |")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|")
    for a, b, c in rows:
        print(f"| {a:{w0}} | {b:{w1}} | {c} |")
    return 0 if all("FAIL" not in r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
