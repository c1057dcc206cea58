"""``status``: this node at a glance — who it is, its peers, its last and next backup, how
safe its data is and what went wrong lately.

Works with or without a daemon. Without one nobody knows which peers are online (``online``
is None) and no backup is scheduled; the redundancy summary comes from the ledger (what
holders acknowledged at upload, asking nobody: ``check`` asks them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corestate.node.core.redundancy import Redundancy, classify
from corestate.node.local import LocalNode
from corestate.protocol import control as c


@dataclass(frozen=True, slots=True)
class Live:
    """What only a running daemon knows."""

    connected: frozenset[str] = frozenset()
    next_backup: int | None = None
    alerts: Sequence[c.Alert] = field(default_factory=tuple)


def status(node: LocalNode, live: Live | None = None) -> c.StatusResult:
    me = node.keys.peer_id
    book = {e.peer: e for e in node.book.all()}
    members = set(node.group.members()) if node.group.in_group else set()
    removed = node.group.removed()
    held = node.ledger.peers()
    peers = []
    for peer in sorted((set(e.peer for e in book.values() if e.trusted) | members) - {me} - removed):
        e = book.get(peer)
        peers.append(c.PeerStatus(
            peer_id=peer, online=None if live is None else peer in live.connected,
            trusted=bool(e and e.trusted), member=peer in members,
            last_seen_ns=(e.seen_ns or None) if e else None, shares=held.get(peer, (0, 0))[0]))
    snaps = node.repo.snapshots()
    last = snaps[-1] if snaps else None
    return c.StatusResult(
        peer_id=me, daemon=live is not None,
        group=node.group.group.hex() if node.group.in_group and node.group.group else None,
        peers=tuple(peers),
        last_backup=None if last is None else c.SnapshotRef(
            snapshot_id=last.id.hex(), short_id=last.short_id, time_ns=last.record.time_ns),
        next_backup=None if live is None else live.next_backup,
        snapshots=len(snaps),
        redundancy=redundancy(node),
        alerts=tuple(c.AlertRecord(time_ns=a.time_ns, alert=a.alert, severity=a.severity,
                                   message=a.message) for a in (live.alerts if live else ())[-64:]),
    )


def redundancy(node: LocalNode) -> c.Redundancy:
    """Data packs by acknowledged placements; packs never coded count as local."""
    tally = dict.fromkeys(Redundancy, 0)
    coded = node.ledger.all()
    for cp in coded.values():
        tally[classify(cp.placed, cp.k, cp.n, local=cp.local)] += 1
    metadata = node.metadata_packs()
    uncoded = sum(1 for p in node.repo.store.local_ids() if p not in coded and p not in metadata)
    tally[Redundancy.LOCAL_ONLY] += uncoded
    from corestate.node.app.health import current_book
    from corestate.node.core import holders as hb
    states = current_book(node).states()
    bad = node.ledger.bad()
    lost = sum(1 for cp in coded.values() if not cp.local and len({
        r.index for r in cp.shares if states.get(r.peer, hb.HolderState.OK) in hb.COUNTS
        and (cp.pack, r.index, r.peer) not in bad}) < cp.k)
    return c.Redundancy(packs=sum(tally.values()), full=tally[Redundancy.FULL],
                        degraded=tally[Redundancy.DEGRADED], at_risk=tally[Redundancy.AT_RISK],
                        local=tally[Redundancy.LOCAL_ONLY], lost=lost)


__all__ = ["Live", "redundancy", "status"]
