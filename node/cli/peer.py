"""``peer add``, ``peer remove``, ``peer list``: the peers this node trusts with its shares."""

from __future__ import annotations

import argparse

from corestate.node.cli.context import _open
from corestate.node.cli.output import EXIT_OK, Out, _human

from corestate.errors import CoreStateError


def cmd_peer_add(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.peers import split_peer_addr
    peer, transport = split_peer_addr(args.addr)
    domains = [d for d in (args.domain or "").split("/") if d]
    with _open(args, out) as node:
        if peer == node.keys.peer_id:
            raise CoreStateError("that is this node's own address", hint="add the address of another node")
        node.book.add(peer, [transport] if transport else [], trusted=True, domains=domains or None)
        daemon = getattr(args, "daemon", None)
        reachable = None
        if daemon is not None:
            daemon.mesh.vault.set_quota(peer, node.cfg.quota_per_peer)
            from corestate.protocol import messages as m
            try:
                daemon.port().call(lambda mesh: mesh.request(peer, m.Capacity(), timeout=5.0))
                reachable = True
            except CoreStateError:
                reachable = False
    if out.json:
        out.obj({"peer": peer, "addrs": [transport] if transport else [], "trusted": True,
                 "domains": domains, "reachable": reachable})
        return EXIT_OK
    out.say(f"added peer {peer} (trusted: shares of this node may go there; it may store "
            f"shares here up to [mesh] quota_per_peer)")
    if reachable is True:
        out.say("  reachable now")
    elif reachable is False:
        out.say("  not reachable now; kept, and tried again at every backup")
    return EXIT_OK


def cmd_peer_remove(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        entry = node.book.get(args.peer) or next(
            (e for e in node.book.all() if e.peer.endswith(args.peer)), None)
        if entry is None:
            raise CoreStateError(f"no peer {args.peer} in the address book", hint="`corestate peer list` shows them")
        node.book.remove(entry.peer)
        held = node.ledger.peers().get(entry.peer)
        daemon = getattr(args, "daemon", None)
        if daemon is not None:
            daemon.mesh.vault.set_quota(entry.peer, None)
    out.say(f"removed peer {entry.peer}")
    if held:
        out.warn(f"it still holds {held[0]} share(s) of this node; they count until the next "
                 "repair places them elsewhere")
    if out.json:
        out.obj({"removed": entry.peer})
    return EXIT_OK


def cmd_peer_list(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.meshops import short
    with _open(args, out) as node:
        entries = node.book.all()
        held = node.ledger.peers()
        daemon = getattr(args, "daemon", None)
        connected = set(daemon.mesh.host.connected_peers()) if daemon is not None else None
        here = {p: daemon.mesh.vault.used(p) for p in (e.peer for e in entries)} if daemon is not None else {}
    rows = [{
        "peer": e.peer, "addrs": e.addrs, "trusted": e.trusted, "source": e.source,
        "domains": e.domains, "seen_ns": e.seen_ns,
        "connected": None if connected is None else e.peer in connected,
        "shares_held_for_us": held.get(e.peer, (0, 0))[0], "bytes_held_for_us": held.get(e.peer, (0, 0))[1],
        "bytes_we_hold": here.get(e.peer),
    } for e in entries]
    if out.json:
        out.obj(rows)
        return EXIT_OK
    if not rows:
        out.say("no peers yet: `corestate peer add /ip4/…/tcp/…/p2p/<id>` (see `corestate node info` on the other node)")
        return EXIT_OK
    out.say(f"{'PEER':<10} {'TRUST':<8} {'ONLINE':<7} {'SHARES':>7} {'HELD':>10}  ADDRESS")
    for r in rows:
        online = "-" if r["connected"] is None else ("yes" if r["connected"] else "no")
        trust = "trusted" if r["trusted"] else r["source"]
        out.say(f"{short(r['peer']):<10} {trust:<8} {online:<7} {r['shares_held_for_us']:>7} "
                f"{_human(r['bytes_held_for_us']):>10}  {(r['addrs'] or ['?'])[0]}")
    if connected is None:
        out.say("(online status: only a running daemon knows; `corestate node run`)")
    return EXIT_OK
