"""The health summary: how safe each pack is, given what we know of its holders.

``corestate health`` and the health alerts both come from here; the simulator uses the same
functions to count what a run lost.

A pack coded k-of-n counts the *distinct* share indexes held by holders whose state counts
(ok or suspect, node/core/holders.py); a holder evicted or lost adds nothing, and an index
held twice (a rebuilt share, plus the old copy of a holder that came back) counts once. So
a share is never counted twice. With ``good`` such indexes a pack is

- ``full`` when ``good >= n``;
- ``degraded`` when ``k < good < n``: it can lose one more holder and still be read;
- ``at_risk`` when ``good == k`` (one more loss and it is gone) or when ``good < k`` but
  the owner still has the pack in its store (safe only as long as that one disk);
- ``lost`` when ``good < k`` and no local copy exists: the mesh cannot give it back until
  holders return.

Note: ``node/core/redundancy.py`` classifies what a *survey* just saw (full / degraded /
at-risk / local-only); this module is about standing over time (lost holders, reputation).

Repair outlook: rebuilding the missing indexes of a pack reads k shares (none when the
owner has the pack locally) and writes one share per missing index; the ETA is those bytes
over the repair rate (``[health] repair_bandwidth``, or the rate last measured), ``None``
when no rate is known or a pack cannot be repaired now.

Alerts (:func:`alerts`), decided from a pack's level before and after:
``redundancy-low`` (warning) when a pack falls to ``low`` or below (default at_risk),
``pack-lost`` (critical) when it becomes lost; each once per fall, not on every report;
many at once are one alert (:func:`batch`).
Holder alerts (``holder-evicted``, ``holder-lost``) come from the holder book's
``StateChanged`` commands (:func:`holder_alert`).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from corestate.node.core.holders import COUNTS, HolderRecord, HolderState, StateChanged


class Level(enum.Enum):
    """How safe a pack is. The values leave the process (``health --json``)."""

    FULL = "full"
    DEGRADED = "degraded"
    AT_RISK = "at_risk"
    LOST = "lost"


_ORDER = (Level.FULL, Level.DEGRADED, Level.AT_RISK, Level.LOST)


def level(good: int, k: int, n: int, *, local: bool) -> Level:
    if good >= n:
        return Level.FULL
    if good > k:
        return Level.DEGRADED
    if good == k or local:
        return Level.AT_RISK
    return Level.LOST


@dataclass(frozen=True, slots=True)
class PackView:
    """What this node knows of one pack: its code, share size, who holds which index."""

    pack: bytes
    k: int
    n: int
    share_size: int
    holders: tuple[tuple[int, str], ...]  # (index, peer), as recorded
    local: bool = False


def counted(p: PackView, states: Mapping[str, HolderState]) -> frozenset[int]:
    """The share indexes of ``p`` that count: held by an ok or suspect holder."""
    return frozenset(i for i, peer in p.holders if states.get(peer, HolderState.OK) in COUNTS)


def pack_level(p: PackView, states: Mapping[str, HolderState]) -> Level:
    return level(len(counted(p, states)), p.k, p.n, local=p.local)


def surplus(p: PackView, states: Mapping[str, HolderState], peer: str) -> list[int]:
    """Indexes of ``p`` that ``peer`` holds and another counted holder holds too: its copy
    is surplus (delete it, signed). A copy that is the only one of its index is kept."""
    others = frozenset(i for i, q in p.holders if q != peer and states.get(q, HolderState.OK) in COUNTS)
    return sorted(i for i, q in p.holders if q == peer and i in others)


@dataclass(frozen=True, slots=True)
class Tally:
    full: int = 0
    degraded: int = 0
    at_risk: int = 0
    lost: int = 0

    def add(self, lv: Level) -> Tally:
        return Tally(self.full + (lv is Level.FULL), self.degraded + (lv is Level.DEGRADED),
                     self.at_risk + (lv is Level.AT_RISK), self.lost + (lv is Level.LOST))


@dataclass(frozen=True, slots=True)
class HolderSummary:
    peer: str
    state: HolderState
    last_seen: float | None
    passed: int
    failed: int
    shares: int
    score: float


@dataclass(frozen=True, slots=True)
class RepairOutlook:
    packs: int  # packs below full that can be repaired now
    shares: int  # share indexes to rebuild
    bytes: int  # bytes to move (reads of k shares + writes of the rebuilt ones)
    unrepairable: int  # packs below k with no local copy: wait for holders
    eta: float | None  # seconds to full redundancy at ``rate``; None: unknown
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    total: Tally
    snapshots: tuple[tuple[str, Tally], ...]  # (snapshot id, its packs' tally), as given
    holders: tuple[HolderSummary, ...]
    repair: RepairOutlook
    levels: Mapping[bytes, Level]


def outlook(packs: Iterable[PackView], states: Mapping[str, HolderState], rate: float | None) -> RepairOutlook:
    need_packs = shares = moved = stuck = 0
    for p in packs:
        good = counted(p, states)
        missing = p.n - len(good)
        if missing <= 0 or (p.local and not p.holders):
            continue  # full; or never placed (a backup's upload places it, not repair)
        if len(good) < p.k and not p.local:
            stuck += 1
            continue
        need_packs += 1
        shares += missing
        moved += missing * p.share_size + (0 if p.local else p.k * p.share_size)
    if need_packs == 0:
        why = ("nothing to repair" if not stuck else
               f"{stuck} pack(s) have fewer than k shares on holders that count: they need holders back")
        return RepairOutlook(0, 0, 0, stuck, 0.0 if not stuck else None, why)
    if not rate or rate <= 0:
        return RepairOutlook(need_packs, shares, moved, stuck, None,
                             f"{shares} share(s) of {need_packs} pack(s) to rebuild; no repair rate known yet")
    eta = moved / rate
    why = f"{shares} share(s) of {need_packs} pack(s) to rebuild, {moved} bytes at {rate:.0f} B/s"
    if stuck:
        why += f"; {stuck} pack(s) wait for holders"
    return RepairOutlook(need_packs, shares, moved, stuck, eta if not stuck else None, why)


def summarize(packs: Sequence[PackView], holders: Iterable[HolderRecord],
              states: Mapping[str, HolderState], snapshots: Iterable[tuple[str, Iterable[bytes]]] = (),
              *, rate: float | None = None) -> Summary:
    """Per pack its level, in total and per snapshot (a pack a snapshot names that is not
    among ``packs`` counts as at_risk: the caller passes every pack it knows, local-only
    ones as a 1-of-1 code held by nobody, with ``local``); per holder its standing."""
    levels = {p.pack: pack_level(p, states) for p in packs}
    total = Tally()
    for lv in levels.values():
        total = total.add(lv)
    per_snap: list[tuple[str, Tally]] = []
    for sid, ids in snapshots:
        t = Tally()
        for pid in ids:
            t = t.add(levels.get(pid, Level.AT_RISK))
        per_snap.append((sid, t))
    held: dict[str, int] = {}
    for p in packs:
        for _, peer in p.holders:
            held[peer] = held.get(peer, 0) + 1
    recs = {r.peer: r for r in holders}
    summaries = []
    for peer in sorted(set(recs) | set(held)):
        r = recs.get(peer)
        summaries.append(HolderSummary(
            peer, states.get(peer, HolderState.OK), r.last_seen if r else None, r.passed if r else 0,
            r.failed if r else 0, held.get(peer, 0), r.score if r else 1.0))
    return Summary(total, tuple(per_snap), tuple(summaries), outlook(packs, states, rate), levels)


# -- alerts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertDecision:
    name: str  # one of the agreed alert names
    severity: str  # info, warning, critical
    message: str
    details: tuple[tuple[str, str], ...]


def alerts(before: Mapping[bytes, Level], after: Mapping[bytes, Level], *,
           low: Level = Level.AT_RISK) -> list[AlertDecision]:
    """Alerts for packs whose level got worse from ``before`` to ``after``: ``pack-lost``
    when one became lost, ``redundancy-low`` when one fell to ``low`` or below (once per
    fall: a pack already that low before raises nothing)."""
    out: list[AlertDecision] = []
    rank = {lv: i for i, lv in enumerate(_ORDER)}
    for pack in sorted(after):
        new, old = after[pack], before.get(pack, Level.FULL)
        if rank[new] <= rank[old]:
            continue
        details = (("pack", pack.hex()), ("level", new.value), ("was", old.value))
        if new is Level.LOST:
            out.append(AlertDecision("pack-lost", "critical",
                                     f"pack {pack.hex()[:12]} has fewer than k shares on holders that count "
                                     "and no local copy: it cannot be restored until holders return", details))
        elif rank[new] >= rank[low] > rank[old]:
            out.append(AlertDecision("redundancy-low", "warning",
                                     f"pack {pack.hex()[:12]} fell to {new.value} (was {old.value})", details))
    return out


def batch(decisions: Sequence[AlertDecision], per_kind: int) -> list[AlertDecision]:
    """At most ``per_kind`` alerts of one name: more packs than that falling at once (a
    holder of thousands of shares went) make one alert that counts them (``packs``) and
    names the first eight (``pack0``...)."""
    out: list[AlertDecision] = []
    for name in sorted({d.name for d in decisions}):
        same = [d for d in decisions if d.name == name]
        if len(same) <= per_kind:
            out += same
            continue
        first = same[0]
        out.append(AlertDecision(
            name, first.severity, f"{len(same)} packs: {first.message} (and {len(same) - 1} more)",
            (("packs", str(len(same))), *((f"pack{i}", dict(d.details)["pack"]) for i, d in enumerate(same[:8])))))
    return out


def holder_alert(change: StateChanged) -> AlertDecision | None:
    """The alert for a holder's change of state, if it deserves one."""
    details = (("peer", change.peer), ("was", change.old.value), ("reason", change.reason))
    if change.new is HolderState.EVICTED:
        return AlertDecision("holder-evicted", "warning",
                             f"holder {change.peer[-8:]} evicted: {change.reason}; its shares are rebuilt "
                             "elsewhere and it gets no new ones", details)
    if change.new is HolderState.LOST:
        return AlertDecision("holder-lost", "warning",
                             f"holder {change.peer[-8:]} counted lost: {change.reason}; its shares are "
                             "rebuilt on others", details)
    return None


__all__ = ["AlertDecision", "Level", "PackView", "RepairOutlook", "Summary", "Tally", "alerts", "batch", "counted",
           "holder_alert", "level", "outlook", "pack_level", "summarize", "surplus"]
