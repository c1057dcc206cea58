"""``backup``: a snapshot of the paths, its packs out to the mesh, its record into the catalog.

Invariants:

- every backup emits ``backup.started``, then ``backup.progress`` at the start of each phase
  (``files``, and ``shares`` on a node with trusted peers), every second while it runs and
  at its end — however short —, then ``backup.finished`` or ``backup.failed``;
- the change journal is marked before any snapshot is taken and its token saved only once
  the snapshot is stored, so no change falls between two backups (kernel/journal.py); the
  token is kept with the settings it was taken under (excludes, chunking): other settings
  mean a full walk;
- a data pack's local copy is dropped only once all n of its shares are acknowledged; a
  pack short of shares keeps its copy and is topped up, with its own code, next time;
- the answer is paged: one ``BackupIssue`` per path not stored as it is on disk, one
  ``DegradedPack`` per pack short of shares, then the ``BackupSummary``, always last.

What a running daemon lends the operation comes through the context, as optional
attributes (read with ``getattr``; ``Local`` has them only when the daemon runs a CLI
command in place): ``journal``, its change journal of the configured paths (used when the
backup is of exactly those paths), and ``kick_members``, which starts its anti-entropy round
at once. Without them the whole tree is walked, and the members are told by a sync round
through ``ctx.mesh()`` before the operation returns (a CLI without a daemon ends its
transient host right after).

The mesh is reached only through ``ctx.mesh()``; ``catalog_items`` is still read from
node/runtime/meshops.py, imported lazily in ``_record``. The code and which packs to
(re)code are decided in node/core/coding.py.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from corestate.node.app import Context, Operation
from corestate.node.app.ticker import every
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.engine.backup import BackupResult, BackupStats
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.reports import Progress, UploadReport

log = logging.getLogger("corestate.backup")

BackupItem: TypeAlias = c.BackupIssue | c.DegradedPack | c.BackupSummary


def backup(node: LocalNode, call: c.BackupCall, ctx: Context) -> Iterator[BackupItem]:
    try:
        yield from _backup(node, call, ctx)
    except (CoreStateError, OSError) as exc:
        ctx.emit(c.BackupFailed(time_ns=time.time_ns(), scheduled=ctx.scheduled, message=clip(str(exc)),
                                hint=clip(getattr(exc, "hint", ""), 1024)))
        raise


def _backup(node: LocalNode, call: c.BackupCall, ctx: Context) -> Iterator[BackupItem]:
    from corestate.node.engine.backup import Backup, BackupStats
    absolute(call.paths)
    # Paths in config.toml are relative to the home (absolute ones stay as they are).
    paths = ([Path(os.fsdecode(p)) for p in call.paths] if call.paths
             else [node.home.path / p for p in node.cfg.paths])
    if not paths:
        raise CoreStateError("nothing to back up",
                             hint=f"give paths: `corestate backup PATH...`, or list them in {node.home.config_path}")
    for p in paths:
        if not os.path.lexists(p):
            raise CoreStateError(f"{p}: no such file or directory", hint="check the path")
    stats = BackupStats()
    stop = threading.Event()
    if call.estimate:
        threading.Thread(target=_scan_totals, args=(paths, stats, stop), daemon=True).start()
    journal = _journal_for(ctx, paths)
    watch = _anomaly_begin(node, ctx, paths)
    prev: list[str | None] = [None]
    stream = _start_stream(node, call, ctx)
    engine = Backup(node.repo, node.cfg, skip_dirs=node.skip_dirs(),
                    exclude=node.cfg.exclude + list(call.exclude), stats=stats,
                    state_dir=node.home.path / "snapshots",
                    changes=None if journal is None else lambda: journal.changes_since(prev[0]),
                    check=ctx.check, observer=watch[1] if watch else None,
                    on_pack=None if stream is None else stream.offer)
    new_token = ""
    if journal is not None:
        prev[0] = _journal_token(node, engine.fingerprint_salt)
        new_token = journal.mark()  # before any snapshot is taken (kernel/journal.py)
    ctx.emit(c.BackupStarted(time_ns=time.time_ns(), scheduled=ctx.scheduled,
                             paths=tuple(text(p) for p in paths[:256])))
    progress = _Watch(stats)
    try:
        with ticking(ctx, lambda: progress.event("files")):
            result = engine.run(paths)
    except BaseException:
        if watch is not None:
            watch[1].close()
        if stream is not None:
            stream.finish()
            _record_placements(node, stream.report)  # they stay placed: say where
        raise
    finally:
        stop.set()
    if journal is not None:
        _save_journal_token(node, new_token, engine.fingerprint_salt)
    anomaly, silent, resampled = _anomaly_end(node, ctx, watch, result, engine)
    pushed = _push(node, call, ctx, progress, stream)
    _record(node, ctx, result, pushed)
    st = result.stats
    code = 3 if st.errors or (pushed is not None and not pushed.safe) else 0
    ctx.emit(c.BackupFinished(
        time_ns=time.time_ns(), scheduled=ctx.scheduled, snapshot_id=result.snapshot_id.hex(),
        code=code, files=st.files, bytes_read=st.bytes_read, bytes_added=st.bytes_added,
        errors=len(st.errors), seconds=f"{result.seconds:.3f}"))
    for path, msg in st.errors:
        yield c.BackupIssue(kind="error", path=path[:65536], message=clip(msg))
    for path in st.torn:
        yield c.BackupIssue(kind="torn", path=path[:65536], message="")
    for path in silent:
        yield c.BackupIssue(kind="silent", path=path[:65536],
                            message="content changed while size and mtime did not (silent corruption?)")
    if call.skipped:
        for path, msg in st.warnings:
            yield c.BackupIssue(kind="skipped", path=path[:65536], message=clip(msg))
    for pack, placed, k, n in pushed.degraded if pushed is not None else ():
        yield c.DegradedPack(pack=pack, placed=placed, k=k, n=n)
    yield _summary(result, code, pushed, anomaly, len(silent), resampled)


def _anomaly_begin(node: LocalNode, ctx: Context, paths: list[Path]) -> tuple[Any, Any] | None:
    """The anomaly model's state and observer for this backup (node/app/anomaly.py), or
    None when the model cannot run (the backup goes on without a verdict)."""
    from corestate.node.app import anomaly
    try:
        return anomaly.begin(node, ctx, [os.fsencode(p) for p in paths])
    except Exception as exc:  # the model never stops a backup
        ctx.warn(f"the anomaly model did not run: {exc}")
        return None


def _anomaly_end(node: LocalNode, ctx: Context, watch: tuple[Any, Any] | None, result: BackupResult,
                 engine: Any) -> tuple[c.AnomalyVerdict | None, list[bytes], int]:
    """The verdict, the silently corrupted paths, and how many cache hits were re-read."""
    from corestate.node.app import anomaly
    resampled = None
    try:
        resampled = anomaly.resample_cache(node, result, engine.read_paths())
    except Exception as exc:
        ctx.warn(f"the silent-corruption check did not run: {exc}")
    if watch is None:
        return None, list(resampled.mismatches) if resampled else [], resampled.checked if resampled else 0
    state, obs = watch
    try:
        verdict = anomaly.assess(node, ctx, state, obs, result, resampled)
    except Exception as exc:  # the model never stops a backup
        ctx.warn(f"the anomaly model could not judge this backup: {exc}")
        verdict = None
    silent = list(obs.silent) + [p for p in (resampled.mismatches if resampled else []) if p not in obs.silent]
    return verdict, silent, resampled.checked if resampled else 0


def _summary(result: BackupResult, code: int, pushed: PushResult | None, anomaly: c.AnomalyVerdict | None = None,
             silent: int = 0, resampled: int = 0) -> c.BackupSummary:
    st = result.stats
    mesh = None
    if pushed is not None:
        rep = pushed.report
        mesh = c.PushSummary(
            k=pushed.k, n=pushed.n, online=tuple(pushed.online), offline=tuple(pushed.offline),
            uploaded=pushed.uploaded, dropped_local=pushed.dropped_local,
            share_bytes=rep.share_bytes if rep else 0, seconds=None if rep is None else f"{rep.seconds:.9f}",
            degraded=len(pushed.degraded), problems=tuple(clip(p) for p in pushed.problems[:64]),
            safe=pushed.safe)
    return c.BackupSummary(
        snapshot_id=result.snapshot_id.hex(), provider=result.snapshot.provider, code=code,
        files=st.files, dirs=st.dirs, files_unchanged=st.files_unchanged, bytes_total=st.bytes_total,
        bytes_read=st.bytes_read, bytes_added=st.bytes_added, chunks_new=st.chunks_new, bytes_new=st.bytes_new,
        paths_visited=st.paths_visited, errors=len(st.errors), torn=len(st.torn),
        journal=None if st.journal is None else c.JournalUse(used=st.journal[0] == "used",
                                                             detail=clip(st.journal[1])),
        seconds=f"{result.seconds:.9f}", mesh=mesh, anomaly=anomaly, silent_corruption=silent,
        resampled=resampled)


class _Watch:
    """The counters a backup's progress events are made of, in both phases."""

    def __init__(self, stats: BackupStats) -> None:
        self.stats = stats
        self.t0 = time.monotonic()
        self.packs: Progress | None = None  # set when the shares phase starts
        self.packs_t0 = 0.0

    def event(self, phase: str) -> c.BackupProgress:
        st, packs = self.stats, self.packs
        est = st.estimate_bytes or 0
        if packs is None:
            left = eta(st.bytes_total, est, time.monotonic() - self.t0)
        else:
            left = eta(packs.done, packs.total, time.monotonic() - self.packs_t0)
        return c.BackupProgress(
            time_ns=time.time_ns(), files=st.files, bytes_done=st.bytes_total, bytes_total=est or -1,
            bytes_added=st.bytes_added, eta_s=left, current=text(st.current), phase=phase,
            bytes_read=st.bytes_read, packs_done=packs.done if packs else 0,
            packs_total=packs.total if packs else 0)


