"""A hostile stranger against one daemon, for the chaos campaign's ``hostile`` fault.

Run in a node's network namespace (so it reaches the mesh bridge)::

    python hostile.py KIND PEER_ID MULTIADDR SECONDS SEED

KIND is one of ``put-flood`` (shares PUT without end from one fresh identity, four at a
time: the global quota for strangers must hold), ``many-identities`` (a new identity for
every PUT), ``many-streams`` (64 streams opened at once and held idle), ``lying-put``
(PUTs whose bytes do not match the announced digest or size). It prints one JSON line of
what it saw (replies by type, errors by type) when the time is up. Its own failures are
not the product's: the campaign judges only the daemon (alive, no traceback, quotas).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corestate.protocol import messages as m
from meshutil import ask, open_channel, open_client, put, valid_share


@dataclass
class Target:
    peer_id: str
    addr: str


async def _put_flood(t: Target, rng: random.Random, seen: Counter[str], fresh: bool) -> None:
    async def one() -> None:
        while True:
            seed = rng.randbytes(32) if fresh else seed0
            try:
                async with open_client(seed) as client:
                    for _ in range(1 if fresh else 1_000_000):
                        pack, share = valid_share(rng.choice([4096, 65536, 262144]))
                        reply = await put(client, t, pack, 0, share)
                        seen[type(reply).__name__ + (f":{reply.code}" if isinstance(reply, m.Error) else "")] += 1
            except Exception as exc:
                seen[f"exc:{type(exc).__name__}"] += 1
                await trio.sleep(0.2)
    seed0 = rng.randbytes(32)
    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(one)


async def _many_streams(t: Target, rng: random.Random, seen: Counter[str]) -> None:
    async with open_client(rng.randbytes(32)) as client:
        while True:
            chans = []
            for _ in range(64):
                try:
                    chans.append(await open_channel(client, t, timeout=5))
                    seen["opened"] += 1
                except Exception as exc:
                    seen[f"exc:{type(exc).__name__}"] += 1
            await trio.sleep(2)
            for ch in chans:
                with trio.move_on_after(1):
                    try:
                        await ch.aclose()
                    except Exception:
                        pass


async def _lying_put(t: Target, rng: random.Random, seen: Counter[str]) -> None:
    async with open_client(rng.randbytes(32)) as client:
        while True:
            pack, share = valid_share(65536)
            lie = rng.choice(["digest", "short"])
            if lie == "digest":
                msg = m.PutShare(pack=pack, index=0, size=len(share), digest=rng.randbytes(32))
                body = share
            else:
                import blake3
                msg = m.PutShare(pack=pack, index=0, size=len(share), digest=blake3.blake3(share).digest())
                body = share[: len(share) // 2]
            try:
                reply, _ = await ask(client, t, msg, bulk=body, timeout=10)
                seen[f"{lie}:{type(reply).__name__}"] += 1
            except Exception as exc:
                seen[f"{lie}:exc:{type(exc).__name__}"] += 1


async def main(kind: str, peer: str, addr: str, seconds: float, seed: int) -> dict[str, int]:
    t = Target(peer, addr)
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    with trio.move_on_after(seconds):
        if kind in ("put-flood", "many-identities"):
            await _put_flood(t, rng, seen, fresh=kind == "many-identities")
        elif kind == "many-streams":
            await _many_streams(t, rng, seen)
        elif kind == "lying-put":
            await _lying_put(t, rng, seen)
        else:
            raise SystemExit(f"unknown kind {kind}")
    return dict(seen)


if __name__ == "__main__":
    kind, peer, addr, secs, seed = sys.argv[1:6]
    print(json.dumps({"kind": kind, "seen": trio.run(main, kind, peer, addr, float(secs), int(seed))}),
          flush=True)
