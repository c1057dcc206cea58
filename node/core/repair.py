"""Repair decisions: which shares of which packs to rebuild, from where, and why.

A pack coded k-of-n is *full* when every share index 0..n-1 has a holder whose copy just
proved good (a HAS of the right size and an audited block), *degraded* when fewer than n
but at least k indexes do, and *at risk* below k. Repair makes a degraded pack full again:
it rebuilds the missing indexes from any k good shares (or from the owner's local copy of
the pack, which costs no download) and places each on a new holder. Shares are ciphertext,
so rebuilding needs no data key.

Pure: no I/O, no clock, no global randomness. The runtime surveys the holders (judging each
answer with :func:`judge_share`, auditing the block :func:`audit_block` picks, keeping the
:func:`best` verdict per share index), asks :func:`plan_repair`, carries the plan out, and
records what it placed.

Rules (each decision carries its reasons):

- Only indexes without a good holder are rebuilt; a good share is never moved.
- A holder that answered *missing* or *corrupt* for a share is forgotten for it: it has
  nothing useful, and keeping it listed would make the pack look better than it is.
  An *unreachable* holder is kept: it may come back, and its share then adds to the count.
- Source: the local copy when there is one; else the mesh when at least k indexes are good;
  else the pack cannot be repaired now (it needs more holders back online).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What one holder's copy of one share looked like. The values are what leaves the
    process (the CLI's text and JSON), so they never change."""

    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"
    UNREACHABLE = "unreachable"


VERDICTS = tuple(v.value for v in Verdict)

# Best first, when several holders answer for one share index: a good copy anywhere makes the
# index good; a corrupt copy is worse news than a missing one only in that it was there
# (an alert is raised for it), and an unreachable holder tells nothing at all.
_RANK = {Verdict.OK: 0, Verdict.CORRUPT: 1, Verdict.MISSING: 2, Verdict.UNREACHABLE: 3}


def best(a: Verdict | None, b: Verdict) -> Verdict:
    """The better of two holders' verdicts for one share index (``a`` None: none yet)."""
    return b if a is None or _RANK[b] < _RANK[a] else a


class Audit(enum.Enum):
    """How a holder answered an AUDIT of one block."""

    PROVED = "proved"  # the proof checks against the recorded root
    FAILED = "failed"  # a proof that does not check: the holder's copy is spoiled
    REFUSED = "refused"  # the holder says it has no such share (after all)
    UNREACHABLE = "unreachable"


def judge_share(expected_size: int, has_size: int | None, audit: Audit | None = None) -> Verdict:
    """One holder's verdict for one share: ``has_size`` is the size its HAS answered (None:
    the HAS went unanswered), ``audit`` the AUDIT's outcome (None: not audited; the caller
    audits only a share of the right size)."""
    if has_size is None:
        return Verdict.UNREACHABLE
    if has_size != expected_size:
        return Verdict.MISSING  # a wrong size is no copy of this share
    if audit is None or audit is Audit.PROVED:
        return Verdict.OK
    if audit is Audit.REFUSED:
        return Verdict.MISSING
    if audit is Audit.UNREACHABLE:
        return Verdict.UNREACHABLE
    return Verdict.CORRUPT


def share_blocks(share_size: int, header_size: int, block_size: int) -> int:
    """How many blocks the body of a share of ``share_size`` bytes has (at least one)."""
    return max(1, math.ceil((share_size - header_size) / block_size))


def audit_block(blocks: int, rng: random.Random) -> int:
    """The block of a share (of ``blocks`` blocks) to audit. The runtime passes an
    unpredictable ``rng`` (the holder must not know ahead which block will be asked, or it
    could keep only those); tests pass a seeded one."""
    if blocks < 1:
        raise ValueError(f"a share has at least one block, not {blocks}")
    return rng.randrange(blocks)


@dataclass(frozen=True, slots=True)
class ShareState:
    """What one holder's copy of one share looked like in the last survey."""

    index: int
    peer: str
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class PackHealth:
    pack: bytes
    k: int
    n: int
    shares: tuple[ShareState, ...]  # every recorded (index, holder), with its verdict
    local: bool  # a whole copy of the pack is in the owner's store

    @property
    def good(self) -> frozenset[int]:
        return frozenset(s.index for s in self.shares if s.verdict is Verdict.OK)


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
            if not isinstance(s.verdict, Verdict):
                raise ValueError(f"unknown verdict {s.verdict!r}")
        good = p.good
        forget = tuple(sorted((s.index, s.peer) for s in p.shares if s.verdict in (Verdict.MISSING, Verdict.CORRUPT)))
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
    return tuple(sorted((s.index, s.peer) for s in p.shares if s.verdict is Verdict.OK))


def _why(p: PackHealth, index: int) -> str:
    states = [s for s in p.shares if s.index == index]
    if not states:
        return f"share {index}: never placed"
    return f"share {index}: " + ", ".join(f"{s.verdict.value} at {s.peer[-8:]}" for s in states)
