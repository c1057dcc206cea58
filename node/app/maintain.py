"""``check``, ``repair``, ``forget`` and ``prune``: is the data sound, make it full again,
keep only what the rules keep (typed operations: node/app/__init__.py).

``check`` verifies the local store (and, with ``rebuild_index``, first rebuilds the index
from the pack headers), then — on a mesh node — surveys the holders of every share and
classifies each snapshot's packs as full, degraded, at risk or local only. ``repair``
surveys, asks ``node.core.repair`` what to rebuild, carries the plan out through the mesh
port and records what it placed (in the ledger, and in the group's catalog). ``forget``
applies names or keep-rules (node/core/retention.py) and, like ``prune``, deletes the
packs no remaining snapshot needs: locally, on their holders, and in the catalog.

Each answers in pages of typed records (protocol/control.py), the summary last. ``check``
and ``repair`` report progress as typed events (at most four a second, and always the
first and the last) and finish with ``check.finished`` / ``repair.started`` + ``repair.finished`` (a scheduled
forget, the daemon's retention job, with ``retention.finished``).

Invariants:

- the mesh is reached only through ``ctx.mesh()``; the few helpers that run trio tasks
  (fetching packs, deleting shares) stay in node/runtime/meshops.py and are imported
  lazily, inside the functions that need them;
- a pack is deleted from the ledger, the store and the index before its shares are
  deleted on the holders (a holder out of reach keeps its copy until a later prune or
  repair asks again: the ledger remembers);
- a repair forgets a holder's ledger row only once the pack is safe without it, so a
  failed repair never makes the ledger say less than it knew.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corestate.node.app import Context, Operation
from corestate.node.core.redundancy import classify
from corestate.node.core.repair import Verdict
from corestate.node.errors import SnapshotProtected
from corestate.node.local import LocalNode
from corestate.protocol import control as c
from corestate.protocol.messages import Message

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.runtime.mesh import Mesh

EXIT_OK, EXIT_FAIL, EXIT_INCOMPLETE = 0, 1, 3
FILES_PER_RECORD = 4096
FILE_BYTES_PER_RECORD = 256 << 10  # a record stays far below a control frame


class Ticks:
    """Progress events for ``ctx``: the first, the last, and between them one every
    ``every`` seconds at most (a check of 100k packs must not send 100k events)."""

    def __init__(self, ctx: Context, make: Callable[[int, int], Message], every: float = 0.25) -> None:
        self.ctx, self.make, self.every = ctx, make, every
        self.last = -math.inf

    def __call__(self, done: int, total: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            self.ctx.emit(self.make(done, total))


# -- check -----------------------------------------------------------------------------------


def check(node: LocalNode, call: c.CheckCall, ctx: Context) -> Iterator[c.CheckItem]:
    from corestate.node.engine.inspect import check as check_store
    items: list[c.CheckItem] = []
    index_packs: int | None = None
    if call.rebuild_index:
        index_packs = _rebuild_index(node, ctx, items)
    tick = Ticks(ctx, lambda d, t: c.CheckProgress(time_ns=time.time_ns(), packs_done=d, packs=t))
    def progress(n: int, t: int) -> None:
        ctx.check()  # between packs: a check only reads, it may stop anywhere
        tick(n, t, final=n == t)
    report = check_store(node.repo, read_data=call.read_data, progress=progress,
                         remote=node.ledger.remote_only())
    port = ctx.mesh()
    healed: list[bytes] = []
    damaged = {d.id for d in report.damage if d.what == "pack"}
    if damaged and port is not None:
        # A damaged local copy of a pack whose shares are on peers is rebuilt from them
        # (written over it in place), and the store checked again: bit rot in a copy the
        # mesh also holds is repaired, not only reported (found by the chaos campaign).
        from corestate.node.runtime import meshops
        healed = meshops.heal_local(node, port, meshops.damaged_local(node, damaged))
        if healed:
            report = check_store(node.repo, read_data=call.read_data, progress=progress,
                                 remote=node.ledger.remote_only())
    surveyed = port is not None and bool(node.has_holders() or node.ledger.remote_only())
    health: list[c.SnapshotHealth] = []
    shares: dict[str, int] = {}
    if surveyed:
        health, bad, shares = survey(node, port)
        items += bad
    mesh_bad = any(h.at_risk or h.degraded for h in health)
    code = EXIT_FAIL if not report.ok else EXIT_INCOMPLETE if mesh_bad else EXIT_OK
    for d in report.damage:
        items += _damage(d.what, d.id, d.reason, d.files)
    items += health
    items.append(c.CheckSummary(
        code=code, packs=report.packs, blobs=report.blobs, snapshots=report.snapshots, trees=report.trees,
        bytes_read=report.bytes_read, remote=report.remote, index_packs=index_packs, surveyed=surveyed,
        shares=shares, healed=tuple(healed)))
    ctx.emit(c.CheckFinished(time_ns=time.time_ns(), code=code))
    return iter(items)


def _rebuild_index(node: LocalNode, ctx: Context, items: list[c.CheckItem]) -> int:
    """Rebuild the index from the pack headers; the packs held only by peers are fetched
    for the time it takes (their headers are the index too). Returns the packs indexed."""
    fetched: list[bytes] = []
    remote = node.ledger.remote_only()
    if remote:
        from corestate.node.runtime import meshops  # lazy: fetching runs trio tasks
        port = ctx.mesh()
        if port is None:
            raise CoreStateError("some packs are held only by peers, and no way to reach them is open",
                                 hint="report this as a bug")
        fetched = meshops.fetch(node, port, remote)
    try:
        problems = node.repo.rebuild_index()
    finally:
        if fetched:
            from corestate.node.runtime import meshops
            meshops.drop_fetched(node, [p for p in fetched if p not in node.metadata_packs()])
    items += [c.IndexProblem(pack=pid, problem=reason[:4000]) for pid, reason in problems]
    return len(node.repo.packs())


def _damage(what: str, oid: bytes, reason: str, files: list[str]) -> Iterator[c.Damage]:
    """One damage as records: its files in slices a record holds."""
    paths = [os.fsencode(f) for f in files]
    start, first = 0, True
    while first or start < len(paths):
        end, size = start, 0
        while end < len(paths) and end - start < FILES_PER_RECORD and (
                end == start or size + len(paths[end]) <= FILE_BYTES_PER_RECORD):
            size += len(paths[end])
            end += 1
        yield c.Damage(what=what[:16], id=oid, reason=reason[:4000], files=tuple(paths[start:end]),
                       continued=not first)
        start, first = end, False


@dataclass(slots=True)
class Survey:
    """What the holders answered: each snapshot's packs by redundancy, the holders that lost
    or spoiled a share, the shares by verdict, and each pack's redundancy."""

    health: list[c.SnapshotHealth]
    bad: list[c.BadShare]
    shares: dict[str, int]
    per_pack: dict[bytes, str]

    def __iter__(self) -> Iterator[Any]:  # health, bad, shares = survey(...)
        return iter((self.health, self.bad, self.shares))


