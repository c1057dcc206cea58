"""What the commands do with the mesh: synchronous steps that call into it via a port.

- ``fetch``: bring back the remote-only packs a restore (or a full read) needs.
- ``delete_shares``: ask holders to delete the shares of pruned packs.

(The survey and repair orchestration is the application layer's: node/app/maintain.py.)

A node with no trusted peer is a standalone repository: nothing here runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from corestate.node.core import records
from corestate.node.engine.repo import SnapshotInfo
from corestate.node.runtime.reports import short

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.port import MeshPort


def is_mesh_node(node: LocalNode) -> bool:
    return bool(node.trusted_peers())


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


def delete_shares(node: LocalNode, port: MeshPort, rows: Iterable[tuple[bytes, int, str]] = (),
                  *, skip: Collection[str] = ()) -> tuple[int, list[str]]:
    """Ask each holder to delete a share (signed): ``rows`` and every earlier one still
    doomed in the ledger, but not on the holders in ``skip`` (counted lost: asked again once
    they answer). Returns (deleted, problems). A holder out of reach keeps its copy until a
    later prune or repair asks again (the ledger remembers)."""
    import trio
    node.ledger.doom(rows)
    todo = [row for row in node.ledger.doomed() if row[2] not in skip]
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


__all__ = ["catalog_items", "delete_shares", "drop_fetched", "fetch", "is_mesh_node",
           "packs_of", "placement_items", "short"]
