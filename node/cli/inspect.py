"""Looking at the repository: ``snapshots``, ``ls``, ``diff``, ``check``, ``stats``."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from corestate.node.cli.context import invoke
from corestate.node.cli.output import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_OK, Out, _fs, _human
from corestate.protocol import control as c


def cmd_snapshots(args: argparse.Namespace, out: Out) -> int:
    snaps: list[c.SnapshotSummary] = []
    invoke(args, out, c.SnapshotsCall(), snaps.append)
    if out.json:
        out.obj([{
            "id": s.snapshot_id, "short_id": s.short_id, "time_ns": s.time_ns, "host": s.host,
            "paths": [_fs(p) for p in s.paths], "files": s.files, "bytes": s.bytes, "torn": s.torn,
            "errors": s.errors, "provider": s.provider, "protected": s.protected, "verdict": s.verdict or None,
        } for s in snaps])
        return EXIT_OK
    if not snaps:
        out.say("no snapshots yet: `corestate backup PATH` makes one")
        return EXIT_OK
    out.say(f"{'ID':<9} {'TIME':<20} {'HOST':<16} {'FILES':>8} {'SIZE':>10}  PATHS")
    for s in snaps:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.time_ns / 1e9))
        out.say(f"{s.short_id:<9} {t:<20} {s.host[:16]:<16} {s.files:>8} "
                f"{_human(s.bytes):>10}  {', '.join(_fs(p) for p in s.paths)}"
                + ("  [protected: anomaly alert]" if s.protected else ""))
    out.say(f"{len(snaps)} snapshot(s)")
    if any(s.protected for s in snaps):
        out.say("protected snapshots are kept while an anomaly alert stands: `corestate anomaly list`")
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
    from corestate.node.cli.maintain import Follow, call_pages
    call = c.CheckCall(read_data=bool(args.read_data), rebuild_index=bool(args.rebuild_index))
    items = call_pages(args, out, call, Follow(out, c.CheckProgress, "check", stop_at_end=True))
    return _say_check(args, out, items)


def _say_check(args: argparse.Namespace, out: Out, items: list[Any]) -> int:
    report = items[-1]
    assert isinstance(report, c.CheckSummary)
    damage: list[c.Damage] = []
    files: list[list[str]] = []
    for d in items:
        if isinstance(d, c.Damage):
            if not d.continued or not damage:
                damage.append(d)
                files.append([])
            files[-1] += [_fs(f) for f in d.files]
    health = [h for h in items if isinstance(h, c.SnapshotHealth)]
    bad: dict[str, list[str]] = {}
    for b in items:
        if isinstance(b, c.BadShare):
            bad.setdefault(b.peer, []).append(b.share)
    if report.index_packs is not None:
        out.say(f"index rebuilt from {report.index_packs} packs")
        for p in items:
            if isinstance(p, c.IndexProblem):
                out.warn(f"pack {p.pack.hex()[:16]} could not be read: {p.problem}")
    for pack in report.healed:
        out.say(f"healed damaged local pack {pack.hex()[:16]} from its shares on peers")
    if out.json:
        out.obj({"type": "summary", "ok": report.code == EXIT_OK, "packs": report.packs, "blobs": report.blobs,
                 "healed": [p.hex() for p in report.healed],
                 "snapshots": report.snapshots, "trees": report.trees, "bytes_read": report.bytes_read,
                 "packs_on_peers_only": report.remote,
                 "damage": [{"what": d.what, "id": d.id.hex(), "reason": d.reason, "files": f}
                            for d, f in zip(damage, files, strict=True)],
                 "mesh": None if not report.surveyed else {
                     "shares": dict(report.shares),
                     "bad_holders": bad,
                     "snapshots": [{"id": h.snapshot_id, "full": h.full, "degraded": h.degraded,
                                    "at-risk": h.at_risk, "local-only": h.local_only} for h in health]}})
        return report.code
    if report.surveyed:
        _say_survey(out, report, health, bad)
        if report.code == EXIT_INCOMPLETE:
            out.say(f"checked {report.packs} packs ({report.remote} on peers only), {report.blobs} blobs, "
                    f"{report.trees} trees, {report.snapshots} snapshots")
            out.say("local store intact; some packs are below full redundancy on the mesh (see above): "
                    "`corestate repair` rebuilds their missing shares on other peers")
            return EXIT_INCOMPLETE
    out.say(f"checked {report.packs} packs, {report.blobs} blobs, {report.trees} trees, "
            f"{report.snapshots} snapshots" + (f", read {_human(report.bytes_read)}" if args.read_data else ""))
    if report.code == EXIT_OK:
        out.say("no damage found" + ("" if args.read_data else " (structure only; --read-data reads every byte)"))
        return EXIT_OK
    for d, f in zip(damage, files, strict=True):
        out.say(f"DAMAGED {d.what} {d.id.hex()[:16]}: {d.reason}")
        for path in f[:50]:
            out.say(f"    affects {path}")
        if len(f) > 50:
            out.say(f"    ... and {len(f) - 50} more")
    out.say(f"{len(damage)} damaged object(s)")
    if any(d.what == "index" for d in damage):
        out.say("the index is only a cache of the pack headers: "
                "`corestate check --rebuild-index` rebuilds it from the packs")
    return EXIT_FAIL


def _say_survey(out: Out, report: c.CheckSummary, health: list[c.SnapshotHealth],
                bad: dict[str, list[str]]) -> None:
    from corestate.node.runtime.reports import short
    sh = report.shares
    out.say("mesh: shares " + ", ".join(f"{sh.get(k, 0)} {k}" for k in ("ok", "missing", "corrupt", "unreachable")))
    for peer, problems in bad.items():
        out.warn(f"peer {short(peer)} ({peer}): {len(problems)} bad share(s), e.g. {problems[0]}")
    out.say(f"{'SNAPSHOT':<9} {'FULL':>6} {'DEGRADED':>9} {'AT-RISK':>8} {'LOCAL':>6}  (packs)")
    for h in health:
        out.say(f"{h.short_id:<9} {h.full:>6} {h.degraded:>9} {h.at_risk:>8} {h.local_only:>6}")


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
