"""Looking at the repository: ``snapshots``, ``ls``, ``diff``, ``check``, ``stats``."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from corestate.node.cli.context import _open, _port, invoke
from corestate.node.cli.output import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_OK, Out, _fs, _human, _ticker
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def cmd_snapshots(args: argparse.Namespace, out: Out) -> int:
    snaps: list[c.SnapshotSummary] = []
    invoke(args, out, c.SnapshotsCall(), snaps.append)
    if out.json:
        out.obj([{
            "id": s.snapshot_id, "short_id": s.short_id, "time_ns": s.time_ns, "host": s.host,
            "paths": [_fs(p) for p in s.paths], "files": s.files, "bytes": s.bytes, "torn": s.torn,
            "errors": s.errors, "provider": s.provider,
        } for s in snaps])
        return EXIT_OK
    if not snaps:
        out.say("no snapshots yet: `corestate backup PATH` makes one")
        return EXIT_OK
    out.say(f"{'ID':<9} {'TIME':<20} {'HOST':<16} {'FILES':>8} {'SIZE':>10}  PATHS")
    for s in snaps:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.time_ns / 1e9))
        out.say(f"{s.short_id:<9} {t:<20} {s.host[:16]:<16} {s.files:>8} "
                f"{_human(s.bytes):>10}  {', '.join(_fs(p) for p in s.paths)}")
    out.say(f"{len(snaps)} snapshot(s)")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, out: Out) -> int:
    start = os.fsencode(args.path.rstrip("/")) if args.path and args.path != "/" else b""

    def show(n: c.Entry) -> None:
        if out.json:
            out.obj({"path": _fs(n.path), "type": n.type, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                     "mtime_ns": n.mtime_ns, "size": n.size,
                     "target": _fs(n.target) if n.target else None})
        else:
            t = time.strftime("%Y-%m-%d %H:%M", time.localtime(n.mtime_ns / 1e9))
            suffix = f" -> {_fs(n.target)}" if n.target else ""
            out.say(f"{n.type} {n.mode:04o} {n.uid:>5} {n.gid:>5} {n.size:>12} {t}  {_fs(n.path)}{suffix}")
    invoke(args, out, c.LsCall(snapshot=args.snapshot, path=start, recursive=bool(args.recursive)), show)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, out: Out) -> int:
    changes: list[c.Change] = []
    invoke(args, out, c.DiffCall(a=args.a, b=args.b), changes.append)
    if out.json:
        out.obj([{"op": ch.op, "path": _fs(ch.path)} for ch in changes])
        return EXIT_OK
    for ch in changes:
        out.say(f"{ch.op}  {_fs(ch.path)}")
    counts = {k: sum(1 for ch in changes if ch.op == k) for k in "+-MT"}
    out.say(f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified, {counts['T']} type changed")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    code = _check(args, out)
    if out.emit is not None:
        out.emit(c.CheckFinished(time_ns=time.time_ns(), code=code))
    return code


def _check(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.inspect import check
    done = [0, 0]
    with _open(args, out) as node:
        def bar() -> tuple[str, int, int | None, str]:
            return ("check", done[0], done[1] or None, "packs")
        if args.rebuild_index:
            fetched: list[bytes] = []
            if node.ledger.remote_only():
                # The pack headers are the index: bring back the packs held only by peers.
                from corestate.node.runtime import meshops
                port = _port(args)
                if port is None:
                    raise CoreStateError("some packs are held only by peers, and no way to reach them is open",
                                         hint="report this as a bug")
                fetched = meshops.fetch(node, port, node.ledger.remote_only())
            try:
                problems = node.repo.rebuild_index()
            finally:
                if fetched:
                    from corestate.node.runtime import meshops
                    meshops.drop_fetched(node, [p for p in fetched if p not in node.metadata_packs()])
            out.say(f"index rebuilt from {len(node.repo.packs())} packs")
            for pid, reason in problems:
                out.warn(f"pack {pid.hex()[:16]} could not be read: {reason}")
        with _ticker(out, lambda: {"packs_done": done[0], "packs": done[1]}, bar):
            report = check(node.repo, read_data=args.read_data,
                           progress=lambda n, t: done.__setitem__(slice(0, 2), [n, t]),
                           remote=node.ledger.remote_only())
        survey = None
        from corestate.node.runtime import meshops
        port = _port(args)
        if port is not None and (meshops.is_mesh_node(node) or node.ledger.remote_only()):
            survey = meshops.survey(node, port)
    mesh_bad = survey is not None and any(
        t["at-risk"] or t["degraded"] for _, t in survey.per_snapshot)
    if out.json:
        out.obj({"type": "summary", "ok": report.ok and not mesh_bad, "packs": report.packs, "blobs": report.blobs,
                 "snapshots": report.snapshots, "trees": report.trees, "bytes_read": report.bytes_read,
                 "packs_on_peers_only": report.remote,
                 "damage": [{"what": d.what, "id": d.id.hex(), "reason": d.reason, "files": d.files}
                            for d in report.damage],
                 "mesh": None if survey is None else {
                     "shares": survey.shares,
                     "bad_holders": survey.bad_holders,
                     "snapshots": [{"id": sn.id.hex(), **t} for sn, t in survey.per_snapshot]}})
        if not report.ok:
            return EXIT_FAIL
        return EXIT_INCOMPLETE if mesh_bad else EXIT_OK
    if survey is not None:
        _say_survey(out, survey)
        if report.ok and mesh_bad:
            out.say(f"checked {report.packs} packs ({report.remote} on peers only), {report.blobs} blobs, "
                    f"{report.trees} trees, {report.snapshots} snapshots")
            out.say("local store intact; some packs are below full redundancy on the mesh (see above): "
                    "`corestate repair` rebuilds their missing shares on other peers")
            return EXIT_INCOMPLETE
    out.say(f"checked {report.packs} packs, {report.blobs} blobs, {report.trees} trees, "
            f"{report.snapshots} snapshots" + (f", read {_human(report.bytes_read)}" if args.read_data else ""))
    if report.ok:
        out.say("no damage found" + ("" if args.read_data else " (structure only; --read-data reads every byte)"))
        return EXIT_OK
    for d in report.damage:
        out.say(f"DAMAGED {d.what} {d.id.hex()[:16]}: {d.reason}")
        for f in d.files[:50]:
            out.say(f"    affects {f}")
        if len(d.files) > 50:
            out.say(f"    ... and {len(d.files) - 50} more")
    out.say(f"{len(report.damage)} damaged object(s)")
    if any(d.what == "index" for d in report.damage):
        out.say("the index is only a cache of the pack headers: "
                "`corestate check --rebuild-index` rebuilds it from the packs")
    return EXIT_FAIL


def _say_survey(out: Out, survey: Any) -> None:
    from corestate.node.runtime.meshops import short
    sh = survey.shares
    out.say("mesh: shares " + ", ".join(f"{sh.get(k, 0)} {k}" for k in ("ok", "missing", "corrupt", "unreachable")))
    for peer, problems in survey.bad_holders.items():
        out.warn(f"peer {short(peer)} ({peer}): {len(problems)} bad share(s), e.g. {problems[0]}")
    out.say(f"{'SNAPSHOT':<9} {'FULL':>6} {'DEGRADED':>9} {'AT-RISK':>8} {'LOCAL':>6}  (packs)")
    for snap, t in survey.per_snapshot:
        out.say(f"{snap.short_id:<9} {t['full']:>6} {t['degraded']:>9} {t['at-risk']:>8} {t['local-only']:>6}")


def cmd_stats(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.StatsCall())
    assert isinstance(res, c.StatsResult)
    s: dict[str, Any] = c.result_fields(res)
    if out.json:
        out.obj(s)
        return EXIT_OK
    out.say(f"peer id        {s['peer_id']}")
    out.say(f"snapshots      {s['snapshots']}")
    out.say(f"store          {_human(s['store_bytes'])} in {s['packs']} packs")
    out.say(f"unique data    {_human(s['unique_bytes'])} in {s['chunks']} chunks, {s['trees']} trees")
    if s["latest_bytes"]:
        out.say(f"latest         {s['latest_files']} files, {_human(s['latest_bytes'])}")
        out.say(f"ratio          {s['store_bytes'] / max(1, s['unique_bytes']):.2f} stored/unique")
    return EXIT_OK