def survey(node: LocalNode, port: Any, *, audit: bool = True) -> Survey:
    """Ask the holders for every share of this node's coded packs (see :class:`Survey`)."""
    from corestate.node.runtime.meshops import packs_of  # lazy: the runtime's tree walk
    coded = node.ledger.all()
    verdicts = port.call(lambda mesh: mesh.survey(list(coded), audit=audit))
    store = node.repo.store
    per_pack: dict[bytes, str] = {}
    bad: list[c.BadShare] = []
    counts: dict[str, int] = {}
    for pid, cp in coded.items():
        v = verdicts.get(pid, {})
        ok = sum(1 for x in v.values() if x is Verdict.OK)
        for row in cp.shares:
            x = v.get(row.index, Verdict.UNREACHABLE)
            counts[x.value] = counts.get(x.value, 0) + 1
            if x in (Verdict.CORRUPT, Verdict.MISSING):
                bad.append(c.BadShare(peer=row.peer, share=f"share {row.index} of pack {pid.hex()[:12]} {x.value}"))
        per_pack[pid] = classify(ok, cp.k, cp.n, local=ok < cp.k and store.has_local(pid)).value
    for pid in store.local_ids():
        per_pack.setdefault(pid, "local-only")
    health = []
    for snap in node.repo.snapshots():
        tally = {"full": 0, "degraded": 0, "at-risk": 0, "local-only": 0}
        for p in packs_of(node, snap):
            tally[per_pack.get(p, "local-only")] += 1
        health.append(c.SnapshotHealth(snapshot_id=snap.id.hex(), short_id=snap.short_id, full=tally["full"],
                                       degraded=tally["degraded"], at_risk=tally["at-risk"],
                                       local_only=tally["local-only"]))
    return Survey(health, bad, counts, per_pack)