# -- the mesh --------------------------------------------------------------------------------


@dataclass(slots=True)
class PushResult:
    k: int
    n: int
    online: list[str]
    offline: list[str]
    report: UploadReport | None
    uploaded: int = 0
    dropped_local: int = 0
    degraded: list[tuple[bytes, int, int, int]] = field(default_factory=list)  # pack, placed, k, n
    problems: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.degraded and not self.problems


def _push(node: LocalNode, call: c.BackupCall, ctx: Context, watch: _Watch,
          stream: _Stream | None = None) -> PushResult | None:
    """On a mesh node, spread the new packs over peers (what the stream has not placed
    yet: it is finished first); None on a standalone node."""
    if not node.has_holders():
        return None
    port = ctx.mesh()
    if port is None:
        raise CoreStateError("this node has peers but no way to reach them", hint="report this as a bug")
    from corestate.node.runtime.reports import Progress
    watch.packs, watch.packs_t0 = (Progress() if stream is None else stream.progress), time.monotonic()
    with ticking(ctx, lambda: watch.event("shares")):
        if stream is None:
            res = push(node, port, k=call.k, n=call.n, progress=watch.packs)
        else:
            stream.finish()
            rest = push(node, port, k=stream.k, n=stream.n, progress=watch.packs,
                        found=(stream.cands, stream.offline))
            res = _merged(stream, rest)
    if res.online:
        # Other holders took the shares; still, a person should hear why a target was left out.
        for why in target_trouble(port, res.offline):
            ctx.warn(why)
    return res


