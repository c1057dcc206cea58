"""``group create``, ``invite``, ``join``, ``members``, ``remove``, ``leave``, ``sync``."""

from __future__ import annotations

import argparse
from typing import Any, cast

from corestate.node.cli.context import _group_round, _open, _port
from corestate.node.cli.keys import _rebuild_from_partition
from corestate.node.cli.output import EXIT_INCOMPLETE, EXIT_OK, Out
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError


def _members_table(out: Out, node: LocalNode) -> None:
    from corestate.node.runtime.reports import short
    st = node.group.state
    assert st is not None
    out.say(f"group {st.name} ({node.group.group.hex()[:16] if node.group.group else '?'})")
    for peer, role in sorted(st.members.items(), key=lambda x: (x[1] != "admin", x[0])):
        me = "  (this node)" if peer == node.keys.peer_id else ""
        out.say(f"  {role:<7} {short(peer)}  {peer}{me}")
    for peer in sorted(st.removed):
        out.say(f"  removed {short(peer)}  {peer}")


def cmd_group_create(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        gid = node.group.create(args.name)
        if out.json:
            out.obj({"group": gid.hex(), "name": args.name, "admin": node.keys.peer_id})
            return EXIT_OK
        out.say(f"created group {args.name} ({gid.hex()[:16]}); this node is its first admin")
        out.say("invite machines with `corestate group invite` (the daemon must run: the token "
                "carries its address)")
    return EXIT_OK


def cmd_group_invite(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.home import parse_duration
    daemon = getattr(args, "daemon", None)
    with _open(args, out) as node:
        if daemon is not None:
            addrs = daemon.mesh.host.addrs()
        else:
            addrs = [f"{a}/p2p/{node.keys.peer_id}" for a in node.cfg.listen if not a.endswith("/tcp/0")]
            if not addrs:
                raise CoreStateError("an invite carries this node's address, and no daemon runs to know it",
                                     hint="start `corestate node run` (or set [mesh] listen to a fixed port)")
        inv = node.group.invite("admin" if args.admin else "member", parse_duration(args.expires), addrs)
    if out.json:
        out.obj({"token": inv.token(), "role": inv.role, "expires_ms": inv.expires_ms})
        return EXIT_OK
    out.say(f"one-time invite for a new {inv.role}, valid for {args.expires}; on the new machine run")
    out.say("  corestate group join TOKEN      (TOKEN is the next line)")
    out.say(inv.token())
    return EXIT_OK


def cmd_group_join(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.group import GroupError, Invite
    inv = Invite.parse(args.token)
    with _open(args, out) as node:
        if node.group.is_member(node.keys.peer_id):
            raise GroupError("this node is already in a group", hint="`corestate group leave` first")
        port = _port(args)
        assert port is not None
        port.call(lambda mesh: mesh.groups.join(inv))
        port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
        _group_round(args, node)
        if node.keys.generation > 0 and not node.repo.snapshots():
            # A node back under a new identity (its old one removed, e.g. stolen): its
            # records of what it wrote while it belonged come back from the old partition.
            port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
            rebuilt = _rebuild_from_partition(args, node, out)
            out.say(f"brought back {rebuilt['snapshots']} snapshot(s) of this node's earlier identity")
        if out.json:
            out.obj({"group": inv.group.hex(), "members": node.group.members()})
            return EXIT_OK
        out.say("joined; members now:")
        _members_table(out, node)
    return EXIT_OK


def cmd_group_members(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        st = node.group.require()
        if out.json:
            out.obj({"group": node.group.group.hex() if node.group.group else None, "name": st.name,
                     "members": st.members, "removed": sorted(st.removed)})
            return EXIT_OK
        _members_table(out, node)
    return EXIT_OK


def _resolve_member(node: LocalNode, who: str) -> str:
    from corestate.node.group import GroupError
    st = node.group.require()
    hits = [p for p in st.members if p == who or p.endswith(who)]
    if len(hits) != 1:
        raise GroupError(f"{who!r} names {'no' if not hits else 'more than one'} member",
                         hint="`corestate group members` lists them; give the PeerID or its end")
    return hits[0]


def cmd_group_remove(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        peer = _resolve_member(node, args.peer)
        node.group.remove(peer)
        _group_round(args, node)
    out.say(f"removed {peer}; every member refuses it once it learns of the removal")
    if out.json:
        out.obj({"removed": peer})
    return EXIT_OK


def cmd_group_leave(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        op = node.group.leave()
        if op is not None:
            _group_round(args, node)
    if op is None:
        out.say("this node was not a member of the group it held; that group is dropped here")
    else:
        out.say("left the group")
    if out.json:
        out.obj({"left": op is not None, "dropped": op is None})
    return EXIT_OK


def cmd_group_sync(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        node.group.require()
        port = _port(args)
        assert port is not None
        async def round_(mesh: Any) -> dict[str, str]:
            import trio
            await trio.to_thread.run_sync(mesh.groups.advertise)
            return cast("dict[str, str]", await mesh.groups.sync_all())
        results = port.call(round_)
        vector = node.group.catalog.version_vector()
    if out.json:
        out.obj({"peers": results, "vector": {a: list(v) for a, v in vector.items()}})
    else:
        for peer, r in sorted(results.items()):
            out.say(f"{peer[-8:]}  {r}")
    return EXIT_OK if all(r == "ok" for r in results.values()) else EXIT_INCOMPLETE