# -- repair ----------------------------------------------------------------------------------


def repair(node: LocalNode, call: c.RepairCall, ctx: Context) -> Iterator[c.RepairItem]:
    """Make every degraded pack of this node full again (the decisions: node/core/repair.py)."""
    if call.dry_run:
        return iter(_repair(node, call, ctx))
    ctx.emit(c.RepairStarted(time_ns=time.time_ns(), scheduled=ctx.scheduled))
    code = EXIT_FAIL
    try:
        items = _repair(node, call, ctx)
        summary = items[-1]
        assert isinstance(summary, c.RepairSummary)
        code = summary.code
    finally:
        from corestate.node.app.health import set_running
        set_running(node, False)  # also when it failed half way (health says what runs)
        ctx.emit(c.RepairFinished(time_ns=time.time_ns(), scheduled=ctx.scheduled, code=code))
    return iter(items)


def _repair(node: LocalNode, call: c.RepairCall, ctx: Context) -> list[c.RepairItem]:
    from corestate.node.core.repair import PackHealth, ShareState, plan_repair
    t0 = time.monotonic()
    port = ctx.mesh()
    if port is None or not (node.ledger.all() or node.ledger.doomed()):
        return [c.RepairSummary(code=EXIT_OK, on_mesh=False, dry_run=call.dry_run, packs_full=0, complete=True,
                                forgotten=0, shares_deleted=0, shares_left=0, seconds="0.000")]
    tick = Ticks(ctx, lambda d, t: c.RepairProgress(time_ns=time.time_ns(), packs_done=d, packs=t))
    tick(0, 0)
    from corestate.node.app import health as hmod
    from corestate.node.core import holders as hb
    coded = node.ledger.all()
    rows: dict[tuple[bytes, int, str], Verdict] = {}
    port.call(lambda mesh: mesh.survey(list(coded), audit=True, per_holder=rows))
    # What the survey saw moves the holders' standing (node/core/holders.py); a holder
    # evicted or lost counts for nothing: its shares are rebuilt elsewhere.
    book = hmod.load_book(node)
    hmod.learn(node, book, ctx, _holder_events(rows), hmod.wall_time())
    node.ledger.mark([k for k, v in rows.items() if v in (Verdict.MISSING, Verdict.CORRUPT)],
                     [k for k, v in rows.items() if v is Verdict.OK])
    states = book.states()
    gone = {p for p, st in states.items() if st in (hb.HolderState.EVICTED, hb.HolderState.LOST)}

    def verdict(pid: bytes, index: int, peer: str) -> Verdict:
        v = rows.get((pid, index, peer), Verdict.UNREACHABLE)
        return Verdict.MISSING if peer in gone else v
    store = node.repo.store
    plan = plan_repair(
        PackHealth(pid, cp.k, cp.n, tuple(ShareState(r.index, r.peer, verdict(pid, r.index, r.peer))
                                          for r in cp.shares), store.has_local(pid))
        for pid, cp in coded.items())
    placed: dict[bytes, dict[int, str]] = {}
    failed: list[str] = []
    forgotten = deletes_done = deletes_left = 0
    if not call.dry_run:
        from corestate.node.runtime.mesh import RateLimiter  # lazy: a trio object
        rate = RateLimiter(node.cfg.health.repair_bandwidth)
        t_move = time.monotonic()
        hmod.set_running(node, True)
        cands, _ = port.call(lambda mesh: mesh.candidates())
        cands = [cd for cd in cands if cd.peer not in gone]  # evicted or lost: no new shares
        work = [r for r in plan.rebuilds if r.indexes]
        tick(0, len(work))
        done = 0
        for r in work:
            if ctx.cancelled():
                break  # between packs: what was placed is recorded below, then Cancelled
            try:
                data = store.get(r.pack) if r.source == "local" else port.call(
                    lambda mesh, pack=r.pack: mesh.fetch(pack, rate=rate))

                async def put(mesh: Mesh, r: Any = r, data: bytes = data) -> dict[int, str]:
                    return await mesh.rebuild(r.pack, data, r.k, r.n, r.indexes, r.holders, cands, rate=rate)
                placed[r.pack] = port.call(put)
            except CoreStateError as exc:
                failed.append(f"pack {r.pack.hex()[:12]}: {exc}")
                continue
            failed += [f"pack {r.pack.hex()[:12]}: no peer took share {i} "
                       "(too few trusted peers online, or all refused)"
                       for i in r.indexes if i not in placed[r.pack]]
            done += 1
            tick(done, len(work))
        tick(done, len(work), final=True)
        # Rows of holders that lost or spoiled a share go only once the pack is safe
        # without them (its rebuilds placed), so a failed repair never makes the ledger
        # say less.
        for r in plan.rebuilds:
            got = placed.get(r.pack, {})
            if set(r.indexes) <= set(got):
                for index, peer in r.forget:
                    if got.get(index) == peer:
                        continue  # the holder that lost the share took the rebuilt one
                    node.ledger.forget(r.pack, index, peer)
                    if peer in gone or rows.get((r.pack, index, peer)) is Verdict.CORRUPT:
                        # Its copy may still be there (a lost holder that comes back, a
                        # spoiled copy): surplus now, deleted (signed) when it answers.
                        node.ledger.doom([(r.pack, index, peer)])
                    forgotten += 1
        hmod.note_repair(node, rate.bytes, time.monotonic() - t_move)
        # Shares of pruned packs whose holders were out of reach then: ask again.
        if node.ledger.doomed() and not ctx.cancelled():
            from corestate.node.runtime import meshops  # lazy: deleting runs trio tasks
            deletes_done, _ = meshops.delete_shares(node, port, skip=hmod.shunned(node) - _evicted(states))
            deletes_left = len(node.ledger.doomed())
        changed = [p for p, got in placed.items() if got] + [r.pack for r in plan.rebuilds if not r.indexes]
        if changed and node.group.in_group:
            from corestate.node.runtime import meshops
            # Where the shares are now, for the members (the owner's partition).
            node.group.write(meshops.placement_items(node, changed))
            tell_members(node, ctx)
        hmod.refresh_levels(node, ctx, hmod.load_book(node).states())
        ctx.check()
    complete = not failed and not plan.unrepairable and all(
        set(r.indexes) <= set(placed.get(r.pack, {})) for r in plan.rebuilds)
    items: list[c.RepairItem] = [
        c.Rebuilt(pack=r.pack, source=r.source, shares=tuple(r.indexes),
                  placed=tuple(sorted(placed.get(r.pack, {}).items())), forgotten=tuple(r.forget),
                  reasons=tuple(x[:4000] for x in r.reasons))
        for r in plan.rebuilds]
    items += [c.Unrepairable(pack=u.pack, good=u.good, k=u.k, reason=u.reason[:4000]) for u in plan.unrepairable]
    items += [c.RepairFailure(failed=f[:4000]) for f in failed]
    items.append(c.RepairSummary(
        code=EXIT_OK if complete or call.dry_run else EXIT_INCOMPLETE, on_mesh=True, dry_run=call.dry_run,
        packs_full=plan.full, complete=complete, forgotten=forgotten, shares_deleted=deletes_done,
        shares_left=deletes_left, seconds=f"{time.monotonic() - t0:.3f}"))
    return items