def target_trouble(port: Any, holders: list[str]) -> list[str]:
    """Why each storage target among ``holders`` could not be used at its last capacity
    request (its error and the store's hint)."""
    if not any(h.startswith("target:") for h in holders):
        return []

    async def trouble(mesh: Mesh) -> dict[str, str]:
        return dict(mesh.target_trouble)
    known = port.call(trouble)
    return [known[h] for h in sorted(holders) if h in known]


def push(node: LocalNode, port: Any, *, k: int = 0, n: int = 0, progress: Progress | None = None,
         found: tuple[list[Any], list[str]] | None = None) -> PushResult:
    """Put every local pack that is not fully placed on the mesh (``port``: a MeshPort).
    ``found``: the candidates and offline peers, when the caller asked already."""
    from corestate.node.core.coding import by_code, choose_code, packs_to_code
    from corestate.node.runtime.reports import UploadReport
    cands, offline = found if found is not None else port.call(lambda mesh: mesh.candidates())
    online = [cd.peer for cd in cands]
    if not cands:
        # Nothing can be placed: everything stays local, and the caller says so (exit 3).
        res = PushResult(k or node.cfg.k or 1, n or node.cfg.n or 1, [], offline, None)
        res.problems.append(("no trusted peer is reachable" if not node.targets() else
                             "no trusted peer or storage target is reachable")
                            + ": the snapshot is stored on this machine only")
        res.problems += target_trouble(port, offline)
        from corestate.node.app.health import shunned
        mine = {*node.trusted_peers(), *(t.holder for t in node.targets())}
        res.problems += [f"{h} is counted lost or evicted and gets no new shares "
                         "(`corestate health`; `corestate audit` asks whether it is back)"
                         for h in sorted(shunned(node) & mine)]
        return res
    k, n = choose_code(len(cands), k, n, node.cfg.k, node.cfg.n)
    store = node.repo.store
    todo = packs_to_code(store.local_ids(), node.ledger.all(), k, n)
    res = PushResult(k, n, online, offline, None)
    if progress is not None:
        progress.total += len(todo)
    report = UploadReport()
    for (kk, nn), group in by_code(todo):

        async def up(mesh: Mesh, group: list[bytes] = group, kk: int = kk, nn: int = nn) -> UploadReport:
            return await mesh.upload(store.get, group, kk, nn, cands, progress)
        r = port.call(up)
        report.packs.extend(r.packs)
        report.share_bytes += r.share_bytes
        report.seconds += r.seconds
        report.put_latencies.extend(r.put_latencies)
    res.report = report
    res.uploaded = len(report.packs)
    keep = node.metadata_packs()
    for pr in report.packs:
        if pr.placed >= pr.n:
            if pr.pack not in keep:
                # Only now, with n acknowledgements recorded, does the local copy go.
                node.ledger.set_local(pr.pack, False)
                store.delete(pr.pack)
                res.dropped_local += 1
        else:
            res.degraded.append((pr.pack, pr.placed, pr.k, pr.n))
    return res


