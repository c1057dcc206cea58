"""``anomaly list|explain|ack`` and ``advise schedule|capacity|tiering``: the typed calls
(node/app/anomaly.py, node/app/advise.py), their answers in words or JSON."""

from __future__ import annotations

import argparse
import sys
import time

from corestate.node.cli.context import invoke
from corestate.node.cli.output import Out, _fs
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def _stamp(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def _row_json(r: c.AnomalyRow) -> dict[str, object]:
    return {"snapshot_id": r.snapshot_id, "short_id": r.short_id, "time_ns": r.time_ns,
            "paths": [_fs(p) for p in r.paths], "verdict": r.verdict, "score": float(r.score),
            "reasons": list(r.reasons), "protects": r.protects, "acked_ns": r.acked_ns,
            "silent_corruption": r.silent_corruption}


def cmd_anomaly_list(args: argparse.Namespace, out: Out) -> int:
    rows: list[c.AnomalyRow] = []
    invoke(args, out, c.AnomalyListCall(all=bool(args.all)), rows.append)
    if out.json:
        out.obj([_row_json(r) for r in rows])
        return 0
    if not rows:
        out.say("no anomaly found" + ("" if args.all else " (`--all` lists the ok backups too)"))
        return 0
    for r in rows:
        state = "acknowledged" if r.acked_ns else ("STANDING" if r.verdict == "alert" else "")
        guard = f"  protects {r.protects[:8]}" if r.protects else ""
        silent = f"  silent corruption: {r.silent_corruption}" if r.silent_corruption else ""
        out.say(f"{r.short_id}  {_stamp(r.time_ns)}  {r.verdict:<7} {float(r.score):.2f}  {state}{guard}{silent}")
        for why in r.reasons[:3]:
            out.say(f"    {why}")
    standing = [r for r in rows if r.verdict == "alert" and not r.acked_ns]
    if standing:
        out.say(f"{len(standing)} alert(s) stand: `corestate anomaly explain SNAP`, then "
                "`corestate anomaly ack SNAP` if the change was expected")
    return 0


def cmd_anomaly_explain(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.AnomalyExplainCall(snapshot=args.snapshot))
    assert isinstance(res, c.AnomalyExplainResult)
    r = res.row
    if out.json:
        out.obj({**_row_json(r),
                 "numbers": [{"name": n.name, "value": n.value, "usual": n.usual} for n in res.numbers],
                 "files": [{"path": _fs(f.path), "change": f.change, "score": float(f.score),
                            "signals": list(f.signals)} for f in res.files],
                 "silent": [_fs(p) for p in res.silent]})
        return 0
    out.say(f"snapshot {r.short_id} ({_stamp(r.time_ns)}, {', '.join(_fs(p) for p in r.paths)}): "
            f"{r.verdict}, score {float(r.score):.3f}")
    if r.protects:
        out.say(f"  protects snapshot {r.protects[:8]} until acknowledged")
    if r.acked_ns:
        out.say(f"  acknowledged {_stamp(r.acked_ns)}")
    out.say("why:")
    for why in r.reasons:
        out.say(f"  {why}")
    out.say("the numbers:")
    for n in res.numbers:
        out.say(f"  {n.name}: {n.value}" + (f" (usual: {n.usual})" if n.usual else ""))
    if res.files:
        out.say("the files most responsible:")
        for f in res.files:
            out.say(f"  {_fs(f.path)}  {f.change}, score {float(f.score):.1f}: {', '.join(f.signals)}")
    if res.silent:
        out.say("silent corruption (content changed under an unchanged size and mtime):")
        for p in res.silent:
            out.say(f"  {_fs(p)}")
    return 0


def cmd_anomaly_ack(args: argparse.Namespace, out: Out) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise CoreStateError("acknowledging an anomaly needs a confirmation",
                                 hint="run it on a terminal, or add --yes")
        sys.stderr.write(f"acknowledge {args.snapshot} as an expected change? The snapshot it protects "
                         "may then be forgotten by retention, and the model learns this as usual. [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            out.say("not acknowledged")
            return 1
    res = invoke(args, out, c.AnomalyAckCall(snapshot=args.snapshot))
    assert isinstance(res, c.AnomalyAckResult)
    if out.json:
        out.obj({"snapshot_id": res.snapshot_id, "verdict": res.verdict, "unprotected": res.unprotected,
                 "learned": res.learned, "already": res.already})
        return 0
    if res.already:
        out.say(f"{res.snapshot_id[:8]} was acknowledged before: nothing changed")
        return 0
    out.say(f"{res.snapshot_id[:8]} acknowledged ({res.verdict})"
            + (f"; snapshot {res.unprotected[:8]} is no longer protected" if res.unprotected else "")
            + ("; the model learnt it as a usual change" if res.learned else ""))
    return 0


def cmd_advise(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.home import _size
    quota = _size(args.quota) if getattr(args, "quota", None) else 0
    res = invoke(args, out, c.AdviseCall(topic=args.topic, quota=quota))
    assert isinstance(res, c.AdviseResult)
    if out.json:
        out.obj({"topic": res.topic, "advice": list(res.advice), "columns": list(res.columns),
                 "rows": [list(r) for r in res.rows], "numbers": dict(res.numbers)})
        return 0
    for line in res.advice:
        out.say(line)
    if res.rows:
        out.say()
        widths = [max(len(col), *(len(r[i]) for r in res.rows if i < len(r))) for i, col in enumerate(res.columns)]
        out.say("  ".join(col.rjust(w) for col, w in zip(res.columns, widths, strict=True)))
        for r in res.rows:
            out.say("  ".join(x.rjust(w) for x, w in zip(r, widths, strict=False)))
    if res.numbers:
        out.say()
        out.say("the numbers: " + ", ".join(f"{k}={v}" for k, v in res.numbers.items()))
    return 0


__all__ = ["cmd_advise", "cmd_anomaly_ack", "cmd_anomaly_explain", "cmd_anomaly_list"]