def _holder_events(rows: Mapping[tuple[bytes, int, str], Verdict]) -> list[Any]:
    """A survey's verdicts as holder-book events: for each holder that answered, one audit
    (node/app/health.py ``per_holder``), the others unanswered."""
    from corestate.node.app.health import per_holder
    from corestate.node.core import holders as hb
    found: list[tuple[str, bool, str]] = []
    silent: set[str] = set()
    for (pack, index, peer), v in sorted(rows.items()):
        if v is Verdict.UNREACHABLE:
            silent.add(peer)
            continue
        what = f"share {index} of {pack.hex()[:12]}"
        found.append((peer, v is Verdict.OK, what if v is Verdict.OK else f"{what}: {v.value}"))
    events: list[Any] = per_holder(found)
    answered = {peer for peer, _, _ in found}
    events += [hb.Unanswered(p) for p in sorted(silent - answered)]
    return events


def _evicted(states: Mapping[str, Any]) -> set[str]:
    from corestate.node.core import holders as hb
    return {p for p, st in states.items() if st is hb.HolderState.EVICTED}


def tell_members(node: LocalNode, ctx: Context) -> None:
    """Tell the other members of the group now (anti-entropy would, within a minute): in a
    daemon, a kick to its sync loop; in a command run without one, a round here."""
    port = ctx.mesh()
    if port is None or not node.group.in_group:
        return
    from corestate.node.runtime.port import TransientMeshPort  # lazy: which kind of port

    async def kick(mesh: Mesh) -> None:
        if mesh.groups is not None:
            mesh.groups.kick()

    async def sync(mesh: Mesh) -> None:
        if mesh.groups is not None:
            await mesh.groups.sync_all()
    port.call(sync if isinstance(port, TransientMeshPort) else kick)


