"""``group create``, ``invite``, ``join``, ``members``, ``remove``, ``leave``, ``sync``
(node/app/members.py); here, parse and render."""

from __future__ import annotations

import argparse

from corestate.node.cli.context import invoke
from corestate.node.cli.keys import say_rebuilt
from corestate.node.cli.output import EXIT_INCOMPLETE, EXIT_OK, Out
from corestate.protocol import control as c


def _members_table(out: Out, v: c.GroupView) -> None:
    from corestate.node.runtime.reports import short
    out.say(f"group {v.name} ({v.group[:16] if v.group else '?'})")
    for m in sorted(v.members, key=lambda m: (m.role != "admin", m.peer_id)):
        me = "  (this node)" if m.peer_id == v.me else ""
        out.say(f"  {m.role:<7} {short(m.peer_id)}  {m.peer_id}{me}")
    for peer in v.removed:
        out.say(f"  removed {short(peer)}  {peer}")


def cmd_group_create(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupCreateCall(name=args.name))
    assert isinstance(res, c.GroupCreateResult)
    if out.json:
        out.obj({"group": res.group, "name": res.name, "admin": res.admin})
        return EXIT_OK
    out.say(f"created group {res.name} ({res.group[:16]}); this node is its first admin")
    out.say("invite machines with `corestate group invite` (the daemon must run: the token "
            "carries its address)")
    return EXIT_OK


def cmd_group_invite(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupInviteCall(admin=bool(args.admin), expires=args.expires))
    assert isinstance(res, c.GroupInviteResult)
    if out.json:
        out.obj({"token": res.token, "role": res.role, "expires_ms": res.expires_ms})
        return EXIT_OK
    out.say(f"one-time invite for a new {res.role}, valid for {args.expires}; on the new machine run")
    out.say("  corestate group join TOKEN      (TOKEN is the next line)")
    out.say(res.token)
    return EXIT_OK


def cmd_group_join(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupJoinCall(token=args.token))
    assert isinstance(res, c.GroupJoinResult)
    if res.rebuilt is not None:
        say_rebuilt(out, res.rebuilt)
        out.say(f"brought back {res.rebuilt.snapshots} snapshot(s) of this node's earlier identity")
    if out.json:
        out.obj({"group": res.group, "members": {m.peer_id: m.role for m in res.view.members}})
        return EXIT_OK
    out.say("joined; members now:")
    _members_table(out, res.view)
    return EXIT_OK


def cmd_group_members(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupMembersCall())
    assert isinstance(res, c.GroupMembersResult)
    v = res.view
    if out.json:
        out.obj({"group": v.group, "name": v.name, "members": {m.peer_id: m.role for m in v.members},
                 "removed": list(v.removed)})
        return EXIT_OK
    _members_table(out, v)
    return EXIT_OK


def cmd_group_remove(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupRemoveCall(peer=args.peer))
    assert isinstance(res, c.GroupRemoveResult)
    out.say(f"removed {res.removed}; every member refuses it once it learns of the removal")
    if out.json:
        out.obj({"removed": res.removed})
    return EXIT_OK


def cmd_group_leave(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupLeaveCall())
    assert isinstance(res, c.GroupLeaveResult)
    if not res.left:
        out.say("this node was not a member of the group it held; that group is dropped here")
    else:
        out.say("left the group")
    if out.json:
        out.obj({"left": res.left, "dropped": not res.left})
    return EXIT_OK


def cmd_group_sync(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.GroupSyncCall())
    assert isinstance(res, c.GroupSyncResult)
    results = {p.peer_id: p.result for p in res.peers}
    if out.json:
        out.obj({"peers": results, "vector": {v.author: [v.epoch, v.seq] for v in res.vector}})
    else:
        for peer, r in sorted(results.items()):
            out.say(f"{peer[-8:]}  {r}")
    return EXIT_OK if all(r == "ok" for r in results.values()) else EXIT_INCOMPLETE
