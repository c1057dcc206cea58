"""What the commands do with the mesh: synchronous steps that call into it via a port.

- ``push``: after the engine wrote a snapshot's packs locally, code every pack that is not
  yet fully placed and put its shares on peers; drop local copies of data packs whose n
  shares are acknowledged (tree and snapshot packs stay as a local cache as well).
- ``fetch``: bring back the remote-only packs a restore (or a full read) needs.
- ``delete_shares``: ask holders to delete the shares of pruned packs.

(The survey and repair orchestration is the application layer's: node/app/maintain.py.)

A node with no trusted peer is a standalone repository: nothing here runs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corestate.node.engine.repo import SnapshotInfo
from corestate.node.runtime.reports import Progress, UploadReport, short

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.port import MeshPort


def is_mesh_node(node: LocalNode) -> bool:
    return bool(node.trusted_peers())


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


def choose_code(online: int, k: int, n: int, cfg_k: int, cfg_n: int) -> tuple[int, int]:
    n = n or cfg_n or min(4, online)
    k = k or cfg_k or max(1, math.ceil(n / 2))
    if not 1 <= k <= n <= 255:
        raise CoreStateError(f"erasure code k={k} n={n} is not possible",
                             hint="use 1 <= k <= n <= 255, e.g. `--k 2 --n 4`")
    return k, n


def push(node: LocalNode, port: MeshPort, *, k: int = 0, n: int = 0,
         progress: Progress | None = None) -> PushResult:
    """Put every local pack that is not fully placed on the mesh."""
    cands, offline = port.call(lambda mesh: mesh.candidates())
    online = [c.peer for c in cands]
    if not cands:
        # Nothing can be placed: everything stays local, and the caller says so (exit 3).
        kk, nn = (k or node.cfg.k or 1), (n or node.cfg.n or 1)
        res = PushResult(kk, nn, [], offline, None)
        res.problems.append("no trusted peer is reachable: the snapshot is stored on this machine only")
        return res
    k, n = choose_code(len(cands), k, n, node.cfg.k, node.cfg.n)
    store = node.repo.store
    local = store.local_ids()
    coded = node.ledger.all()
    todo: list[tuple[bytes, int, int]] = []
    for pid in sorted(local):
        c = coded.get(pid)
        if c is None:
            todo.append((pid, k, n))
        elif c.placed < c.n:
            todo.append((pid, c.k, c.n))  # top up a degraded pack with its own code
    res = PushResult(k, n, online, offline, None)
    if progress is not None:
        progress.total = len(todo)
    report = UploadReport()
    for (kk, nn) in sorted({(a, b) for _, a, b in todo}):
        group = [p for p, a, b in todo if (a, b) == (kk, nn)]

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
    import cbor2
    items: dict[bytes, bytes | None] = {}
    for pid in packs:
        c = node.ledger.get(pid)
        if c is not None:
            shares = [[r.index, r.peer, r.root, r.size] for r in c.shares]
            items[PACK_KEY + pid] = cbor2.dumps([c.k, c.n, c.size, shares] + ([c.owner] if c.owner else []),
                                                canonical=True)
    return items


# + pack id: [k, n, size, [[index, holder, root, size], ...]] and, when the holders filed
# the shares under an earlier identity of this node, that PeerID as a fifth element.
PACK_KEY = b"k"


def catalog_items(node: LocalNode, snapshot_id: bytes, pushed: PushResult | None) -> dict[bytes, bytes | None]:
    """Catalog entries for a finished backup: the snapshot record (sealed: it names
    paths) and, per pack coded in this run, its code and every acknowledged share."""
    from corestate.node.core import catalog as cat
    me = node.keys.peer_id
    items: dict[bytes, bytes | None] = {}
    row = node.repo.db.execute("SELECT record FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
    if row is not None:
        key = cat.snapshot_key(snapshot_id)
        items[key] = cat.seal_value(node.keys.catalog_key, me, key, bytes(row[0]))
    packs = [p.pack for p in pushed.report.packs] if pushed is not None and pushed.report else []
    items.update(placement_items(node, packs))
    return items


def describe_degraded(res: PushResult) -> list[str]:
    lines = []
    for pack, placed, k, n in res.degraded[:20]:
        state = "recoverable from peers" if placed >= k else "NOT recoverable from peers; kept locally"
        lines.append(f"pack {pack.hex()[:12]}: {placed} of {n} shares placed (k={k}): {state}")
    if len(res.degraded) > 20:
        lines.append(f"... and {len(res.degraded) - 20} more")
    return lines


__all__ = ["PushResult", "choose_code", "delete_shares", "describe_degraded",
           "drop_fetched", "fetch", "is_mesh_node", "packs_of", "placement_items", "push", "short"]