# -- forget and prune ------------------------------------------------------------------------


def forget(node: LocalNode, call: c.ForgetCall, ctx: Context) -> Iterator[c.PruneItem]:
    """Forget the named snapshots, or those no keep-rule keeps; with ``prune``, then delete
    every pack no remaining snapshot needs. Run by the daemon's schedule, it is the
    retention job, and says so (``retention.finished``)."""
    if not ctx.scheduled:
        return iter(_forget(node, call, ctx))
    code = EXIT_FAIL
    try:
        items = _forget(node, call, ctx)
        summary = items[-1]
        assert isinstance(summary, c.PruneSummary)
        code = summary.code
    finally:
        ctx.emit(c.RetentionFinished(time_ns=time.time_ns(), scheduled=True, code=code))
    return iter(items)


def _forget(node: LocalNode, call: c.ForgetCall, ctx: Context) -> list[c.PruneItem]:
    from datetime import datetime

    from corestate.node.core.retention import Policy, PolicyError, Snap, apply_policy
    from corestate.node.engine import prune as prunemod
    from corestate.node.home import parse_duration
    try:
        within = parse_duration(call.keep_within) if call.keep_within else 0.0
    except ValueError:
        raise CoreStateError(f"--keep-within {call.keep_within!r} is not a duration",
                             hint="give seconds or a number with s, m, h or d, e.g. `--keep-within 2d`") from None
    policy = Policy(last=call.keep_last, hourly=call.keep_hourly, daily=call.keep_daily,
                    weekly=call.keep_weekly, monthly=call.keep_monthly, yearly=call.keep_yearly,
                    within_s=within)
    if call.snapshots and not policy.empty():
        raise CoreStateError("give snapshots to forget or a keep-policy, not both")
    if not call.snapshots and policy.empty():
        raise CoreStateError("nothing says what to forget",
                             hint="name snapshots (`corestate forget 3f2a`), or give a policy such as "
                                  "`--keep-daily 7 --keep-weekly 4 --keep-monthly 12`")
    snaps = node.repo.snapshots()
    reasons: dict[bytes, tuple[str, ...]] = {}
    # Anomaly alerts that stand protect a snapshot each; on the schedule, their series
    # are left alone altogether (node/anomalystate.py).
    protected, paused = _anomaly_guard(node, ctx)
    if call.snapshots:
        gone = {node.repo.resolve(ref).id for ref in call.snapshots}
        for sid in sorted(gone):
            if sid.hex() in protected:
                raise SnapshotProtected(sid.hex(), protected[sid.hex()])
    else:
        judged = [s for s in snaps if not (ctx.scheduled and tuple(sorted(s.record.paths)) in paused)]
        try:
            verdicts = apply_policy([
                Snap(s.id, datetime.fromtimestamp(s.record.time_ns / 1e9).astimezone(),
                     tuple(sorted(s.record.paths))) for s in judged], policy) if judged else []
        except PolicyError as exc:
            raise CoreStateError(str(exc)) from None
        gone = {v.id for v in verdicts if not v.keep and v.id.hex() not in protected}
        reasons = {v.id: v.reasons for v in verdicts}
        for s in snaps:
            extra: tuple[str, ...] = ()
            if s.id.hex() in protected:
                extra = (f"protected by the anomaly alert on {protected[s.id.hex()][:8]} "
                         "(`corestate anomaly ack` lifts it)",)
            elif s not in judged:
                extra = ("retention paused for this series: an anomaly alert stands",)
            if extra:
                reasons[s.id] = reasons.get(s.id, ()) + extra
    plan = prunemod.plan(node.repo, gone, prune=call.prune, movable=_movable(node))
    deleted = _delete_packs(node, ctx, plan, gone) if not call.dry_run else None
    return _prune_items(snaps, gone, reasons, plan, deleted, dry_run=call.dry_run,
                        by_policy=not call.snapshots)


