"""``restore``: fetch what lives only on peers, then write a snapshot below a target.

Invariants:

- nothing is written outside the target, whatever a manifest says (node/engine/restore.py);
- packs fetched from peers for this restore are dropped again afterwards, also when it
  fails: the local store holds after a restore what it held before;
- a restore emits ``restore.started``, ``restore.progress`` at the start of each phase
  (``fetch`` when peers hold some of its packs, then ``write``), every second and at its
  end, then ``restore.finished`` or ``restore.failed``; a dry run emits only its progress
  (phase ``dry-run``) — and ``restore.failed`` if it fails;
- the answer is paged: one ``RestoreIssue`` per path that could not be restored, then the
  ``RestoreSummary``, always last.

``packs_of``, ``fetch`` and ``drop_fetched`` are node/runtime/meshops.py's, imported lazily
in ``_fetch`` and ``_restore``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from corestate.node.app import Context, Operation
from corestate.node.app.backup import absolute, clip, eta, text, ticking
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.engine.repo import SnapshotInfo
    from corestate.node.engine.restore import RestoreStats

RestoreItem: TypeAlias = c.RestoreIssue | c.RestoreSummary


def restore(node: LocalNode, call: c.RestoreCall, ctx: Context) -> Iterator[RestoreItem]:
    try:
        yield from _restore(node, call, ctx)
    except (CoreStateError, OSError) as exc:
        ctx.emit(c.RestoreFailed(time_ns=time.time_ns(), message=clip(str(exc)),
                                 hint=clip(getattr(exc, "hint", ""), 1024)))
        raise


def _restore(node: LocalNode, call: c.RestoreCall, ctx: Context) -> Iterator[RestoreItem]:
    from corestate.node.engine.restore import Restore, RestoreStats
    absolute((call.target,))
    snap = node.repo.resolve(call.snapshot)
    stats = RestoreStats()
    includes = [b"/" + p.strip(b"/") for p in call.paths]
    t0 = time.monotonic()
    if not call.dry_run:
        ctx.emit(c.RestoreStarted(time_ns=time.time_ns(), snapshot_id=snap.id.hex(), target=text(call.target)))
    fetched = [] if call.dry_run else _fetch(node, ctx, snap, includes, stats, t0)
    try:
        with ticking(ctx, lambda: _event("dry-run" if call.dry_run else "write", stats, t0)):
            Restore(node.repo, stats=stats, check=ctx.check).run(snap, Path(os.fsdecode(call.target)), includes,
                                                dry_run=call.dry_run)
    finally:
        if fetched:
            from corestate.node.runtime.meshops import drop_fetched
            drop_fetched(node, fetched)
    secs = time.monotonic() - t0
    code = 1 if stats.errors else 0
    if not call.dry_run:
        ctx.emit(c.RestoreFinished(time_ns=time.time_ns(), snapshot_id=snap.id.hex(), code=code,
                                   files=stats.files, bytes=stats.bytes_total, errors=len(stats.errors)))
    for path, msg in stats.errors:
        yield c.RestoreIssue(path=path[:65536], message=clip(msg))
    yield c.RestoreSummary(
        snapshot_id=snap.id.hex(), short_id=snap.short_id, target=call.target, code=code, files=stats.files,
        dirs=stats.dirs, other=stats.other, bytes=stats.bytes_total, errors=len(stats.errors),
        dry_run=call.dry_run, seconds=f"{secs:.9f}")


def _event(phase: str, stats: RestoreStats, t0: float, packs: tuple[int, int, int] = (0, 0, 0)
           ) -> c.RestoreProgress:
    return c.RestoreProgress(
        time_ns=time.time_ns(), files=stats.files, files_total=stats.files_total,
        bytes_done=stats.bytes_written, bytes_total=stats.bytes_total,
        eta_s=eta(stats.bytes_written, stats.bytes_total, time.monotonic() - t0), phase=phase,
        packs_done=packs[0], packs_total=packs[1], bytes_fetched=packs[2])


def _fetch(node: LocalNode, ctx: Context, snap: SnapshotInfo, includes: list[bytes],
           stats: RestoreStats, t0: float) -> list[bytes]:
    """Bring back from peers the packs of ``snap`` that live only there."""
    from corestate.node.runtime import meshops
    remote = node.ledger.remote_only()
    if not remote:
        return []
    need = meshops.packs_of(node, snap, includes or None) & remote
    if not need:
        return []
    port = ctx.mesh()
    if port is None:
        raise CoreStateError("this snapshot's data is on peers, and no way to reach them is open",
                             hint="report this as a bug")
    prog = (0, len(need), 0)

    def update(done: int, total: int, nbytes: int) -> None:
        nonlocal prog
        prog = (done, total, nbytes)
    with ticking(ctx, lambda: _event("fetch", stats, t0, prog)):
        return meshops.fetch(node, port, need, progress=update)


OPERATIONS: tuple[Operation, ...] = (Operation(c.RestoreCall, restore, page=c.RestorePage),)


__all__ = ["OPERATIONS", "restore"]
