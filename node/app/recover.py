"""Getting a node's records back from its group, and telling the group of a change now.

- ``recover_from_group``: a fresh home with the phrase's keys fetches this node's own
  signed partition from the group (``init --recover --peer``);
- ``rebuild_from_partition``: the share ledger and the index rebuilt from this node's
  records in the catalog — its own partition, or after a move to a new identity generation
  the newest partition of one of its earlier identities (``group join`` then);
- ``group_round``: a sync round with every member now (a membership change or new
  records spread at once instead of at the next anti-entropy round).

Invariants: the epoch is bumped before anything is written, so a stale instance's later
writes are refused; a data pack is indexed from its sealed header alone, read by ranged
GETs of its data shares (its data never crosses the wire); packs of trees and snapshot
records are fetched whole once and kept (the local cache listing and planning need); what
this node still claims is written again in the new epoch.

The mesh is reached through the context's port; the pack fetching and the placement-record
key live in node/runtime/meshops.py, imported inside the functions (the application layer
imports no runtime module at load time).
"""

from __future__ import annotations

from typing import Any

from corestate.node.app import Context
from corestate.node.local import LocalNode
from corestate.node.peers import split_peer_addr
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def group_round(node: LocalNode, ctx: Context) -> None:
    """Tell the other members now (the daemon's anti-entropy would, within a minute)."""
    port = ctx.mesh()
    if port is None or not node.group.in_group:
        return
    live = ctx.live()
    if live is not None and live.kick_sync():
        return
    port.call(lambda mesh: mesh.groups.sync_all())


def _port(ctx: Context) -> Any:
    port = ctx.mesh()
    if port is None:
        raise CoreStateError("this needs the mesh, and no way to reach it is open",
                             hint="report this as a bug")
    return port


def recover_from_group(node: LocalNode, peer_addr: str, ctx: Context) -> c.Recovered:
    """A fresh home with the phrase's keys: fetch this node's own signed partition from
    the group member at ``peer_addr``, then rebuild from it (``rebuild_from_partition``)."""
    peer, transport = split_peer_addr(peer_addr)
    node.book.add(peer, [transport] if transport else [], trusted=True)
    port = _port(ctx)
    port.call(lambda mesh: mesh.groups.sync_with(peer, [transport] if transport else None))
    me = node.keys.peer_id
    if not node.group.in_group or not node.group.is_member(me):
        raise CoreStateError("that peer does not know this node as a member of its group",
                             hint="check the phrase (and the peer address); a removed identity "
                                  "re-joins with `group join` under a new invite")
    # The newest head may be at another member.
    others = [p for p in node.group.members() if p not in (me, peer)]
    port.call(lambda mesh: mesh.groups.sync_all(others))
    return rebuild_from_partition(node, ctx)


def rebuild_from_partition(node: LocalNode, ctx: Context) -> c.Recovered:
    """Rebuild the share ledger and the index from this node's records in the catalog:
    its own partition, or (after a move to a new identity generation) the newest
    partition of one of its earlier identities."""
    from corestate.node.core import records
    from corestate.node.runtime import meshops
    me = node.keys.peer_id
    port = _port(ctx)

    def has_records(author: str) -> bool:  # snapshots or packs, not just an address advert
        return any(records.kind(k) in (records.Kind.SNAPSHOT, records.Kind.PLACEMENT)
                   for k in node.group.catalog.entries(author))
    source = me
    if not has_records(me):
        source = next((old for old in node.earlier_ids if has_records(old)), me)
    head = node.group.catalog.head(me)
    entries = {k: e.value for k, e in node.group.catalog.entries(source).items() if e.value is not None}
    if source != me:
        # The old identity's sealed values are bound to its PeerID: re-seal for this one.
        from corestate.node.core import catalog as cat
        for k, v in list(entries.items()):
            if records.kind(k) == records.Kind.SNAPSHOT:
                try:
                    plain = cat.open_value(node.keys.catalog_key, source, k, v)
                except CoreStateError:
                    del entries[k]
                    continue
                entries[k] = cat.seal_value(node.keys.catalog_key, me, k, plain)
        entries.pop(records.ADDRS_KEY, None)
    old_epoch = head[0] if head else 0
    node.group.set_epoch(old_epoch + 1)
    packs = 0
    for key, value in list(entries.items()):
        if records.kind(key) != records.Kind.PLACEMENT:
            continue
        try:
            rec = records.Placement.decode(key, value)
        except records.CorruptRecord as exc:
            ctx.warn(f"placement record of pack {key[1:].hex()[:16]} unreadable: {exc}")
            continue
        owner = rec.owner or ("" if source == me else source)
        node.ledger.begin_pack(rec.pack, rec.k, rec.n, rec.size, owner=owner)
        if owner and not rec.owner:
            # Carried into this identity's partition: say whose name the holders filed it under.
            entries[key] = records.Placement(rec.pack, rec.k, rec.n, rec.size, rec.holders, owner).value()
        for h in rec.holders:
            node.ledger.record_share(rec.pack, h.index, h.peer, h.root, h.size)
        node.ledger.set_local(rec.pack, False)
        packs += 1
    found = sum(1 for k in entries if records.kind(k) == records.Kind.SNAPSHOT)
    # Data packs are indexed from their headers (ranged reads); only packs of trees and
    # snapshot records come back whole.
    got = meshops.fetch_headers(node, port, node.ledger.remote_only())
    problems = node.repo.sync()
    keep = node.metadata_packs()
    for pid in keep:
        node.ledger.set_local(pid, True)
    meshops.drop_fetched(node, [p for p in got.whole if p not in keep])
    # The new epoch supersedes the old one: carry forward what this node still claims.
    node.group.write(entries)
    group_round(node, ctx)
    return c.Recovered(snapshots=len(node.repo.snapshots()), packs=packs, found_snapshots=found,
                     epoch=old_epoch + 1, bytes_fetched=got.bytes_fetched,
                     problems=tuple(f"pack {pid.hex()[:16]}: {reason}"[:1000] for pid, reason in problems[:4096]))


__all__ = ["group_round", "rebuild_from_partition", "recover_from_group"]