def prune(node: LocalNode, call: c.PruneCall, ctx: Context) -> Iterator[c.PruneItem]:
    """Delete the packs no snapshot needs (left by forget, or by an interrupted backup)."""
    from corestate.node.engine import prune as prunemod
    snaps = node.repo.snapshots()
    plan = prunemod.plan(node.repo, (), prune=True, movable=_movable(node))
    deleted = _delete_packs(node, ctx, plan, set()) if not call.dry_run else None
    return iter(_prune_items(snaps, set(), {}, plan, deleted, dry_run=call.dry_run, by_policy=False))


def _anomaly_guard(node: LocalNode, ctx: Context) -> tuple[dict[str, str], set[tuple[bytes, ...]]]:
    """Protected snapshot (hex) -> the alert's snapshot (hex); the paused series."""
    from corestate.node import anomalystate
    state, problem = anomalystate.load(node.home.path)
    if problem:
        ctx.warn(problem)
    return {k: f.snapshot for k, f in state.protected().items()}, state.paused_series()


def retention_call(rules: Mapping[str, str]) -> c.ForgetCall:
    """The forget-and-prune that the ``[retention]`` rules of the config ask for (the
    config checked them: counts, and ``keep_within`` as seconds, e.g. "86400s")."""
    def count(key: str) -> int:
        return int(rules.get(key, "0"))
    return c.ForgetCall(snapshots=(), keep_last=count("keep_last"), keep_hourly=count("keep_hourly"),
                        keep_daily=count("keep_daily"), keep_weekly=count("keep_weekly"),
                        keep_monthly=count("keep_monthly"), keep_yearly=count("keep_yearly"),
                        keep_within=rules.get("keep_within", ""), prune=True, dry_run=False)


