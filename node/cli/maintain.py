"""Keeping the data safe and the store lean: ``repair``, ``forget``, ``prune``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from corestate.node.cli.context import _group_round, _open, _port
from corestate.node.cli.output import EXIT_FAIL, EXIT_INCOMPLETE, EXIT_OK, Out, _human, _ticker
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError


def cmd_repair(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    if out.emit is None or args.dry_run:
        return _repair(args, out)
    out.emit(c.RepairStarted(time_ns=time.time_ns(), scheduled=out.scheduled))
    code = EXIT_FAIL
    try:
        code = _repair(args, out)
    finally:
        out.emit(c.RepairFinished(time_ns=time.time_ns(), scheduled=out.scheduled, code=code))
    return code


def _repair(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime import meshops
    from corestate.node.runtime.reports import Progress
    with _open(args, out) as node:
        port = _port(args)
        if port is None or not (node.ledger.all() or node.ledger.doomed()):
            out.say("nothing to repair: no pack of this node is on the mesh")
            if out.json:
                out.obj({"type": "summary", "packs_full": 0, "rebuilt": [], "unrepairable": [],
                         "failed": [], "complete": True, "dry_run": args.dry_run})
            return EXIT_OK
        progress = Progress()
        with _ticker(out, lambda: {"packs_done": progress.done, "packs": progress.total},
                     lambda: ("repair", progress.done, progress.total or None, "packs")):
            res = meshops.repair(node, port, dry_run=args.dry_run, progress=progress)
        changed = [p for p, placed in res.placed.items() if placed] + (
            [] if args.dry_run else [r.pack for r in res.plan.rebuilds if not r.indexes])
        if changed and node.group.in_group:
            # Where the shares are now, for the members (the owner's partition).
            node.group.write(meshops.placement_items(node, changed))
            _group_round(args, node)
    plan = res.plan
    rebuilt = [{"pack": r.pack.hex(), "source": r.source, "shares": list(r.indexes),
                "placed": {str(i): peer for i, peer in res.placed.get(r.pack, {}).items()},
                "forgotten": [[i, peer] for i, peer in r.forget], "reasons": list(r.reasons)}
               for r in plan.rebuilds]
    code = EXIT_OK if res.complete or args.dry_run else EXIT_INCOMPLETE
    if out.json:
        out.obj({"type": "summary", "packs_full": plan.full, "rebuilt": rebuilt,
                 "unrepairable": [{"pack": u.pack.hex(), "good": u.good, "k": u.k, "reason": u.reason}
                                  for u in plan.unrepairable],
                 "failed": res.failed, "forgotten": res.forgotten, "complete": res.complete,
                 "pruned_shares_deleted": res.deletes_done, "pruned_shares_left": res.deletes_left,
                 "dry_run": args.dry_run, "seconds": round(res.seconds, 3)})
        return code
    from corestate.node.runtime.meshops import short
    verb = "would rebuild" if args.dry_run else "rebuilt"
    for r in plan.rebuilds:
        placed = res.placed.get(r.pack, {})
        if r.indexes:
            where = ", ".join(f"{i}->{short(p)}" for i, p in sorted(placed.items())) or "nothing placed"
            out.say(f"pack {r.pack.hex()[:12]}: {verb} share(s) {list(r.indexes)} from the {r.source} copy"
                    + ("" if args.dry_run else f" ({where})"))
        for why in r.reasons:
            out.say(f"    {why}")
    for u in plan.unrepairable:
        out.say(f"pack {u.pack.hex()[:12]}: CANNOT repair now: {u.reason}")
    for f in res.failed:
        out.warn(f)
    if res.deletes_done or res.deletes_left:
        out.say(f"{res.deletes_done} share(s) of pruned packs deleted on their holders"
                + (f"; {res.deletes_left} still wait for holders out of reach" if res.deletes_left else ""))
    todo = [r for r in plan.rebuilds if r.indexes]
    out.say(f"{plan.full} pack(s) full, {len(todo)} {'to repair' if args.dry_run else 'repaired'}, "
            f"{len(plan.unrepairable)} not repairable now" + ("" if args.dry_run else f" ({res.seconds:.1f}s)"))
    if not args.dry_run and not res.complete:
        out.say("some packs are still below full redundancy: "
                "bring holders back online or add trusted peers (`corestate peer add`), then repair again")
    return code


def cmd_forget(args: argparse.Namespace, out: Out) -> int:
    from datetime import datetime

    from corestate.node.core.retention import Policy, PolicyError, Snap, apply_policy
    from corestate.node.engine import prune as prunemod
    from corestate.node.home import parse_duration
    policy = Policy(last=args.keep_last, hourly=args.keep_hourly, daily=args.keep_daily,
                    weekly=args.keep_weekly, monthly=args.keep_monthly, yearly=args.keep_yearly,
                    within_s=parse_duration(args.keep_within) if args.keep_within else 0.0)
    if args.snapshots and not policy.empty():
        raise CoreStateError("give snapshots to forget or a keep-policy, not both")
    if not args.snapshots and policy.empty():
        raise CoreStateError("nothing says what to forget",
                             hint="name snapshots (`corestate forget 3f2a`), or give a policy such as "
                                  "`--keep-daily 7 --keep-weekly 4 --keep-monthly 12`")
    with _open(args, out) as node:
        snaps = node.repo.snapshots()
        reasons: dict[bytes, tuple[str, ...]] = {}
        if args.snapshots:
            gone = {node.repo.resolve(ref).id for ref in args.snapshots}
        else:
            try:
                verdicts = apply_policy([
                    Snap(s.id, datetime.fromtimestamp(s.record.time_ns / 1e9).astimezone(),
                         tuple(sorted(s.record.paths))) for s in snaps], policy)
            except PolicyError as exc:
                raise CoreStateError(str(exc))
            gone = {v.id for v in verdicts if not v.keep}
            reasons = {v.id: v.reasons for v in verdicts}
        plan = prunemod.plan(node.repo, gone, prune=args.prune, movable=_movable(node))
        deleted = _delete_packs(args, node, plan, gone) if not args.dry_run else None
    return _say_prune(args, out, snaps, gone, reasons, plan, deleted)


def cmd_prune(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine import prune as prunemod
    with _open(args, out) as node:
        snaps = node.repo.snapshots()
        plan = prunemod.plan(node.repo, (), prune=True, movable=_movable(node))
        deleted = _delete_packs(args, node, plan, set()) if not args.dry_run else None
    return _say_prune(args, out, snaps, set(), {}, plan, deleted)


def _movable(node: LocalNode) -> Callable[[bytes], bool]:
    """Packs prune may repack: those that never left this machine."""
    store = node.repo.store
    has_local = getattr(store, "has_local", None)
    return lambda pid: node.ledger.get(pid) is None and (has_local is None or bool(has_local(pid)))


def _delete_packs(args: argparse.Namespace, node: LocalNode, plan: Any,
                  gone: set[bytes]) -> tuple[int, list[str]]:
    """Carry out a prune plan: repack first (the needed blobs durable in new packs), then
    delete packs everywhere: ledger, local store and index first (so nothing can point
    at them), then the shares on their holders (a holder out of reach keeps its copy)."""
    from corestate.node.engine import prune as prunemod
    if plan.repack:
        prunemod.repack(node.repo, plan.repack, plan.keep, pack_size=node.cfg.pack_size,
                        compression_level=node.cfg.compression_level)
    packs = plan.delete + plan.repack
    rows: list[tuple[bytes, int, str]] = []
    for pid in packs:
        c = node.ledger.get(pid)
        if c is not None:
            rows.extend((pid, r.index, r.peer) for r in c.shares)
    node.ledger.drop_packs(packs)
    prunemod.apply(node.repo, packs)
    result: tuple[int, list[str]] = (0, [])
    port = _port(args)
    if port is not None and (rows or node.ledger.doomed()):
        from corestate.node.runtime import meshops
        result = meshops.delete_shares(node, port, rows)
    elif rows:
        node.ledger.doom(rows)  # no way to the holders now: a later prune or repair asks them
    if node.group.in_group and (packs or gone):
        from corestate.node.core import catalog as cat
        from corestate.node.runtime import meshops
        own = node.group.own_entries()
        tomb: dict[bytes, bytes | None] = {}
        for key in [cat.snapshot_key(s) for s in gone] + [meshops.PACK_KEY + p for p in packs]:
            if own.get(key) is not None:
                tomb[key] = None
        node.group.write(tomb)
        _group_round(args, node)
    return result


def _say_prune(args: argparse.Namespace, out: Out, snaps: list[Any], gone: set[bytes],
               reasons: dict[bytes, tuple[str, ...]], plan: Any, deleted: tuple[int, list[str]] | None) -> int:
    dry = args.dry_run
    if out.json:
        out.obj({"type": "summary", "dry_run": dry,
                 "snapshots": [{"id": s.id.hex(), "keep": s.id not in gone, "reasons": list(reasons.get(s.id, ()))}
                               for s in snaps],
                 "forgotten": len(gone), "packs_deleted": len(plan.delete), "packs_repacked": len(plan.repack),
                 "bytes_freed": plan.delete_bytes + plan.repack_bytes,
                 "packs_kept": plan.kept, "packs_partly_used": plan.partly_used,
                 "unused_bytes_in_kept_packs": plan.unused_in_kept,
                 "shares_deleted": deleted[0] if deleted else 0,
                 "share_problems": deleted[1] if deleted else []})
        return EXIT_OK if not deleted or not deleted[1] else EXIT_INCOMPLETE
    for s in snaps:
        if reasons or s.id in gone:
            why = ", ".join(reasons.get(s.id, ())) or ("no rule keeps it" if reasons else "named")
            verb = "forget" if s.id in gone else "keep  "
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.record.time_ns / 1e9))
            out.say(f"{verb} {s.short_id}  {stamp}  {why}")
    would = "would " if dry else ""
    forgot = "" if args.command == "prune" else f"{would}forget {len(gone)} snapshot(s); "
    out.say(f"{forgot}{would}delete {len(plan.delete)} pack(s) and {would}repack {len(plan.repack)}, "
            f"freeing {_human(plan.delete_bytes + plan.repack_bytes)}")
    if plan.partly_used:
        out.say(f"  {plan.partly_used} pack(s) stay for the blobs still in use "
                f"({_human(plan.unused_in_kept)} in them is no longer needed: below the repack threshold, "
                "or on the mesh, where repacking is not done)")
    if deleted is not None and deleted[0]:
        out.say(f"  {deleted[0]} share(s) deleted on their holders")
    for prob in (deleted[1] if deleted else [])[:20]:
        out.warn(f"not deleted on its holder (it keeps the copy for now): {prob}")
    return EXIT_OK if not deleted or not deleted[1] else EXIT_INCOMPLETE
