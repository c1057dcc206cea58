"""``restore``: write a snapshot below a target, packs that live only on peers streamed in.

Invariants:

- nothing is written outside the target, whatever a manifest says (node/engine/restore.py);
- packs that live only on peers are fetched into memory, a bounded wave at a time
  (``[restore] buffer``), while the files are written (node/runtime/meshops.py
  ``MeshPackFeed``): none is staged on disk, the local store holds after a restore what it
  held before;
- a restore emits ``restore.started``, ``restore.progress`` at the start of its ``write``
  phase (with the packs fetched from peers so far), every second and at its end, then ``restore.finished`` or ``restore.failed``; a dry run emits only its progress
  (phase ``dry-run``) — and ``restore.failed`` if it fails;
- the answer is paged: one ``RestoreIssue`` per path that could not be restored, then the
  ``RestoreSummary``, always last.

``packs_of`` and ``MeshPackFeed`` are node/runtime/meshops.py's, imported lazily in
``_feed``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from corestate.node.app import Context, Operation
from corestate.node.app.backup import absolute, clip, eta, text, ticking
from corestate.node.local import LocalNode
from corestate.protocol import control as c
from corestate.protocol.errors import CorruptObject

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.engine.repo import SnapshotInfo
    from corestate.node.engine.restore import RestoreStats
    from corestate.node.runtime.meshops import MeshPackFeed

RestoreItem: TypeAlias = c.RestoreIssue | c.RestoreSummary
T = TypeVar("T")


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
    healed: list[bytes] = []

    def healing(fn: Callable[[], T]) -> T:
        """``fn()``; if a tree or snapshot record does not decrypt (it lives in a metadata
        pack, always kept local), those packs rebuilt from their shares and ``fn()`` once
        more. Nothing is written before every tree is read, so starting again is safe."""
        try:
            return fn()
        except CorruptObject:
            if healed:
                raise
            healed.extend(_heal(node, ctx, node.metadata_packs()))
            if not healed:
                raise
            return fn()
    snap = healing(lambda: node.repo.resolve(call.snapshot))
    stats = RestoreStats()
    includes = [b"/" + p.strip(b"/") for p in call.paths]
    t0 = time.monotonic()
    if not call.dry_run:
        ctx.emit(c.RestoreStarted(time_ns=time.time_ns(), snapshot_id=snap.id.hex(), target=text(call.target)))
    feed = None if call.dry_run else healing(lambda: _feed(node, ctx, snap, includes))

    def progress() -> c.RestoreProgress:
        packs = (0, 0, 0) if feed is None else (feed.packs_done, feed.packs_total, feed.bytes_fetched)
        return _event("dry-run" if call.dry_run else "write", stats, t0, packs)

    def run() -> RestoreStats:
        nonlocal stats
        stats = RestoreStats()
        Restore(node.repo, stats=stats, check=ctx.check, feed=feed,
                buffer=node.cfg.restore_buffer).run(snap, Path(os.fsdecode(call.target)), includes,
                                                    dry_run=call.dry_run)
        return stats
    with ticking(ctx, progress):
        stats = healing(run)
        if not call.dry_run:
            _heal_and_retry(node, call, ctx, snap, includes, stats)
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


DAMAGED = "damaged data: "


def _heal_and_retry(node: LocalNode, call: c.RestoreCall, ctx: Context, snap: SnapshotInfo,
                    includes: list[bytes], stats: RestoreStats) -> None:
    """Files that failed on damaged data in a local pack (bit rot) are restored again once
    the damaged packs were rebuilt from their shares on peers (``meshops.heal_local``, which
    also heals the store: ``check --read-data`` passes afterwards). Found by the chaos
    campaign: one flipped bit in a local pack failed a restore whose data the mesh held."""
    if not any(msg.startswith(DAMAGED) for _, msg in stats.errors):
        return
    from corestate.node.engine.restore import Restore, RestoreStats
    from corestate.node.runtime import meshops
    if not _heal(node, ctx, meshops.packs_of(node, snap, includes or None)):
        return
    target = os.fsencode(os.path.abspath(os.fsdecode(call.target)))
    again = [path[len(target):] for path, msg in stats.errors
             if msg.startswith(DAMAGED) and path.startswith(target + b"/")]
    if not again:
        return
    retry = RestoreStats()
    Restore(node.repo, stats=retry, check=ctx.check, feed=_feed(node, ctx, snap, again),
            buffer=node.cfg.restore_buffer).run(snap, Path(os.fsdecode(target)), again)
    stats.errors = [(p, m) for p, m in stats.errors if not m.startswith(DAMAGED)] + retry.errors
    stats.files += retry.files


def _heal(node: LocalNode, ctx: Context, packs: set[bytes]) -> list[bytes]:
    """Those of ``packs`` whose local copy is damaged, rebuilt from their shares on peers
    (none without a way to reach them)."""
    port = ctx.mesh()
    if port is None:
        return []
    from corestate.node.runtime import meshops
    return meshops.heal_local(node, port, meshops.damaged_local(node, packs))


def _event(phase: str, stats: RestoreStats, t0: float, packs: tuple[int, int, int] = (0, 0, 0)
           ) -> c.RestoreProgress:
    return c.RestoreProgress(
        time_ns=time.time_ns(), files=stats.files, files_total=stats.files_total,
        bytes_done=stats.bytes_written, bytes_total=stats.bytes_total,
        eta_s=eta(stats.bytes_written, stats.bytes_total, time.monotonic() - t0), phase=phase,
        packs_done=packs[0], packs_total=packs[1], bytes_fetched=packs[2])


def _feed(node: LocalNode, ctx: Context, snap: SnapshotInfo, includes: list[bytes]) -> MeshPackFeed | None:
    """The packs of ``snap`` that live only on peers, fetched into memory as the restore
    writes (none staged on disk); None when every pack it needs is local."""
    from corestate.node.runtime import meshops
    remote = node.ledger.remote_only()
    if not remote or not meshops.packs_of(node, snap, includes or None) & remote:
        return None
    port = ctx.mesh()
    if port is None:
        raise CoreStateError("this snapshot's data is on peers, and no way to reach them is open",
                             hint="report this as a bug")
    return meshops.MeshPackFeed(node, port)


OPERATIONS: tuple[Operation, ...] = (Operation(c.RestoreCall, restore, page=c.RestorePage),)


__all__ = ["OPERATIONS", "restore"]