# -- streaming: packs leave while the engine runs ------------------------------------------

# Sealed packs waiting for an upload slot: with the packs in flight (Mesh.uploads_in_flight)
# this bounds how far the engine runs ahead of slow holders. The packs themselves wait on
# disk (they are durable before they are offered), the queue holds their ids.
STREAM_QUEUE = 4
# Packs coded and on their way at once while the engine runs: each holds the pack and its
# n shares in memory (2 x 16 MiB packs at k=2, n=4: about 100 MiB), beside the engine.
STREAM_IN_FLIGHT = 2


class _Stream:
    """Hands the engine's sealed packs (from its walking thread) to an upload task in the
    mesh's loop, through a bounded queue: when holders are slow, ``offer`` blocks and the
    engine waits. A data pack's local copy goes once all n of its shares are acknowledged
    (in the loop's worker thread, as the acknowledgements come); metadata packs stay. If
    the upload task fails, offers stop blocking and the packs stay local: the push after
    the run takes them (and reports why they failed)."""

    def __init__(self, node: LocalNode, port: Any, cands: list[Any], offline: list[str],
                 k: int, n: int, depth: int = STREAM_QUEUE) -> None:
        from corestate.node.runtime.reports import Progress, UploadReport
        self.node, self.port = node, port
        self.cands, self.offline, self.k, self.n = cands, offline, k, n
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self.report = UploadReport()
        self.progress = Progress()
        self.dropped = 0
        self.most_waiting = 0  # the longest the queue was (what the engine ran ahead by)
        self._data: set[bytes] = set()
        self._lock = threading.Lock()
        self.failure: BaseException | None = None
        self._gone = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pack-stream", daemon=True)
        self._thread.start()

    def offer(self, pack: bytes, data: bool) -> None:
        """From the engine: ``pack`` is durable and indexed. Blocks while the queue is full."""
        with self._lock:
            if data:
                self._data.add(pack)
            self.progress.total += 1
        self._put(pack)

    def _put(self, item: bytes | None) -> None:
        while not self._gone.is_set():
            try:
                self.queue.put(item, timeout=0.25)
            except queue.Full:
                continue
            self.most_waiting = max(self.most_waiting, self.queue.qsize())
            return

    def finish(self) -> None:
        """No more packs: wait until every offered one is acknowledged (or failed)."""
        self._put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            self.port.call(self._upload)
        except Exception as exc:  # the push after the run retries these packs and reports why
            log.info("streamed upload stopped: %s", exc)
            self.failure = exc
        finally:
            self._gone.set()

    async def _upload(self, mesh: Mesh) -> None:
        import trio
        store = self.node.repo.store

        async def next_pack() -> bytes | None:
            # Polled: a cancelled wait leaves no thread behind blocked on the queue.
            while True:
                try:
                    return self.queue.get_nowait()
                except queue.Empty:
                    await trio.sleep(0.02)

        async def placed(res: Any) -> None:
            self.progress.done += 1
            if res.placed >= res.n and res.pack in self._data:
                await trio.to_thread.run_sync(self._drop, res.pack)
        await mesh.upload_stream(store.get, next_pack, self.k, self.n, self.cands, self.report, placed,
                                 in_flight=STREAM_IN_FLIGHT)

    def _drop(self, pack: bytes) -> None:
        # Only now, with n acknowledgements recorded, does the local copy go.
        self.node.ledger.set_local(pack, False)
        self.node.repo.store.delete(pack)
        self.dropped += 1


