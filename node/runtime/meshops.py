"""What the commands do with the mesh: synchronous steps that call into it via a port.

- ``fetch``: bring back the remote-only packs a restore (or a full read) needs.
- ``survey``: ask holders for every share; classify each snapshot's packs as full,
  degraded or at risk.
- ``repair``: survey, then rebuild every share index without a good holder (from the local
  copy or from k good shares) onto new holders; forget holders that lost or spoiled a
  share (the decisions are ``node.core.repair``'s).

A node with no trusted peer is a standalone repository: nothing here runs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corestate.node.core import records
from corestate.node.core.redundancy import classify
from corestate.node.engine.repo import SnapshotInfo
from corestate.node.runtime.reports import Progress, short

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.port import MeshPort


def is_mesh_node(node: LocalNode) -> bool:
    return bool(node.trusted_peers())


def choose_code(online: int, k: int, n: int, cfg_k: int, cfg_n: int) -> tuple[int, int]:
    n = n or cfg_n or min(4, online)
    k = k or cfg_k or max(1, math.ceil(n / 2))
    if not 1 <= k <= n <= 255:
        raise CoreStateError(f"erasure code k={k} n={n} is not possible",
                             hint="use 1 <= k <= n <= 255, e.g. `--k 2 --n 4`")
    return k, n


def packs_of(node: LocalNode, snap: SnapshotInfo, includes: list[bytes] | None = None) -> set[bytes]:
    """The packs a snapshot (or the chosen paths of it) needs: chunks, trees, record."""
    locs = node.repo.locations()
    needed: set[bytes] = set()
    rec = locs.get(snap.id)
    if rec is not None:
        needed.add(rec.pack)

    def selected(path: bytes) -> bool:
        if not includes:
            return True
        return any(path == i or path.startswith(i + b"/") or i.startswith(path + b"/") for i in includes)
    stack = [(snap.record.tree, b"")]
    while stack:
        tid, prefix = stack.pop()
        t = locs.get(tid)
        if t is not None:
            needed.add(t.pack)
        for nd in node.repo.tree(tid):
            p = prefix + b"/" + nd.name
            if not selected(p):
                continue
            if nd.subtree is not None:
                stack.append((nd.subtree, p))
            for cid in nd.content:
                loc = locs.get(cid)
                if loc is not None:
                    needed.add(loc.pack)
    return needed


def fetch(node: LocalNode, port: MeshPort, packs: Iterable[bytes],
          progress: Callable[[int, int, int], None] | None = None, parallel: int = 3) -> list[bytes]:
    """Fetch remote-only ``packs`` into the local store (for the time a command needs
    them); returns what was fetched so the caller can drop it again."""
    store = node.repo.store
    remote = node.ledger.remote_only()
    want = sorted(p for p in packs if p in remote and not store.has_local(p))
    if not want:
        return []
    done: list[bytes] = []
    nbytes = [0]
    lock = threading.Lock()


    import trio

    async def run(mesh: Mesh) -> None:
        limit = trio.Semaphore(parallel)

        async def one(p: bytes) -> None:
            async with limit:
                data = await mesh.fetch(p)
                await trio.to_thread.run_sync(store.put, p, data)
                with lock:
                    done.append(p)
                    nbytes[0] += len(data)
                if progress is not None:
                    progress(len(done), len(want), nbytes[0])
        async with trio.open_nursery() as nursery:
            for p in want:
                nursery.start_soon(one, p)
    try:
        port.call(run)
    except BaseException:
        drop_fetched(node, done)
        raise
    return done


def drop_fetched(node: LocalNode, packs: Iterable[bytes]) -> None:
    remote = node.ledger.remote_only()
    for p in packs:
        if p in remote:
            node.repo.store.delete(p)


@dataclass(slots=True)
class Survey:
    per_pack: dict[bytes, str]  # "full", "degraded", "at-risk", "local-only", "local"
    per_snapshot: list[tuple[SnapshotInfo, dict[str, int]]]
    bad_holders: dict[str, list[str]]  # peer -> problems
    shares: dict[str, int]  # verdict -> count


def survey(node: LocalNode, port: MeshPort, *, audit: bool = True) -> Survey:
    coded = node.ledger.all()
    verdicts = port.call(lambda mesh: mesh.survey(list(coded), audit=audit))
    store = node.repo.store
    per_pack: dict[bytes, str] = {}
    bad: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for pid, c in coded.items():
        v = verdicts.get(pid, {})
        ok = sum(1 for x in v.values() if x == "ok")
        for row in c.shares:
            x = v.get(row.index, "unreachable")
            counts[x] = counts.get(x, 0) + 1
            if x in ("corrupt", "missing"):
                bad.setdefault(row.peer, []).append(f"share {row.index} of pack {pid.hex()[:12]} {x}")
        per_pack[pid] = classify(ok, c.k, c.n, local=ok < c.k and store.has_local(pid)).value
    for pid in store.local_ids():
        per_pack.setdefault(pid, "local-only")
    per_snap = []
    for snap in node.repo.snapshots():
        tally = {"full": 0, "degraded": 0, "at-risk": 0, "local-only": 0}
        for p in packs_of(node, snap):
            tally[per_pack.get(p, "local-only")] += 1
        per_snap.append((snap, tally))
    return Survey(per_pack, per_snap, bad, counts)


@dataclass(slots=True)
class RepairResult:
    plan: Any  # node.core.repair.RepairPlan
    placed: dict[bytes, dict[int, str]] = field(default_factory=dict)  # pack -> index -> new holder
    failed: list[str] = field(default_factory=list)
    forgotten: int = 0
    seconds: float = 0.0
    deletes_done: int = 0  # shares of deleted packs a holder finally deleted
    deletes_left: int = 0

    @property
    def complete(self) -> bool:
        """Every pack is full again (or was)."""
        return not self.failed and not self.plan.unrepairable and all(
            set(r.indexes) <= set(self.placed.get(r.pack, {})) for r in self.plan.rebuilds)


def repair(node: LocalNode, port: MeshPort, *, dry_run: bool = False,
           progress: Progress | None = None) -> RepairResult:
    """Make every degraded pack of this node full again (see ``node.core.repair``)."""
    import time

    from corestate.node.core.repair import PackHealth, ShareState, plan_repair
    t0 = time.monotonic()
    coded = node.ledger.all()
    rows: dict[tuple[bytes, int, str], str] = {}
    port.call(lambda mesh: mesh.survey(list(coded), audit=True, per_holder=rows))
    store = node.repo.store
    health = [
        PackHealth(pid, c.k, c.n, tuple(ShareState(r.index, r.peer, rows.get((pid, r.index, r.peer), "unreachable"))
                                        for r in c.shares), store.has_local(pid))
        for pid, c in coded.items()
    ]
    plan = plan_repair(health)
    res = RepairResult(plan)
    if dry_run:
        res.seconds = time.monotonic() - t0
        return res
    cands, _ = port.call(lambda mesh: mesh.candidates())
    work = [r for r in plan.rebuilds if r.indexes]
    if progress is not None:
        progress.total = len(work)
    for r in work:
        try:
            if r.source == "local":
                data = store.get(r.pack)
            else:
                data = port.call(lambda mesh, pack=r.pack: mesh.fetch(pack))

            async def put(mesh: Mesh, r: Any = r, data: bytes = data) -> dict[int, str]:
                return await mesh.rebuild(r.pack, data, r.k, r.n, r.indexes, r.holders, cands)
            placed = port.call(put)
        except CoreStateError as exc:
            res.failed.append(f"pack {r.pack.hex()[:12]}: {exc}")
            continue
        res.placed[r.pack] = placed
        for i in r.indexes:
            if i not in placed:
                res.failed.append(f"pack {r.pack.hex()[:12]}: no peer took share {i} "
                                  "(too few trusted peers online, or all refused)")
        if progress is not None:
            progress.done += 1
    # Rows of holders that lost or spoiled a share go only once the pack is safe without
    # them (its rebuilds placed), so a failed repair never makes the ledger say less.
    for r in plan.rebuilds:
        placed = res.placed.get(r.pack, {})
        if set(r.indexes) <= set(placed):
            for index, peer in r.forget:
                if placed.get(index) == peer:
                    continue  # the holder that lost the share took the rebuilt one
                node.ledger.forget(r.pack, index, peer)
                res.forgotten += 1
    # Shares of pruned packs whose holders were out of reach then: ask again.
    if node.ledger.doomed():
        res.deletes_done, _ = delete_shares(node, port)
        res.deletes_left = len(node.ledger.doomed())
    res.seconds = time.monotonic() - t0
    return res


def delete_shares(node: LocalNode, port: MeshPort, rows: Iterable[tuple[bytes, int, str]] = ()
                  ) -> tuple[int, list[str]]:
    """Ask each holder to delete a share (signed): ``rows`` and every earlier one still
    doomed in the ledger. Returns (deleted, problems). A holder out of reach keeps its copy
    until a later prune or repair asks again (the ledger remembers)."""
    import trio
    node.ledger.doom(rows)
    todo = node.ledger.doomed()
    problems: list[str] = []
    done: list[tuple[bytes, int, str]] = []

    async def run(mesh: Mesh) -> None:
        limit = trio.Semaphore(8)

        async def one(pack: bytes, index: int, peer: str) -> None:
            async with limit:
                try:
                    await mesh.delete_share(peer, pack, index)  # Ok also when it had none
                except CoreStateError as exc:  # protocol errors too: that holder keeps it for now
                    problems.append(f"share {index} of pack {pack.hex()[:12]} at {short(peer)}: {exc}")
                    return
                done.append((pack, index, peer))
        async with trio.open_nursery() as nursery:
            for pack, index, peer in todo:
                nursery.start_soon(one, pack, index, peer)
    if todo:
        port.call(run)
    node.ledger.deleted(done)
    return len(done), problems


def placement_items(node: LocalNode, packs: Iterable[bytes]) -> dict[bytes, bytes | None]:
    """Catalog placement records for ``packs`` as the ledger has them now."""
    items: dict[bytes, bytes | None] = {}
    for pid in packs:
        c = node.ledger.get(pid)
        if c is not None:
            rec = records.Placement(pid, c.k, c.n, c.size,
                                    tuple(records.Holder(r.index, r.peer, r.root, r.size) for r in c.shares),
                                    c.owner)
            items[rec.key] = rec.value()
    return items


# The key prefix of placement records (node/core/records.py).
PACK_KEY = records.PACK_PREFIX


def catalog_items(node: LocalNode, snapshot_id: bytes, packs: Iterable[bytes]) -> dict[bytes, bytes | None]:
    """Catalog entries for a finished backup: the snapshot record (sealed: it names
    paths) and, per pack coded in this run (``packs``), its code and every acknowledged
    share."""
    from corestate.node.core import catalog as cat
    me = node.keys.peer_id
    items: dict[bytes, bytes | None] = {}
    row = node.repo.db.execute("SELECT record FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
    if row is not None:
        key = cat.snapshot_key(snapshot_id)
        items[key] = cat.seal_value(node.keys.catalog_key, me, key, bytes(row[0]))
    items.update(placement_items(node, packs))
    return items


__all__ = ["RepairResult", "Survey", "choose_code", "delete_shares",
           "drop_fetched", "fetch", "is_mesh_node", "packs_of", "placement_items", "repair", "short", "survey"]
