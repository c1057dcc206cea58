"""``peer`` and ``group`` operations and ``node info``: typed operations (see
node/app/__init__.py). ``init`` and ``key passwd`` run without a daemon: node/app/keys.py.

- peers: ``peer_add`` trusts a peer (in a daemon: gives it its quota at once and asks it
  for its capacity, to say whether it is reachable), ``peer_remove`` stops trusting one,
  ``peer_list`` lists the address book (paged; who is online only a daemon knows);
- groups: ``group_create``, ``group_invite`` (the token carries the daemon's addresses,
  or the configured fixed ones), ``group_join`` (a secret token: it is never logged nor
  echoed; a node back under a new identity generation gets its earlier records back),
  ``group_members``, ``group_remove``, ``group_leave``, ``group_sync``;
- ``node_info``: the running daemon's identity, addresses, uptime and holdings (fails
  without one).

What only a running daemon has comes from ``ctx.live()``; the mesh from ``ctx.mesh()``. A
change this node makes to its group (create, join, remove, leave) is told as a
``group.changed`` event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from corestate.node.app import Context, Operation
from corestate.node.app.recover import group_round, rebuild_from_partition
from corestate.node.group import GroupError, Invite
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

# -- peers ------------------------------------------------------------------------------------


def peer_add(node: LocalNode, call: c.PeerAddCall, ctx: Context) -> c.PeerAddResult:
    from corestate.node.peers import split_peer_addr
    peer, transport = split_peer_addr(call.addr)
    domains = [d for d in call.domains if d]
    if peer == node.keys.peer_id:
        raise CoreStateError("that is this node's own address", hint="add the address of another node")
    node.book.add(peer, [transport] if transport else [], trusted=True, domains=domains or None)
    reachable = None
    live = ctx.live()
    if live is not None:
        live.set_quota(peer, node.cfg.quota_per_peer)
        from corestate.protocol import messages as m
        try:
            ctx.mesh().call(lambda mesh: mesh.request(peer, m.Capacity(), timeout=5.0))
            reachable = True
        except CoreStateError:
            reachable = False
    return c.PeerAddResult(peer=peer, addrs=(transport,) if transport else (), trusted=True,
                           domains=tuple(domains), reachable=reachable)


def peer_remove(node: LocalNode, call: c.PeerRemoveCall, ctx: Context) -> c.PeerRemoveResult:
    entry = node.book.get(call.peer) or next(
        (e for e in node.book.all() if e.peer.endswith(call.peer)), None)
    if entry is None:
        raise CoreStateError(f"no peer {call.peer} in the address book", hint="`corestate peer list` shows them")
    node.book.remove(entry.peer)
    held = node.ledger.peers().get(entry.peer)
    live = ctx.live()
    if live is not None:
        live.set_quota(entry.peer, None)
    return c.PeerRemoveResult(removed=entry.peer, shares_held=None if held is None else held[0])


def peer_list(node: LocalNode, call: c.PeerListCall, ctx: Context) -> Iterator[c.PeerRow]:
    entries = node.book.all()
    held = node.ledger.peers()
    live = ctx.live()
    connected = set(live.connected()) if live is not None else None
    for e in entries:
        yield c.PeerRow(
            peer=e.peer, addrs=tuple(e.addrs[:32]), trusted=e.trusted, source=e.source[:16],
            domains=tuple(e.domains[:64]), seen_ns=max(0, e.seen_ns),
            connected=None if connected is None else e.peer in connected,
            shares_held_for_us=held.get(e.peer, (0, 0))[0], bytes_held_for_us=held.get(e.peer, (0, 0))[1] or 0,
            bytes_we_hold=live.held_for(e.peer) if live is not None else None,
            connection=live.connection(e.peer) if live is not None else "none")


# -- groups -----------------------------------------------------------------------------------


def view(node: LocalNode) -> c.GroupView:
    """The group as this node evaluates it now (NotInGroup when it is in none)."""
    st = node.group.require()
    return c.GroupView(
        group=node.group.group.hex() if node.group.group else None, name=st.name,
        members=tuple(c.Member(peer_id=p, role=r) for p, r in st.members.items()),
        removed=tuple(sorted(st.removed)), me=node.keys.peer_id)


def group_create(node: LocalNode, call: c.GroupCreateCall, ctx: Context) -> c.GroupCreateResult:
    gid = node.group.create(call.name)
    _changed(node, ctx, "created")
    return c.GroupCreateResult(group=gid.hex(), name=call.name, admin=node.keys.peer_id)


def group_invite(node: LocalNode, call: c.GroupInviteCall, ctx: Context) -> c.GroupInviteResult:
    from corestate.node.home import parse_duration
    try:
        expires_s = parse_duration(call.expires)
    except ValueError:
        raise GroupError(f"{call.expires!r} is not a duration", hint="e.g. 30m, 24h, 7d") from None
    live = ctx.live()
    if live is not None:
        addrs = live.addrs()
    else:
        addrs = [f"{a}/p2p/{node.keys.peer_id}" for a in node.cfg.listen if not a.endswith("/tcp/0")]
        if not addrs:
            raise CoreStateError("an invite carries this node's address, and no daemon runs to know it",
                                 hint="start `corestate node run` (or set [mesh] listen to a fixed port)")
    inv = node.group.invite("admin" if call.admin else "member", expires_s, addrs)
    return c.GroupInviteResult(token=inv.token(), role=inv.role, expires_ms=inv.expires_ms)


def group_join(node: LocalNode, call: c.GroupJoinCall, ctx: Context) -> c.GroupJoinResult:
    inv = Invite.parse(call.token)
    if node.group.is_member(node.keys.peer_id):
        raise GroupError("this node is already in a group", hint="`corestate group leave` first")
    port = _port(ctx)
    port.call(lambda mesh: mesh.groups.join(inv))
    port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
    group_round(node, ctx)
    rebuilt = None
    if node.keys.generation > 0 and not node.repo.snapshots():
        # A node back under a new identity (its old one removed, e.g. stolen): its
        # records of what it wrote while it belonged come back from the old partition.
        port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
        rebuilt = rebuild_from_partition(node, ctx)
    _changed(node, ctx, "joined")
    return c.GroupJoinResult(group=inv.group.hex(), view=view(node), rebuilt=rebuilt)


def group_members(node: LocalNode, call: c.GroupMembersCall, ctx: Context) -> c.GroupMembersResult:
    return c.GroupMembersResult(view=view(node))


def _resolve_member(node: LocalNode, who: str) -> str:
    st = node.group.require()
    hits = [p for p in st.members if p == who or p.endswith(who)]
    if len(hits) != 1:
        raise GroupError(f"{who!r} names {'no' if not hits else 'more than one'} member",
                         hint="`corestate group members` lists them; give the PeerID or its end")
    return hits[0]


def group_remove(node: LocalNode, call: c.GroupRemoveCall, ctx: Context) -> c.GroupRemoveResult:
    peer = _resolve_member(node, call.peer)
    node.group.remove(peer)
    group_round(node, ctx)
    _changed(node, ctx, f"removed {peer}")
    return c.GroupRemoveResult(removed=peer)


def group_leave(node: LocalNode, call: c.GroupLeaveCall, ctx: Context) -> c.GroupLeaveResult:
    op = node.group.leave()
    if op is not None:
        group_round(node, ctx)
    _changed(node, ctx, "left" if op is not None else "dropped", left=True)
    return c.GroupLeaveResult(left=op is not None)


def group_sync(node: LocalNode, call: c.GroupSyncCall, ctx: Context) -> c.GroupSyncResult:
    node.group.require()
    port = _port(ctx)

    async def groups(mesh: Any) -> Any:
        return mesh.groups
    # This node's addresses first (a catalog write, done here in the worker thread).
    port.call(groups).advertise()
    results: dict[str, str] = port.call(lambda mesh: mesh.groups.sync_all())
    vector = node.group.catalog.version_vector()
    return c.GroupSyncResult(
        peers=tuple(c.SyncOutcome(peer_id=p, result=r[:1000]) for p, r in sorted(results.items())),
        vector=tuple(c.VectorEntry(author=a, epoch=e, seq=s) for a, (e, s) in sorted(vector.items())))


def _changed(node: LocalNode, ctx: Context, reason: str, *, left: bool = False) -> None:
    """A ``group.changed`` event: this node changed its group (changes that arrive by sync
    are the group service's to tell)."""
    import time
    gid = node.group.group
    ctx.emit(c.GroupChanged(time_ns=time.time_ns(), group="" if left or gid is None else gid.hex(),
                            members=0 if left else len(node.group.members()), reason=reason))


def _port(ctx: Context) -> Any:
    port = ctx.mesh()
    if port is None:
        raise CoreStateError("this needs the mesh, and no way to reach it is open", hint="report this as a bug")
    return port


# -- the running node -------------------------------------------------------------------------


def node_info(node: LocalNode, call: c.NodeInfoCall, ctx: Context) -> c.NodeInfoResult:
    live = ctx.live()
    if live is None:
        raise CoreStateError(f"no daemon runs for the home {node.home.path}",
                             hint="start one with `corestate node run` (it runs in the foreground)")
    import os
    vault = live.vault_stats()
    return c.NodeInfoResult(
        peer_id=node.keys.peer_id, addrs=tuple(live.addrs()[:64]), home=os.fsencode(node.home.path),
        uptime_ms=live.uptime_ms(), connected=tuple(live.connected()[:4096]),
        held_for_peers=c.VaultStats(shares=vault.get("shares", 0), bytes=vault.get("bytes", 0),
                                    senders=vault.get("senders", 0)),
        reachability=live.reachability())


OPERATIONS: tuple[Operation, ...] = (
    Operation(c.PeerAddCall, peer_add),
    Operation(c.PeerRemoveCall, peer_remove),
    Operation(c.PeerListCall, peer_list, page=c.PeerListPage, lock=False),
    Operation(c.GroupCreateCall, group_create),
    Operation(c.GroupInviteCall, group_invite),
    Operation(c.GroupJoinCall, group_join),
    Operation(c.GroupMembersCall, group_members, lock=False),
    Operation(c.GroupRemoveCall, group_remove),
    Operation(c.GroupLeaveCall, group_leave),
    Operation(c.GroupSyncCall, group_sync),
    Operation(c.NodeInfoCall, node_info, lock=False),
)


__all__ = ["OPERATIONS", "group_create", "group_invite", "group_join", "group_leave", "group_members",
           "group_remove", "group_sync", "node_info", "peer_add", "peer_list", "peer_remove", "view"]
