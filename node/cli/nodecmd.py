"""The daemon and the node at a glance: ``node run``, ``node info``, ``node events``, ``status``, ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from corestate.node.cli.context import _open, _passphrase, invoke
from corestate.node.cli.output import EXIT_OK, Out, _fs, _human
from corestate.node.home import Home
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError


def cmd_node_run(args: argparse.Namespace, out: Out) -> int:
    import logging

    import trio
    from corestate.node.runtime.client import connect
    from corestate.node.runtime.daemon import run_daemon
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Home(args.home)
    home.require()
    s = connect(home.path)
    if s is not None:
        s.close()
        from corestate.node.errors import HomeBusy
        raise HomeBusy(str(home.path), "the daemon answering on its control socket")
    passphrase = _passphrase(args)

    def ready(node: LocalNode, addrs: list[str]) -> None:
        # One line a script can wait for; the addresses are also in `node info`.
        out.say(f"ready {node.keys.peer_id} " + " ".join(addrs))
    return int(trio.run(lambda: run_daemon(home, passphrase, args.listen or None, ready=ready,
                                           hsm_module=args.hsm_module)))


def cmd_node_info(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.client import connect
    from corestate.protocol import control as c
    # Only a running daemon knows: say so at once (no passphrase, no home lock).
    s = connect(Home(args.home).path)
    if s is None:
        raise CoreStateError(f"no daemon runs for the home {Home(args.home).path}",
                             hint="start one with `corestate node run` (it runs in the foreground)")
    s.close()
    res = invoke(args, out, c.NodeInfoCall())
    assert isinstance(res, c.NodeInfoResult)
    vault = c.result_fields(res.held_for_peers)
    info = {"peer_id": res.peer_id, "addrs": list(res.addrs), "home": _fs(res.home),
            "uptime_s": round(res.uptime_ms / 1000, 1), "connected": list(res.connected),
            "held_for_peers": vault}
    if out.json:
        out.obj(info)
        return EXIT_OK
    out.say(f"peer id   {info['peer_id']}")
    for a in res.addrs:
        out.say(f"address   {a}")
    out.say(f"home      {info['home']}")
    out.say(f"uptime    {info['uptime_s']:.0f}s, {len(res.connected)} peer(s) connected")
    held = res.held_for_peers
    out.say(f"holding   {held.shares} share(s), {_human(held.bytes)} for {held.senders} peer(s)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.client import call, connect
    from corestate.protocol import control as c
    s = connect(Path(args.home))
    if s is not None:
        with s:
            res = call(s, c.StatusCall())
        if not isinstance(res, c.StatusResult):
            raise CoreStateError(f"the daemon answered status with {res.TYPE}", hint="report this as a bug")
    else:
        from corestate.node.app.status import status
        with _open(args, out) as node:
            res = status(node, None)
    if out.json:
        out.obj(c.result_fields(res))
        return EXIT_OK
    _say_status(out, res)
    return EXIT_OK


def _say_status(out: Out, st: Any) -> None:
    from corestate.node.runtime.reports import short

    def when(ns: int | None) -> str:
        return "-" if ns is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))
    out.say(f"node       {st.peer_id}" + ("" if st.daemon else "  (no daemon runs: `corestate node run`)"))
    if st.group:
        out.say(f"group      {st.group[:16]}")
    last = st.last_backup
    out.say(f"snapshots  {st.snapshots}; last {last.short_id + ' at ' + when(last.time_ns) if last else 'none yet'}")
    if st.daemon:
        out.say(f"next       {when(st.next_backup) if st.next_backup else 'no scheduled backup ([schedule] backup_every)'}")
    r = st.redundancy
    out.say(f"packs      {r.packs}: {r.full} full, {r.degraded} degraded, {r.at_risk} at risk, "
            f"{r.local} local only (as acknowledged at upload; `corestate check` asks the holders)")
    online = sum(1 for p in st.peers if p.online)
    out.say(f"peers      {len(st.peers)}" + (f", {online} online" if st.daemon else ""))
    for p in st.peers:
        state = "-" if p.online is None else ("online" if p.online else "offline")
        role = "member" if p.member else "trusted"
        out.say(f"  {short(p.peer_id):<10} {role:<8} {state:<8} {p.shares:>6} shares  seen {when(p.last_seen_ns)}")
    for a in st.alerts[-10:]:
        out.say(f"alert      {when(a.time_ns)} {a.severity}: {a.alert}: {a.message}")


def cmd_node_events(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.client import connect, subscribe
    from corestate.protocol import control as c
    home = Home(args.home).path
    s = connect(home)
    if s is None:
        raise CoreStateError(f"no daemon runs for the home {home}",
                             hint="start one with `corestate node run` (it runs in the foreground)")
    with s, contextlib.suppress(KeyboardInterrupt):
        for ev in subscribe(s, tuple(args.topic or ())):
            if isinstance(ev, c.Missed):
                obj: dict[str, Any] = {"kind": "missed", "count": ev.count}
            else:
                obj = c.event_fields(ev)
            if out.json:
                out.obj(obj)
                continue
            t = time.strftime("%H:%M:%S", time.localtime(int(obj.get("time_ns", time.time_ns())) / 1e9))
            rest = " ".join(f"{k}={v}" for k, v in obj.items() if k not in ("kind", "time_ns"))
            out.say(f"{t} {obj['kind']:<18} {rest}")
        raise CoreStateError("the daemon stopped", hint="its log says why", retryable=True)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.demo import run_demo
    return run_demo(args, out)