def _movable(node: LocalNode) -> Callable[[bytes], bool]:
    """Packs prune may repack: those that never left this machine."""
    store = node.repo.store
    has_local = getattr(store, "has_local", None)
    return lambda pid: node.ledger.get(pid) is None and (has_local is None or bool(has_local(pid)))


def _delete_packs(node: LocalNode, ctx: Context, plan: Any, gone: set[bytes]) -> tuple[int, list[str]]:
    """Carry out a prune plan: repack first (the needed blobs durable in new packs), then
    delete packs everywhere: ledger, local store and index first (so nothing can point
    at them), then the shares on their holders (a holder out of reach keeps its copy),
    and last the snapshot and placement records in this node's catalog partition
    (tombstones, so the members forget them too)."""
    from corestate.node.engine import prune as prunemod
    if plan.repack:
        prunemod.repack(node.repo, plan.repack, plan.keep, pack_size=node.cfg.pack_size,
                        compression_level=node.cfg.compression_level)
    packs = plan.delete + plan.repack
    rows: list[tuple[bytes, int, str]] = []
    for pid in packs:
        cp = node.ledger.get(pid)
        if cp is not None:
            rows.extend((pid, r.index, r.peer) for r in cp.shares)
    node.ledger.drop_packs(packs)
    prunemod.apply(node.repo, packs)
    result: tuple[int, list[str]] = (0, [])
    port = ctx.mesh()
    if port is not None and (rows or node.ledger.doomed()):
        from corestate.node.runtime import meshops  # lazy: deleting runs trio tasks
        result = meshops.delete_shares(node, port, rows)
    elif rows:
        node.ledger.doom(rows)  # no way to the holders now: a later prune or repair asks them
    if node.group.in_group and (packs or gone):
        from corestate.node.core import catalog as cat
        from corestate.node.core import records
        own = node.group.own_entries()
        tomb: dict[bytes, bytes | None] = {}
        for key in [cat.snapshot_key(s) for s in gone] + [records.placement_key(p) for p in packs]:
            if own.get(key) is not None:
                tomb[key] = None
        node.group.write(tomb)
        tell_members(node, ctx)
    return result


def _prune_items(snaps: list[Any], gone: set[bytes], reasons: dict[bytes, tuple[str, ...]], plan: Any,
                 deleted: tuple[int, list[str]] | None, *, dry_run: bool, by_policy: bool) -> list[c.PruneItem]:
    items: list[c.PruneItem] = [
        c.SnapshotVerdict(snapshot_id=s.id.hex(), short_id=s.short_id, time_ns=s.record.time_ns,
                          keep=s.id not in gone, reasons=tuple(x[:4000] for x in reasons.get(s.id, ())))
        for s in snaps]
    problems = deleted[1] if deleted else []
    items += [c.ShareNotDeleted(problem=p[:4000]) for p in problems]
    items.append(c.PruneSummary(
        code=EXIT_INCOMPLETE if problems else EXIT_OK, dry_run=dry_run, by_policy=by_policy, forgotten=len(gone),
        packs_deleted=len(plan.delete), packs_repacked=len(plan.repack),
        bytes_freed=plan.delete_bytes + plan.repack_bytes, packs_kept=plan.kept,
        packs_partly_used=plan.partly_used, unused_bytes_in_kept_packs=plan.unused_in_kept,
        shares_deleted=deleted[0] if deleted else 0))
    return items


OPERATIONS: tuple[Operation, ...] = (
    Operation(c.CheckCall, check, page=c.CheckPage),
    Operation(c.RepairCall, repair, page=c.RepairPage),
    Operation(c.ForgetCall, forget, page=c.PrunePage),
    Operation(c.PruneCall, prune, page=c.PrunePage),
)


__all__ = ["OPERATIONS", "Ticks", "check", "forget", "prune", "repair", "retention_call", "survey", "tell_members"]
