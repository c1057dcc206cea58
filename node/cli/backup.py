"""``backup``: the engine's snapshot, then the packs out to the mesh and into the catalog."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from corestate.node.cli.context import _group_round, _open, _port
from corestate.node.cli.output import (
    EXIT_INCOMPLETE,
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


def _scan_totals(paths: list[Path], stats: Any, stop: threading.Event) -> None:
    """Count files and bytes ahead of the backup, for the ETA (terminal only)."""
    files = size = 0
    stack = [os.fsencode(p) for p in paths]
    while stack and not stop.is_set():
        p = stack.pop()
        try:
            with os.scandir(p) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        files += 1
                        size += e.stat(follow_symlinks=False).st_size
        except NotADirectoryError:
            try:
                size += os.lstat(p).st_size
                files += 1
            except OSError:
                pass
        except OSError:
            pass
    stats.estimate_files, stats.estimate_bytes = files, size


def cmd_backup(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    try:
        return _backup(args, out)
    except (CoreStateError, OSError) as exc:
        if out.emit is not None:
            out.emit(c.BackupFailed(time_ns=time.time_ns(), scheduled=out.scheduled, message=str(exc)[:4000],
                                    hint=getattr(exc, "hint", "")[:1000]))
        raise


def _backup(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.backup import Backup, BackupStats
    from corestate.protocol import control as c
    with _open(args, out) as node:
        # Paths in config.toml are relative to the home (absolute ones stay as they are).
        paths = [Path(p) for p in args.paths] if args.paths else [node.home.path / p for p in node.cfg.paths]
        if not paths:
            raise CoreStateError("nothing to back up",
                                 hint=f"give paths: `corestate backup PATH...`, or list them in {node.home.config_path}")
        for p in paths:
            if not os.path.lexists(p):
                raise CoreStateError(f"{p}: no such file or directory", hint="check the path")
        stats = BackupStats()
        stop = threading.Event()
        if out.tty:
            threading.Thread(target=_scan_totals, args=(paths, stats, stop), daemon=True).start()
        journal = _journal_for(args, paths)
        prev: list[str | None] = [None]
        engine = Backup(node.repo, node.cfg, skip_dirs=node.skip_dirs(),
                        exclude=node.cfg.exclude + (args.exclude or []), stats=stats,
                        state_dir=node.home.path / "snapshots",
                        changes=None if journal is None else lambda: journal.changes_since(prev[0]))
        if journal is not None:
            prev[0] = _journal_token(node, engine.fingerprint_salt)
            new_token = journal.mark()  # before any snapshot is taken (kernel/journal.py)

        def status() -> dict[str, Any]:
            return {"files": stats.files, "bytes_read": stats.bytes_read, "bytes_done": stats.bytes_total,
                    "bytes_added": stats.bytes_added, "total_bytes": stats.estimate_bytes,
                    "current": _fs(stats.current)}

        def bar() -> tuple[str, int, int | None, str]:
            return ("backup", stats.bytes_total, stats.estimate_bytes or None,
                    f"{stats.files} files, +{_human(stats.bytes_added)}")
        t0 = time.monotonic()

        def progress_event() -> c.BackupProgress:
            return c.BackupProgress(
                time_ns=time.time_ns(), files=stats.files, bytes_done=stats.bytes_total,
                bytes_total=stats.estimate_bytes or -1, bytes_added=stats.bytes_added,
                eta_s=_eta(stats.bytes_total, stats.estimate_bytes or 0, time.monotonic() - t0),
                current=_text(stats.current))
        if out.emit is not None:
            out.emit(c.BackupStarted(time_ns=time.time_ns(), scheduled=out.scheduled,
                                     paths=tuple(_text(p) for p in paths[:256])))
        try:
            with _ticker(out, status, bar), _progress_events(out, progress_event):
                result = engine.run(paths)
        finally:
            stop.set()
        if journal is not None:
            _save_journal_token(node, new_token, engine.fingerprint_salt)
        pushed = _push(args, node, out)
        _record_in_catalog(args, node, result, pushed)
    st = result.stats
    for path, msg in st.errors:
        out.warn(f"{_fs(path)}: {msg} (not backed up)")
    for path in st.torn:
        out.warn(f"{_fs(path)}: changed while it was read; stored as read and marked torn")
    for path, msg in st.warnings:
        if out.tty or args.verbose:
            out.warn(f"{_fs(path)}: {msg}")
    code = EXIT_INCOMPLETE if st.errors or (pushed is not None and not pushed.safe) else EXIT_OK
    rate = st.bytes_total / result.seconds / 1e6 if result.seconds else 0.0
    if out.emit is not None:
        out.emit(c.BackupFinished(
            time_ns=time.time_ns(), scheduled=out.scheduled, snapshot_id=result.snapshot_id.hex(),
            code=code, files=st.files, bytes_read=st.bytes_read, bytes_added=st.bytes_added,
            errors=len(st.errors), seconds=f"{result.seconds:.3f}"))
    if out.json:
        out.obj({
            "type": "summary", "snapshot_id": result.snapshot_id.hex(), "files": st.files,
            "dirs": st.dirs, "files_unchanged": st.files_unchanged, "bytes_total": st.bytes_total,
            "bytes_read": st.bytes_read, "bytes_added": st.bytes_added, "chunks_new": st.chunks_new, "bytes_new": st.bytes_new,
            "errors": [[_fs(p), m] for p, m in st.errors], "torn": [_fs(p) for p in st.torn],
            "torn_files": len(st.torn), "snapshot_provider": result.snapshot.provider,
            "paths_visited": st.paths_visited,
            "change_journal": None if st.journal is None else {
                "used": st.journal[0] == "used", "detail": st.journal[1]},
            "seconds": round(result.seconds, 3), "complete": code == EXIT_OK,
            "mesh": _push_json(pushed),
        })
        return code
    out.say(f"snapshot {result.snapshot_id.hex()[:8]} saved ({result.snapshot.provider} snapshot)")
    out.say(f"  files {st.files} ({st.files_unchanged} unchanged), dirs {st.dirs}, "
            f"{_human(st.bytes_total)} in {result.seconds:.1f}s ({rate:.0f} MB/s)")
    out.say(f"  read {_human(st.bytes_read)}, added {_human(st.bytes_added)} to the store")
    if st.errors:
        out.say(f"  INCOMPLETE: {len(st.errors)} path(s) could not be read (listed above)")
    if pushed is not None:
        _say_push(out, pushed)
    return code


def _journal_for(args: argparse.Namespace, paths: list[Path]) -> Any:
    """The daemon's change journal, when it watches exactly the paths being backed up."""
    journal = getattr(getattr(args, "daemon", None), "journal", None)
    if journal is None:
        return None
    if sorted(Path(os.path.abspath(p)) for p in paths) != journal.roots:
        return None
    return journal