def _start_stream(node: LocalNode, call: c.BackupCall, ctx: Context) -> _Stream | None:
    """On a mesh node with a peer that answers, the upload task the engine feeds."""
    if not node.has_holders():
        return None
    port = ctx.mesh()
    if port is None:
        return None  # _push says why
    from corestate.node.core.coding import choose_code
    cands, offline = port.call(lambda mesh: mesh.candidates())
    if not cands:
        return None  # nothing can be placed: _push reports it
    k, n = choose_code(len(cands), call.k, call.n, node.cfg.k, node.cfg.n)
    return _Stream(node, port, cands, offline, k, n)


def _merged(stream: _Stream, rest: PushResult) -> PushResult:
    """One result for a streamed backup: the packs placed while the engine ran, then
    those the push after it placed or topped up (a pack's last attempt counts)."""
    from corestate.node.runtime.reports import UploadReport
    final = {pr.pack: pr for pr in stream.report.packs}
    later = rest.report.packs if rest.report is not None else []
    final.update({pr.pack: pr for pr in later})
    report = UploadReport(packs=list(final.values()))
    report.share_bytes = stream.report.share_bytes + (rest.report.share_bytes if rest.report else 0)
    report.put_latencies = stream.report.put_latencies + (rest.report.put_latencies if rest.report else [])
    first = stream.report.first_put
    if first is None:
        report.seconds = rest.report.seconds if rest.report else 0.0
    else:
        last = time.monotonic() if later else (stream.report.last_ack or first)
        report.seconds = last - first
    res = PushResult(rest.k, rest.n, rest.online, rest.offline, report, uploaded=len(final),
                     dropped_local=stream.dropped + rest.dropped_local, problems=list(rest.problems))
    res.degraded = [(pr.pack, pr.placed, pr.k, pr.n) for pr in report.packs if pr.placed < pr.n]
    return res


