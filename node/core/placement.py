"""Share placement: which peers hold the n shares of a pack.

Role: a pure function of (pack id, candidates). The runtime passes the live members with
their advertised free capacity and failure-domain labels and records the result in the
owner's catalog partition; the simulator calls the very same functions.

Method: capacity-weighted rendezvous hashing (weighted HRW). Each candidate gets the score
``capacity / -ln(u)``, with ``u`` a 64-bit fraction strictly inside (0, 1) taken from
``BLAKE3(pack || peer as UTF-8)``; higher scores rank first. ``-ln(u) / capacity`` is an
exponential variable of rate ``capacity``, so a peer is ranked first with probability
``capacity / total capacity``, and adding or removing one peer moves only the packs whose
first choice it becomes or was (about 1/N of them).

Invariants:
- Deterministic: same pack and candidates (in any order) give the same placement; no clock,
  no randomness, no I/O.
- Never two shares on one peer; candidates with capacity <= 0 and excluded peers are never
  chosen. A peer listed twice counts once (its first entry).
- Failure domains: ``Candidate.domains`` lists labels from the most general to the most
  specific, e.g. ``("site-a", "host-1")``; ``()`` makes the peer its own domain. Each share
  goes to the best-ranked candidate that opens the most general domain not used yet:
  a new site before a second share in any site, a new host before a second share on any
  host; only when every domain at a level is used does a level repeat, and then to the
  least-loaded domain (shares per site, then per host), rank breaking ties.
- Decisions carry their reasons: a full placement without any compromise has none; a short
  placement (``short`` > 0) or a repeated domain says why.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from blake3 import blake3

_TWO_64 = 1 << 64
_LEVEL_NAMES = ("sites", "hosts")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer that could hold a share: its PeerID, free capacity (bytes) and domain labels."""

    peer: str
    capacity: int
    domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the shares of ``pack`` go: ``peers[i]`` holds share ``i``.

    ``short`` counts the shares that could not be placed (they are the last indices:
    ``len(peers) == n - short``); ``reasons`` explain shortfalls and domain repeats.
    """

    pack: bytes
    peers: tuple[str, ...]
    reasons: tuple[str, ...]
    short: int


def _fraction(pack: bytes, peer: str) -> tuple[float, float]:
    """Return (u, -ln u) for ``u = (h + 1) / (2^64 + 1)``, h the first 8 digest bytes.

    ``u`` is strictly inside (0, 1) for every h. Near 1 a float cannot hold ``u`` apart from
    1.0, so ``-ln u`` is computed from ``1 - u`` there (log1p), which keeps it positive.
    """
    h = int.from_bytes(blake3(bytes(pack) + peer.encode("utf-8")).digest(8), "big")
    u = (h + 1) / (_TWO_64 + 1)
    if u < 0.5:
        return u, -math.log(u)
    return u, -math.log1p(-((_TWO_64 - h) / (_TWO_64 + 1)))


def _unique(candidates: Iterable[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    out: list[Candidate] = []
    for c in candidates:
        if c.peer not in seen:
            seen.add(c.peer)
            out.append(c)
    return out


def _ranked(pack: bytes, candidates: Iterable[Candidate]) -> list[Candidate]:
    """All distinct candidates, best first: by weighted score, capacity-0 ones last by u."""
    keyed = []
    for c in _unique(candidates):
        u, neg_ln = _fraction(pack, c.peer)
        score = c.capacity / neg_ln if c.capacity > 0 else 0.0
        # The peer string breaks (astronomically unlikely) exact ties deterministically.
        keyed.append(((-score, -u, c.peer), c))
    keyed.sort(key=lambda kc: kc[0])
    return [c for _, c in keyed]


def rank(pack: bytes, candidates: Iterable[Candidate]) -> list[str]:
    """Rendezvous order of the candidates for ``pack``: which holders to ask first.

    Used on restore when placement records are lost: the peers chosen at upload rank high
    (exactly first when capacities have not changed). Candidates with capacity 0 are kept,
    last, since they may still hold shares placed before they filled up.
    """
    return [c.peer for c in _ranked(pack, candidates)]


def _path(c: Candidate) -> tuple[tuple[str, str], ...]:
    # Tagged so that a label can never collide with a peer that is its own domain.
    if c.domains:
        return tuple(("d", d) for d in c.domains)
    return (("p", c.peer),)


def _level_name(level: int) -> str:
    return _LEVEL_NAMES[level] if level < len(_LEVEL_NAMES) else f"level-{level + 1} domains"


class _Spreader:
    """Greedy domain-aware picker over a ranked candidate list."""

    def __init__(self, ranked: list[Candidate]) -> None:
        self.pool = ranked
        self.levels = max((len(c.domains) for c in ranked), default=0)
        self.counts: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.reasons: list[str] = []
        self._reported: set[tuple[tuple[str, str], ...]] = set()

    def prefixes(self, c: Candidate) -> list[tuple[tuple[str, str], ...]]:
        path = _path(c)
        # Levels beyond a candidate's own labels are unique to that peer.
        return [path[: i + 1] if i < len(path) else (*path, ("p", c.peer))
                for i in range(max(self.levels, 1))]

    def note_used(self, c: Candidate) -> None:
        for p in self.prefixes(c):
            self.counts[p] += 1

    def _key(self, pos: int, c: Candidate) -> tuple[int, tuple[int, ...], int]:
        counts = tuple(self.counts[p] for p in self.prefixes(c))
        # Depth of the most specific already-used level: 0 = opens a new site.
        depth = sum(1 for n in counts if n)
        return depth, counts, pos

    def pick(self, taken: set[str]) -> Candidate | None:
        best: tuple[tuple[int, tuple[int, ...], int], Candidate] | None = None
        for pos, c in enumerate(self.pool):
            if c.peer in taken:
                continue
            key = self._key(pos, c)
            if best is None or key < best[0]:
                best = (key, c)
        if best is None:
            return None
        chosen = best[1]
        self._explain(chosen)
        self.note_used(chosen)
        taken.add(chosen.peer)
        return chosen

    def _explain(self, c: Candidate) -> None:
        for level, p in enumerate(self.prefixes(c)[: len(c.domains)]):
            if self.counts[p] and p not in self._reported:
                self._reported.add(p)
                total = len({self.prefixes(x)[level] for x in self.pool})
                label = "/".join(c.domains[: level + 1])
                self.reasons.append(f"domain {label} repeated: only {total} {_level_name(level)}")


def _eligible(
    candidates: Iterable[Candidate], exclude: Collection[str], reasons: list[str]
) -> list[Candidate]:
    unique = _unique(candidates)
    skip = set(exclude)
    excluded = sum(1 for c in unique if c.peer in skip)
    full = sum(1 for c in unique if c.peer not in skip and c.capacity <= 0)
    if excluded:
        reasons.append(f"{excluded} candidate{'s' if excluded != 1 else ''} excluded")
    if full:
        reasons.append(f"{full} candidate{'s' if full != 1 else ''} without capacity")
    return [c for c in unique if c.peer not in skip and c.capacity > 0]


def place(
    pack: bytes, n: int, candidates: Sequence[Candidate], *, exclude: Collection[str] = ()
) -> Placement:
    """Choose distinct peers for the ``n`` shares of ``pack`` (see the module invariants)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pack = bytes(pack)
    notes: list[str] = []
    eligible = _eligible(candidates, exclude, notes)
    spreader = _Spreader(_ranked(pack, eligible))
    taken: set[str] = set()
    peers: list[str] = []
    for _ in range(n):
        c = spreader.pick(taken)
        if c is None:
            break
        peers.append(c.peer)
    short = n - len(peers)
    reasons: list[str] = []
    if short:
        have = len(eligible)
        reasons.append(f"only {have} candidate{'s' if have != 1 else ''} for n={n}")
        reasons.extend(notes)
    reasons.extend(spreader.reasons)
    return Placement(pack, tuple(peers), tuple(reasons), short)


