"""Keeping the data safe and the store lean: ``repair``, ``forget``, ``prune``.

Each command builds its typed call, invokes it (node/app/maintain.py: in the daemon when one
runs, else here) and renders the typed records it answers, as text or JSON.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from typing import Any

from corestate.node.cli.context import invoke
from corestate.node.cli.output import Out, _human, _ticker
from corestate.protocol import control as c
from corestate.protocol.messages import Message, Record


class Follow:
    """Draws a typed call's progress from its progress events (``kind``: packs done of
    packs), as ``_ticker`` draws it — a bar on a terminal, JSON status lines every second
    with --json — from the first such event on; with ``stop_at_end``, until one says every
    pack is done. The events reach it in place (the ``Local`` context's ``on_event``) and
    from a daemon (``invoke`` hands them to ``out.emit``): it stands in for ``out.emit``
    while the block runs, and passes every event on to what was there."""

    def __init__(self, out: Out, kind: type[Message], label: str, *, stop_at_end: bool = False) -> None:
        self.out, self.kind, self.label, self.stop_at_end = out, kind, label, stop_at_end
        self.done = self.total = 0
        self._stack = ExitStack()
        self._started = False
        self._prev: Any = None

    def __enter__(self) -> Follow:
        self._prev, self.out.emit = self.out.emit, self._event
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.emit = self._prev
        self._stack.close()

    def _event(self, ev: Message) -> None:
        if isinstance(ev, (c.CheckProgress, c.RepairProgress)) and isinstance(ev, self.kind):
            self.done, self.total = ev.packs_done, ev.packs
            if not self._started:
                self._started = True
                self._stack.enter_context(_ticker(
                    self.out, lambda: {"packs_done": self.done, "packs": self.total},
                    lambda: (self.label, self.done, self.total or None, "packs")))
            if self.stop_at_end and self.done >= self.total:
                self._stack.close()
        if self._prev is not None:
            self._prev(ev)


def call_pages(args: argparse.Namespace, out: Out, call: Message, follow: Follow | None = None) -> list[Record]:
    """Invoke a call answered in pages; its records, in order (the summary last)."""
    items: list[Record] = []
    with follow or ExitStack():
        invoke(args, out, call, items.append)
    return items


def cmd_repair(args: argparse.Namespace, out: Out) -> int:
    items = call_pages(args, out, c.RepairCall(dry_run=bool(args.dry_run)), Follow(out, c.RepairProgress, "repair"))
    summary = items[-1]
    assert isinstance(summary, c.RepairSummary)
    if not summary.on_mesh:
        out.say("nothing to repair: no pack of this node is on the mesh")
        if out.json:
            out.obj({"type": "summary", "packs_full": 0, "rebuilt": [], "unrepairable": [],
                     "failed": [], "complete": True, "dry_run": args.dry_run})
        return summary.code
    rebuilds = [r for r in items if isinstance(r, c.Rebuilt)]
    unrepairable = [u for u in items if isinstance(u, c.Unrepairable)]
    failed = [f.failed for f in items if isinstance(f, c.RepairFailure)]
    if out.json:
        out.obj({"type": "summary", "packs_full": summary.packs_full,
                 "rebuilt": [{"pack": r.pack.hex(), "source": r.source, "shares": list(r.shares),
                              "placed": {str(i): peer for i, peer in r.placed},
                              "forgotten": [[i, peer] for i, peer in r.forgotten], "reasons": list(r.reasons)}
                             for r in rebuilds],
                 "unrepairable": [{"pack": u.pack.hex(), "good": u.good, "k": u.k, "reason": u.reason}
                                  for u in unrepairable],
                 "failed": failed, "forgotten": summary.forgotten, "complete": summary.complete,
                 "pruned_shares_deleted": summary.shares_deleted, "pruned_shares_left": summary.shares_left,
                 "dry_run": args.dry_run, "seconds": round(float(summary.seconds), 3)})
        return summary.code
    from corestate.node.runtime.reports import short
    dry = summary.dry_run
    verb = "would rebuild" if dry else "rebuilt"
    for r in rebuilds:
        if r.shares:
            where = ", ".join(f"{i}->{short(p)}" for i, p in sorted(r.placed)) or "nothing placed"
            out.say(f"pack {r.pack.hex()[:12]}: {verb} share(s) {list(r.shares)} from the {r.source} copy"
                    + ("" if dry else f" ({where})"))
        for why in r.reasons:
            out.say(f"    {why}")
    for u in unrepairable:
        out.say(f"pack {u.pack.hex()[:12]}: CANNOT repair now: {u.reason}")
    for f in failed:
        out.warn(f)
    if summary.shares_deleted or summary.shares_left:
        out.say(f"{summary.shares_deleted} share(s) of pruned packs deleted on their holders"
                + (f"; {summary.shares_left} still wait for holders out of reach" if summary.shares_left else ""))
    todo = [r for r in rebuilds if r.shares]
    out.say(f"{summary.packs_full} pack(s) full, {len(todo)} {'to repair' if dry else 'repaired'}, "
            f"{len(unrepairable)} not repairable now" + ("" if dry else f" ({float(summary.seconds):.1f}s)"))
    if not dry and not summary.complete:
        out.say("some packs are still below full redundancy: "
                "bring holders back online or add trusted peers (`corestate peer add`), then repair again")
    return summary.code


def cmd_forget(args: argparse.Namespace, out: Out) -> int:
    call = c.ForgetCall(
        snapshots=tuple(args.snapshots), keep_last=args.keep_last, keep_hourly=args.keep_hourly,
        keep_daily=args.keep_daily, keep_weekly=args.keep_weekly, keep_monthly=args.keep_monthly,
        keep_yearly=args.keep_yearly, keep_within=args.keep_within or "", prune=bool(args.prune),
        dry_run=bool(args.dry_run))
    return _say_prune(args, out, call_pages(args, out, call))


def cmd_prune(args: argparse.Namespace, out: Out) -> int:
    return _say_prune(args, out, call_pages(args, out, c.PruneCall(dry_run=bool(args.dry_run))))


def _say_prune(args: argparse.Namespace, out: Out, items: list[Record]) -> int:
    summary = items[-1]
    assert isinstance(summary, c.PruneSummary)
    snaps = [s for s in items if isinstance(s, c.SnapshotVerdict)]
    problems = [p.problem for p in items if isinstance(p, c.ShareNotDeleted)]
    dry = summary.dry_run
    if out.json:
        out.obj({"type": "summary", "dry_run": dry,
                 "snapshots": [{"id": s.snapshot_id, "keep": s.keep, "reasons": list(s.reasons)} for s in snaps],
                 "forgotten": summary.forgotten, "packs_deleted": summary.packs_deleted,
                 "packs_repacked": summary.packs_repacked, "bytes_freed": summary.bytes_freed,
                 "packs_kept": summary.packs_kept, "packs_partly_used": summary.packs_partly_used,
                 "unused_bytes_in_kept_packs": summary.unused_bytes_in_kept_packs,
                 "shares_deleted": summary.shares_deleted, "share_problems": problems})
        return summary.code
    for s in snaps:
        if summary.by_policy or not s.keep:
            why = ", ".join(s.reasons) or ("no rule keeps it" if summary.by_policy else "named")
            verb = "keep  " if s.keep else "forget"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.time_ns / 1e9))
            out.say(f"{verb} {s.short_id}  {stamp}  {why}")
    would = "would " if dry else ""
    forgot = "" if args.command == "prune" else f"{would}forget {summary.forgotten} snapshot(s); "
    out.say(f"{forgot}{would}delete {summary.packs_deleted} pack(s) and {would}repack {summary.packs_repacked}, "
            f"freeing {_human(summary.bytes_freed)}")
    if summary.packs_partly_used:
        out.say(f"  {summary.packs_partly_used} pack(s) stay for the blobs still in use "
                f"({_human(summary.unused_bytes_in_kept_packs)} in them is no longer needed: below the repack "
                "threshold, or on the mesh, where repacking is not done)")
    if summary.shares_deleted:
        out.say(f"  {summary.shares_deleted} share(s) deleted on their holders")
    for prob in problems[:20]:
        out.warn(f"not deleted on its holder (it keeps the copy for now): {prob}")
    return summary.code