def _journal_token(node: LocalNode, salt: bytes) -> str | None:
    """The journal position of the last recorded backup, if taken under these settings."""
    try:
        saved = json.loads((node.home.path / "journal" / "token.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("salt") != salt.hex():
        return None  # other excludes or chunking: the directory cache must be rebuilt
    token = saved.get("token")
    return token if isinstance(token, str) else None


def _save_journal_token(node: LocalNode, token: str, salt: bytes) -> None:
    from corestate.kernel.state import write_json
    write_json(node.home.path / "journal" / "token.json", {"token": token, "salt": salt.hex()})


def _push(args: argparse.Namespace, node: LocalNode, out: Out) -> Any:
    """On a mesh node, spread the new packs over peers; None on a standalone node."""
    from corestate.node.runtime import meshops
    if not meshops.is_mesh_node(node):
        if args.k or args.n:
            out.warn("--k/--n ignored: this node has no trusted peers (`corestate peer add`)")
        return None
    port = _port(args)
    if port is None:
        raise CoreStateError("this node has peers but no way to reach them", hint="report this as a bug")
    from corestate.node.runtime.reports import Progress
    prog = Progress()

    def bar() -> tuple[str, int, int | None, str]:
        return ("shares", prog.done, prog.total or None, "packs coded and placed")
    with _ticker(out, lambda: {"packs_placed": prog.done, "packs": prog.total}, bar):
        return meshops.push(node, port, k=args.k or 0, n=args.n or 0, progress=prog)


def _record_in_catalog(args: argparse.Namespace, node: LocalNode, result: Any, pushed: Any) -> None:
    """In a group: the snapshot (sealed to this node) and where each new pack's shares
    went, in this node's partition of the catalog; then tell the members."""
    if not node.group.in_group:
        return
    from corestate.node.runtime import meshops
    items = meshops.catalog_items(node, result.snapshot_id, pushed)
    node.group.write(items)
    _group_round(args, node)


def _push_json(res: Any) -> Any:
    if res is None:
        return None
    rep = res.report
    return {
        "k": res.k, "n": res.n, "peers_online": res.online, "peers_offline": res.offline,
        "packs_uploaded": res.uploaded, "local_copies_dropped": res.dropped_local,
        "share_bytes": rep.share_bytes if rep else 0, "seconds": round(rep.seconds, 3) if rep else 0,
        "degraded": [{"pack": p.hex(), "placed": placed, "k": k, "n": n} for p, placed, k, n in res.degraded],
        "problems": res.problems, "safe": res.safe,
    }


def _say_push(out: Out, res: Any) -> None:
    from corestate.node.runtime.meshops import describe_degraded, short
    rep = res.report
    if rep is not None:
        out.say(f"  mesh: {res.uploaded} pack(s) coded k={res.k} n={res.n} onto "
                f"{len(res.online)} peer(s) ({_human(rep.share_bytes)} of shares in {rep.seconds:.1f}s)")
    if res.offline:
        out.say(f"  peers offline: {', '.join(short(p) for p in res.offline)}")
    for line in res.problems:
        out.warn(line)
    for line in describe_degraded(res):
        out.warn(line)
    if not res.safe:
        out.say("  DEGRADED: not every pack has all its shares on peers; "
                "run the backup again when more peers are online")