def replace(
    pack: bytes,
    placement_peers: Sequence[str | None],
    index: int,
    candidates: Sequence[Candidate],
    *,
    exclude: Collection[str] = (),
) -> str | None:
    """The best peer to take over share ``index`` of ``pack``, or None if no peer is left.

    Never returns a peer of ``placement_peers`` (the current holder of ``index`` included:
    it is being replaced). Follows the rendezvous order, spreading over failure domains
    against the holders of the other shares as :func:`place` does; without labels this is
    the next-ranked unused peer.
    """
    if not 0 <= index < len(placement_peers):
        raise ValueError(f"share index {index} outside a placement of {len(placement_peers)}")
    pack = bytes(pack)
    eligible = _eligible(candidates, exclude, [])
    spreader = _Spreader(_ranked(pack, eligible))
    known = {c.peer: c for c in _unique(candidates)}
    for i, peer in enumerate(placement_peers):
        if i != index and peer is not None and peer in known:
            spreader.note_used(known[peer])
    taken = {p for p in placement_peers if p is not None}
    chosen = spreader.pick(taken)
    return chosen.peer if chosen else None


def replace_all(
    pack: bytes,
    placement_peers: Sequence[str | None],
    indexes: Sequence[int],
    candidates: Sequence[Candidate],
    *,
    exclude: Collection[str] = (),
) -> list[str | None]:
    """:func:`replace` for several shares of one pack, in the order of ``indexes``: each
    share's new peer counts as a holder for the next ones. Returns one peer (or None once
    no peer is left) per index, exactly what calling :func:`replace` index by index and
    writing each answer into the placement gives.

    Without failure-domain labels anywhere (every peer its own domain) the spreading rule
    never repeats a domain that a free candidate opens, so each share takes the next-ranked
    free peer: the pack is ranked once for all its shares (the simulator's repair jobs).
    """
    for index in indexes:
        if not 0 <= index < len(placement_peers):
            raise ValueError(f"share index {index} outside a placement of {len(placement_peers)}")
    peers = list(placement_peers)
    out: list[str | None] = []
    if any(c.domains for c in candidates):
        for index in indexes:
            chosen = replace(pack, peers, index, candidates, exclude=exclude)
            out.append(chosen)
            if chosen is not None:
                peers[index] = chosen
        return out
    # A holder of a share that is not being replaced stays taken throughout: never
    # ranked (its hash would only be skipped).
    moving = set(indexes)
    kept = {p for i, p in enumerate(peers) if p is not None and i not in moving}
    ranked = _ranked(bytes(pack), [c for c in _eligible(candidates, exclude, []) if c.peer not in kept])
    for index in indexes:
        # The holders now: a replaced holder is free again for the next shares.
        taken = {p for p in peers if p is not None}
        pick = next((c.peer for c in ranked if c.peer not in taken), None)
        out.append(pick)
        if pick is not None:
            peers[index] = pick
    return out
