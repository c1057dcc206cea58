"""``backup``: the call to the ``backup`` operation (node/app/backup.py), its answer in words
or JSON, and its progress drawn from the typed progress events — wherever it runs (here,
or in the daemon, which sends the events on the connection).

The output is the same either way: the paths the client named are sent absolute (against
its working folder), and the text and --json render the typed answer.
"""

from __future__ import annotations

import argparse
import copy
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from corestate.node.cli.context import invoke
from corestate.node.cli.output import Bar, Out, _fs, _human, _ticker
from corestate.protocol import control as c
from corestate.protocol.errors import LocalProtocolError

from corestate.errors import CoreStateError


def cmd_backup(args: argparse.Namespace, out: Out) -> int:
    k, n = args.k or 0, args.n or 0
    if not (0 <= k <= 255 and 0 <= n <= 255):
        raise CoreStateError(f"erasure code k={k} n={n} is not possible",
                             hint="use 1 <= k <= n <= 255, e.g. `--k 2 --n 4`")
    call = request(c.BackupCall, "list many paths in config.toml, or back up a folder that holds them",
                   paths=tuple(os.fsencode(os.path.abspath(p)) for p in args.paths),
                   exclude=tuple(args.exclude or ()), k=k, n=n, estimate=out.tty,
                   skipped=out.tty or bool(args.verbose))
    issues: list[c.BackupIssue] = []
    degraded: list[c.DegradedPack] = []
    last: list[c.BackupSummary] = []

    def take(item: Any) -> None:
        if isinstance(item, c.BackupIssue):
            issues.append(item)
        elif isinstance(item, c.DegradedPack):
            degraded.append(item)
        elif isinstance(item, c.BackupSummary):
            last.append(item)
    with Phases(out, _backup_status, _backup_bar) as phases:
        invoke(args, phases.view, call, take)
    if not last:
        raise CoreStateError("the backup ended without its summary", hint="see the daemon's log")
    s = last[0]
    if (k or n) and s.mesh is None:
        out.warn("--k/--n ignored: this node has no trusted peers (`corestate peer add`)")
    for i in issues:
        if i.kind == "error":
            out.warn(f"{_fs(i.path)}: {i.message} (not backed up)")
        elif i.kind == "torn":
            out.warn(f"{_fs(i.path)}: changed while it was read; stored as read and marked torn")
        elif i.kind == "silent":
            out.warn(f"{_fs(i.path)}: SILENT CORRUPTION? its content changed while its size and mtime did not")
        else:
            out.warn(f"{_fs(i.path)}: {i.message}")
    seconds = float(s.seconds)
    if out.json:
        out.obj({
            "type": "summary", "snapshot_id": s.snapshot_id, "files": s.files,
            "dirs": s.dirs, "files_unchanged": s.files_unchanged, "bytes_total": s.bytes_total,
            "bytes_read": s.bytes_read, "bytes_added": s.bytes_added, "chunks_new": s.chunks_new,
            "bytes_new": s.bytes_new,
            "errors": [[_fs(i.path), i.message] for i in issues if i.kind == "error"],
            "torn": [_fs(i.path) for i in issues if i.kind == "torn"],
            "torn_files": s.torn, "snapshot_provider": s.provider,
            "paths_visited": s.paths_visited,
            "change_journal": None if s.journal is None else {"used": s.journal.used, "detail": s.journal.detail},
            "seconds": round(seconds, 3), "complete": s.code == 0,
            "mesh": _push_json(s.mesh, degraded),
            "anomaly": None if s.anomaly is None else {
                "verdict": s.anomaly.verdict, "score": float(s.anomaly.score), "reasons": list(s.anomaly.reasons)},
            "silent_corruption": [_fs(i.path) for i in issues if i.kind == "silent"],
            "resampled": s.resampled,
        })
        return s.code
    rate = s.bytes_total / seconds / 1e6 if seconds else 0.0
    out.say(f"snapshot {s.snapshot_id[:8]} saved ({s.provider} snapshot)")
    out.say(f"  files {s.files} ({s.files_unchanged} unchanged), dirs {s.dirs}, "
            f"{_human(s.bytes_total)} in {seconds:.1f}s ({rate:.0f} MB/s)")
    out.say(f"  read {_human(s.bytes_read)}, added {_human(s.bytes_added)} to the store")
    if s.errors:
        out.say(f"  INCOMPLETE: {s.errors} path(s) could not be read (listed above)")
    if s.mesh is not None:
        _say_push(out, s.mesh, degraded)
    _say_anomaly(out, s)
    return s.code


