"""``restore``: fetch what lives only on peers, then write below the target."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from corestate.node.cli.context import _open, _port
from corestate.node.cli.output import (
    EXIT_FAIL,
    EXIT_OK,
    Out,
    _eta,
    _fs,
    _human,
    _progress_events,
    _text,
    _ticker,
)
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError


def cmd_restore(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    try:
        return _restore(args, out)
    except (CoreStateError, OSError) as exc:
        if out.emit is not None:
            out.emit(c.RestoreFailed(time_ns=time.time_ns(), message=str(exc)[:4000],
                                     hint=getattr(exc, "hint", "")[:1000]))
        raise


def _restore(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.restore import Restore, RestoreStats
    from corestate.protocol import control as c
    with _open(args, out) as node:
        snap = node.repo.resolve(args.snapshot)
        stats = RestoreStats()
        includes = [os.fsencode("/" + p.strip("/")) for p in args.path or []]
        t0 = time.monotonic()
        if out.emit is not None and not args.dry_run:
            out.emit(c.RestoreStarted(time_ns=time.time_ns(), snapshot_id=snap.id.hex(),
                                      target=_text(os.path.abspath(args.target))))

        def progress_event() -> c.RestoreProgress:
            return c.RestoreProgress(
                time_ns=time.time_ns(), files=stats.files, files_total=stats.files_total,
                bytes_done=stats.bytes_written, bytes_total=stats.bytes_total,
                eta_s=_eta(stats.bytes_written, stats.bytes_total, time.monotonic() - t0))

        def status() -> dict[str, Any]:
            return {"files": stats.files, "files_total": stats.files_total,
                    "bytes_written": stats.bytes_written, "bytes_total": stats.bytes_total}

        def bar() -> tuple[str, int, int | None, str]:
            return ("restore", stats.bytes_written, stats.bytes_total or None,
                    f"{stats.files}/{stats.files_total} files")
        fetched = [] if args.dry_run else _fetch(args, node, out, snap, includes)
        try:
            with _ticker(out, status, bar), _progress_events(
                    out if not args.dry_run else Out(True), progress_event):
                Restore(node.repo, stats=stats).run(snap, Path(args.target), includes, dry_run=args.dry_run)
        finally:
            if fetched:
                from corestate.node.runtime.meshops import drop_fetched
                drop_fetched(node, fetched)
        secs = time.monotonic() - t0
    for path, msg in stats.errors:
        out.warn(f"{_fs(path)}: {msg}")
    code = EXIT_FAIL if stats.errors else EXIT_OK
    if out.emit is not None and not args.dry_run:
        out.emit(c.RestoreFinished(time_ns=time.time_ns(), snapshot_id=snap.id.hex(), code=code,
                                   files=stats.files, bytes=stats.bytes_total, errors=len(stats.errors)))
    if out.json:
        out.obj({"type": "summary", "snapshot_id": snap.id.hex(), "files": stats.files, "dirs": stats.dirs,
                 "other": stats.other,
                 "bytes": stats.bytes_total, "errors": [[_fs(p), m] for p, m in stats.errors],
                 "dry_run": args.dry_run, "seconds": round(secs, 3)})
        return code
    verb = "would restore" if args.dry_run else "restored"
    out.say(f"{verb} {stats.files} files, {stats.dirs} dirs, {stats.other} links/special, "
            f"{_human(stats.bytes_total)} from "
            f"snapshot {snap.short_id} into {os.path.abspath(args.target)} in {secs:.1f}s")
    if stats.errors:
        out.say(f"FAILED for {len(stats.errors)} path(s), listed above")
    return code


def _fetch(args: argparse.Namespace, node: LocalNode, out: Out, snap: Any, includes: list[bytes]) -> list[bytes]:
    """Bring back from peers the packs of ``snap`` that live only there."""
    from corestate.node.runtime import meshops
    remote = node.ledger.remote_only()
    if not remote:
        return []
    need = meshops.packs_of(node, snap, includes or None) & remote
    if not need:
        return []
    port = _port(args)
    if port is None:
        raise CoreStateError("this snapshot's data is on peers, and no way to reach them is open",
                             hint="report this as a bug")
    prog = [0, len(need), 0]

    def bar() -> tuple[str, int, int | None, str]:
        return ("fetch", prog[2], None, f"{prog[0]}/{prog[1]} packs from peers")

    def update(done: int, total: int, nbytes: int) -> None:
        prog[:] = [done, total, nbytes]
    with _ticker(out, lambda: {"packs_fetched": prog[0], "packs": prog[1], "bytes_fetched": prog[2]}, bar):
        return meshops.fetch(node, port, need, progress=update)
