"""``peer add``, ``peer remove``, ``peer list``: the peers this node trusts with its shares
(node/app/members.py); here, parse and render."""

from __future__ import annotations

import argparse

from corestate.node.cli.context import invoke
from corestate.node.cli.output import EXIT_OK, Out, _human
from corestate.protocol import control as c


def cmd_peer_add(args: argparse.Namespace, out: Out) -> int:
    domains = tuple(d for d in (args.domain or "").split("/") if d)
    res = invoke(args, out, c.PeerAddCall(addr=args.addr, domains=domains))
    assert isinstance(res, c.PeerAddResult)
    if out.json:
        out.obj({"peer": res.peer, "addrs": list(res.addrs), "trusted": res.trusted,
                 "domains": list(res.domains), "reachable": res.reachable})
        return EXIT_OK
    out.say(f"added peer {res.peer} (trusted: shares of this node may go there; it may store "
            f"shares here up to [mesh] quota_per_peer)")
    if res.reachable is True:
        out.say("  reachable now")
    elif res.reachable is False:
        out.say("  not reachable now; kept, and tried again at every backup")
    return EXIT_OK


def cmd_peer_remove(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.PeerRemoveCall(peer=args.peer))
    assert isinstance(res, c.PeerRemoveResult)
    out.say(f"removed peer {res.removed}")
    if res.shares_held is not None:
        out.warn(f"it still holds {res.shares_held} share(s) of this node; they count until the next "
                 "repair places them elsewhere")
    if out.json:
        out.obj({"removed": res.removed})
    return EXIT_OK


def cmd_peer_list(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.reports import short
    peers: list[c.PeerRow] = []
    invoke(args, out, c.PeerListCall(), peers.append)
    rows = [{
        "peer": e.peer, "addrs": list(e.addrs), "trusted": e.trusted, "source": e.source,
        "domains": list(e.domains), "seen_ns": e.seen_ns, "connected": e.connected,
        "shares_held_for_us": e.shares_held_for_us, "bytes_held_for_us": e.bytes_held_for_us,
        "bytes_we_hold": e.bytes_we_hold, "connection": e.connection,
    } for e in peers]
    if out.json:
        out.obj(rows)
        return EXIT_OK
    if not rows:
        out.say("no peers yet: `corestate peer add /ip4/…/tcp/…/p2p/<id>` (see `corestate node info` on the other node)")
        return EXIT_OK
    out.say(f"{'PEER':<10} {'TRUST':<8} {'ONLINE':<7} {'SHARES':>7} {'HELD':>10}  ADDRESS")
    for r in rows:
        online = "-" if r["connected"] is None else ("yes" if r["connected"] else "no")
        if r["connection"] == "relayed":
            online = "relayed"
        trust = "trusted" if r["trusted"] else r["source"]
        out.say(f"{short(r['peer']):<10} {trust:<8} {online:<7} {r['shares_held_for_us']:>7} "
                f"{_human(r['bytes_held_for_us']):>10}  {(r['addrs'] or ['?'])[0]}")
    if peers[0].connected is None:
        out.say("(online status: only a running daemon knows; `corestate node run`)")
    return EXIT_OK