def _say_anomaly(out: Out, s: c.BackupSummary) -> None:
    a = s.anomaly
    if a is not None and a.verdict != "ok":
        head = ("ALERT: this backup looks like ransomware or mass damage"
                if a.verdict == "alert" else "unusual backup (suspect)")
        out.say(f"  anomaly: {head} (score {float(a.score):.2f})")
        for r in a.reasons:
            out.say(f"    {r}")
        if a.verdict == "alert":
            out.say(f"  the snapshot before it is protected; `corestate anomaly explain {s.snapshot_id[:8]}`, "
                    f"then `corestate anomaly ack {s.snapshot_id[:8]}` if the change was expected")
    if s.silent_corruption:
        out.say(f"  silent corruption: {s.silent_corruption} file(s) changed under an unchanged size and mtime "
                "(listed above)")


def request(cls: type[c.Message], hint: str, **fields: Any) -> Any:
    """The typed call, or what in the request is beyond the call's limits, in words."""
    try:
        return cls(**fields)
    except LocalProtocolError as exc:
        raise CoreStateError(f"too much for one {cls.TYPE} call: {exc}", hint=hint) from None


def _backup_status(ev: c.BackupProgress) -> dict[str, Any]:
    if ev.phase == "shares":
        return {"packs_placed": ev.packs_done, "packs": ev.packs_total}
    return {"files": ev.files, "bytes_read": ev.bytes_read, "bytes_done": ev.bytes_done,
            "bytes_added": ev.bytes_added, "total_bytes": None if ev.bytes_total < 0 else ev.bytes_total,
            "current": ev.current}


def _backup_bar(ev: c.BackupProgress) -> tuple[str, int, int | None, str]:
    if ev.phase == "shares":
        return ("shares", ev.packs_done, ev.packs_total or None, "packs coded and placed")
    return ("backup", ev.bytes_done, ev.bytes_total if ev.bytes_total > 0 else None,
            f"{ev.files} files, +{_human(ev.bytes_added)}")


class Phases:
    """Progress drawn from an operation's typed progress events, as ``_ticker`` draws it (a
    bar with ETA on a terminal, JSON status lines every second with --json): one ticker per
    phase, over the latest event, until the next phase or the operation's end.

    ``view`` is ``out`` with its events routed through here and then on to where ``out``
    sends them (the daemon's subscribers, when the daemon runs this as a CLI command).
    """

    _END = (c.BackupFinished, c.BackupFailed, c.RestoreFinished, c.RestoreFailed)

    def __init__(self, out: Out, status: Callable[[Any], dict[str, Any]],
                 bar: Callable[[Any], tuple[str, int, int | None, str]]) -> None:
        self.out = out
        self._status, self._bar = status, bar
        self._forward = out.emit
        self.view = copy.copy(out)
        self.view.emit = self._on_event
        self._latest: Any = None
        self._phase: str | None = None
        self._ticker = ExitStack()
        self._lock = threading.Lock()

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, (c.BackupProgress, c.RestoreProgress)):
            with self._lock:
                self._latest = ev
                if ev.phase != self._phase:
                    self._ticker.close()
                    self._phase = ev.phase
                    bar: Bar = lambda: self._bar(self._latest)  # noqa: E731
                    self._ticker.enter_context(_ticker(self.out, lambda: self._status(self._latest), bar))
        elif isinstance(ev, self._END):
            self._close()
        if self._forward is not None:
            self._forward(ev)

    def _close(self) -> None:
        with self._lock:
            self._ticker.close()
            self._phase = None

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


def _push_json(m: c.PushSummary | None, degraded: list[c.DegradedPack]) -> Any:
    if m is None:
        return None
    return {
        "k": m.k, "n": m.n, "peers_online": list(m.online), "peers_offline": list(m.offline),
        "packs_uploaded": m.uploaded, "local_copies_dropped": m.dropped_local,
        "share_bytes": m.share_bytes, "seconds": 0 if m.seconds is None else round(float(m.seconds), 3),
        "degraded": [{"pack": d.pack.hex(), "placed": d.placed, "k": d.k, "n": d.n} for d in degraded],
        "problems": list(m.problems), "safe": m.safe,
    }


def _say_push(out: Out, m: c.PushSummary, degraded: list[c.DegradedPack]) -> None:
    from corestate.node.runtime.reports import short
    if m.seconds is not None:
        out.say(f"  mesh: {m.uploaded} pack(s) coded k={m.k} n={m.n} onto "
                f"{len(m.online)} peer(s) ({_human(m.share_bytes)} of shares in {float(m.seconds):.1f}s)")
    if m.offline:
        out.say(f"  peers offline: {', '.join(short(p) for p in m.offline)}")
    for line in m.problems:
        out.warn(line)
    for d in degraded[:20]:
        state = "recoverable from peers" if d.placed >= d.k else "NOT recoverable from peers; kept locally"
        out.warn(f"pack {d.pack.hex()[:12]}: {d.placed} of {d.n} shares placed (k={d.k}): {state}")
    if len(degraded) > 20:
        out.warn(f"... and {len(degraded) - 20} more")
    if not m.safe:
        out.say("  DEGRADED: not every pack has all its shares on peers; "
                "run the backup again when more peers are online")