def _record_placements(node: LocalNode, report: UploadReport) -> None:
    """After a failed run: the placements of the packs streamed so far, in the catalog
    (the next backup reuses their chunks)."""
    if not node.group.in_group or not report.packs:
        return
    from corestate.node.runtime.meshops import placement_items
    node.group.write(placement_items(node, [p.pack for p in report.packs]))


def _record(node: LocalNode, ctx: Context, result: BackupResult, pushed: PushResult | None) -> None:
    """In a group: the snapshot (sealed to this node) and where each new pack's shares
    went, in this node's partition of the catalog; then tell the members."""
    if not node.group.in_group:
        return
    from corestate.node.core.records import placement_key
    from corestate.node.runtime.meshops import catalog_items
    packs = [p.pack for p in pushed.report.packs] if pushed is not None and pushed.report else []
    # And packs placed by a run that never got here (killed while its packs streamed out):
    # the chunks in them are reused, so their placements must be in the catalog too.
    listed = node.group.catalog.entries(node.keys.peer_id)
    packs += [p for p, cp in node.ledger.all().items()
              if cp.shares and not cp.owner and placement_key(p) not in listed]
    node.group.write(catalog_items(node, result.snapshot_id, packs))
    kick: Callable[[], None] | None = getattr(ctx, "kick_members", None)
    if kick is not None:
        kick()  # the daemon's anti-entropy round, now
        return
    port = ctx.mesh()
    if port is not None:
        async def sync(mesh: Mesh) -> None:
            if mesh.groups is not None:
                await mesh.groups.sync_all()
        port.call(sync)


# -- the change journal ----------------------------------------------------------------------


def _journal_for(ctx: Context, paths: list[Path]) -> Any:
    """The daemon's change journal, when it watches exactly the paths being backed up."""
    journal = getattr(ctx, "journal", None)
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


def _scan_totals(paths: list[Path], stats: BackupStats, stop: threading.Event) -> None:
    """Count files and bytes ahead of the backup, for the ETA (a person watches)."""
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


# -- shared with restore ---------------------------------------------------------------------


@contextmanager
def ticking(ctx: Context, make: Callable[[], c.Message]) -> Iterator[None]:
    """A progress event when the block starts, every second while it runs, and when it
    ends (not when it fails: a failed event follows), so every phase is seen to move."""
    ctx.emit(make())
    with every(1.0, lambda: ctx.emit(make())):
        yield
    ctx.emit(make())


def eta(done: int, total: int, seconds: float) -> int:
    """Seconds left at the rate so far; -1 while that says nothing."""
    if total <= done or done <= 0 or seconds <= 0.5:
        return -1
    return int((total - done) / (done / seconds))


def text(x: bytes | str | Path, limit: int = 1000) -> str:
    """Any path as wire text: valid UTF-8 (undecodable bytes replaced), at most ``limit``
    characters (4 KiB)."""
    b = x if isinstance(x, bytes) else os.fsencode(x)
    return b.decode("utf-8", "replace")[:limit]


def absolute(paths: tuple[bytes, ...]) -> None:
    """Paths of a call are absolute: whoever runs the operation has a working folder of
    its own (the daemon's is not the client's)."""
    for p in paths:
        if not os.path.isabs(p):
            raise CoreStateError(f"{os.fsdecode(p)}: a path in a call must be absolute",
                                 hint="the client makes paths absolute against its own working folder")


def clip(s: str, limit: int = 4096) -> str:
    """``s`` as wire text of at most ``limit`` UTF-8 bytes (a file name decoded with
    surrogate escapes has its undecodable bytes replaced)."""
    return s.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


OPERATIONS: tuple[Operation, ...] = (Operation(c.BackupCall, backup, page=c.BackupPage),)


__all__ = ["OPERATIONS", "PushResult", "absolute", "backup", "clip", "eta", "push", "text", "ticking"]
