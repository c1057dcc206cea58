"""``restore``: the call to the ``restore`` operation (node/app/restore.py), its answer in
words or JSON, and its progress drawn from the typed progress events (node/cli/backup.py
``Phases``). The target is sent absolute, against the client's working folder."""

from __future__ import annotations

import argparse
import os
from typing import Any

from corestate.node.cli.backup import Phases, request
from corestate.node.cli.context import invoke
from corestate.node.cli.output import Out, _fs, _human
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def cmd_restore(args: argparse.Namespace, out: Out) -> int:
    call = request(c.RestoreCall, "restore fewer --path at a time, or a folder that holds them",
                   snapshot=args.snapshot, target=os.fsencode(os.path.abspath(args.target)),
                   paths=tuple(os.fsencode(p) for p in args.path or ()), dry_run=bool(args.dry_run))
    issues: list[c.RestoreIssue] = []
    last: list[c.RestoreSummary] = []

    def take(item: Any) -> None:
        if isinstance(item, c.RestoreIssue):
            issues.append(item)
        elif isinstance(item, c.RestoreSummary):
            last.append(item)
    with Phases(out, _status, _bar) as phases:
        invoke(args, phases.view, call, take)
    if not last:
        raise CoreStateError("the restore ended without its summary", hint="see the daemon's log")
    s = last[0]
    for i in issues:
        out.warn(f"{_fs(i.path)}: {i.message}")
    seconds = float(s.seconds)
    if out.json:
        out.obj({"type": "summary", "snapshot_id": s.snapshot_id, "files": s.files, "dirs": s.dirs,
                 "other": s.other,
                 "bytes": s.bytes, "errors": [[_fs(i.path), i.message] for i in issues],
                 "dry_run": s.dry_run, "seconds": round(seconds, 3)})
        return s.code
    verb = "would restore" if s.dry_run else "restored"
    out.say(f"{verb} {s.files} files, {s.dirs} dirs, {s.other} links/special, "
            f"{_human(s.bytes)} from "
            f"snapshot {s.short_id} into {_fs(s.target)} in {seconds:.1f}s")
    if s.errors:
        out.say(f"FAILED for {s.errors} path(s), listed above")
    return s.code


def _status(ev: c.RestoreProgress) -> dict[str, Any]:
    if ev.phase == "fetch":
        return {"packs_fetched": ev.packs_done, "packs": ev.packs_total, "bytes_fetched": ev.bytes_fetched}
    return {"files": ev.files, "files_total": ev.files_total, "bytes_written": ev.bytes_done,
            "bytes_total": ev.bytes_total}


def _bar(ev: c.RestoreProgress) -> tuple[str, int, int | None, str]:
    if ev.phase == "fetch":
        return ("fetch", ev.bytes_fetched, None, f"{ev.packs_done}/{ev.packs_total} packs from peers")
    return ("restore", ev.bytes_done, ev.bytes_total or None, f"{ev.files}/{ev.files_total} files")
