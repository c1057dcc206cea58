"""Repair decisions: which shares of which packs to rebuild, from where, and why.

A pack coded k-of-n is *full* when every share index 0..n-1 has a holder whose copy just
proved good (a HAS of the right size and an audited block), *degraded* when fewer than n
but at least k indexes do, and *at risk* below k. Repair makes a degraded pack full again:
it rebuilds the missing indexes from any k good shares (or from the owner's local copy of
the pack, which costs no download) and places each on a new holder. Shares are ciphertext,
so rebuilding needs no data key.

Pure: no I/O, no clock. The runtime surveys the holders, asks :func:`plan_repair`, carries
the plan out, and records what it placed.

Rules (each decision carries its reasons):

- Only indexes without a good holder are rebuilt; a good share is never moved.
- A holder that answered *missing* or *corrupt* for a share is forgotten for it: it has
  nothing useful, and keeping it listed would make the pack look better than it is.
  An *unreachable* holder is kept: it may come back, and its share then adds to the count.
- Source: the local copy when there is one; else the mesh when at least k indexes are good;
  else the pack cannot be repaired now (it needs more holders back online).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VERDICTS = ("ok", "missing", "corrupt", "unreachable")


@dataclass(frozen=True, slots=True)
class ShareState:
    """What one holder's copy of one share looked like in the last survey."""

    index: int
    peer: str
    verdict: str  # one of VERDICTS


@dataclass(frozen=True, slots=True)
class PackHealth:
    pack: bytes
    k: int
    n: int
    shares: tuple[ShareState, ...]  # every recorded (index, holder), with its verdict
    local: bool  # a whole copy of the pack is in the owner's store

    @property
    def good(self) -> frozenset[int]:
        return frozenset(s.index for s in self.shares if s.verdict == "ok")


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Make shares ``indexes`` of ``pack`` (from ``source``) and place each on a new holder;
    drop the ledger rows in ``forget``."""

    pack: bytes
    k: int
    n: int
    source: str  # "local" or "mesh"
    indexes: tuple[int, ...]
    forget: tuple[tuple[int, str], ...]
    holders: tuple[tuple[int, str], ...]  # the good (index, peer) pairs, kept as they are
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unrepairable:
    pack: bytes
    good: int
    k: int
    reason: str


@dataclass(frozen=True, slots=True)
class RepairPlan:
    rebuilds: tuple[Rebuild, ...]
    unrepairable: tuple[Unrepairable, ...]
    full: int  # packs that need nothing


def plan_repair(packs: Iterable[PackHealth]) -> RepairPlan:
    """Decide the repair of every pack given (see the module rules)."""
    rebuilds: list[Rebuild] = []
    lost: list[Unrepairable] = []
    full = 0
    for p in sorted(packs, key=lambda h: h.pack):
        for s in p.shares:
            if s.verdict not in VERDICTS:
                raise ValueError(f"unknown verdict {s.verdict!r}")
        good = p.good
        forget = tuple(sorted((s.index, s.peer) for s in p.shares if s.verdict in ("missing", "corrupt")))
        needed = tuple(i for i in range(p.n) if i not in good)
        if not needed:
            full += 1
            if forget:  # nothing to rebuild, but a bad copy is still listed beside a good one
                rebuilds.append(Rebuild(p.pack, p.k, p.n, "none", (), forget, _holders(p),
                                        tuple(_why(p, i) for i, _ in forget)))
            continue
        if p.local:
            source = "local"
        elif len(good) >= p.k:
            source = "mesh"
        else:
            lost.append(Unrepairable(
                p.pack, len(good), p.k,
                f"only {len(good)} of the {p.k} shares needed answered well and there is no "
                "local copy: bring holders back online, then repair"))
            continue
        rebuilds.append(Rebuild(p.pack, p.k, p.n, source, needed, forget, _holders(p),
                                tuple(_why(p, i) for i in needed)))
    return RepairPlan(tuple(rebuilds), tuple(lost), full)


def _holders(p: PackHealth) -> tuple[tuple[int, str], ...]:
    return tuple(sorted((s.index, s.peer) for s in p.shares if s.verdict == "ok"))


def _why(p: PackHealth, index: int) -> str:
    states = [s for s in p.shares if s.index == index]
    if not states:
        return f"share {index}: never placed"
    return f"share {index}: " + ", ".join(f"{s.verdict} at {s.peer[-8:]}" for s in states)
