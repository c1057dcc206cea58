"""What the commands do with the mesh: synchronous steps that call into it via a port.

- ``fetch``: bring back the remote-only packs a restore (or a full read) needs.
- ``MeshPackFeed``: remote-only packs, in memory, as a restore writes (streaming restore);
- ``fetch_headers``: index remote packs from their sealed headers alone (recovery);
- ``delete_shares``: ask holders to delete the shares of pruned packs;
- ``heal_local``: rewrite damaged local copies of packs from their shares on peers.

(The survey and repair orchestration is the application layer's: node/app/maintain.py.)

A node with no trusted peer and no storage target is a standalone repository: nothing
here runs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from corestate.node.core import records
from corestate.node.engine.repo import SnapshotInfo
from corestate.node.runtime.reports import short
from corestate.protocol import pack as packfmt
from corestate.protocol.errors import CorruptObject

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.port import MeshPort
    from corestate.protocol.keys import NodeKeys

log = logging.getLogger("corestate.meshops")


def is_mesh_node(node: LocalNode) -> bool:
    return node.has_holders()


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


# Bytes read from a pack's end in one go: its trailer and, for packs of large chunks, its
# whole sealed header (about 100 bytes per blob); a longer one costs one more ranged read.
HEADER_TAIL = 4 << 10
HEADER_BATCH = 64  # packs whose headers are held in memory before they are indexed


@dataclass(slots=True)
class HeaderFetch:
    """What ``fetch_headers`` did: packs indexed from their headers alone, packs fetched
    whole into the store (metadata packs, and packs whose header could not be read in
    parts), and the share bytes that crossed the wire for it."""

    indexed: int = 0
    whole: list[bytes] = field(default_factory=list)
    bytes_fetched: int = 0


def fetch_headers(node: LocalNode, port: MeshPort, packs: Iterable[bytes], parallel: int = 8) -> HeaderFetch:
    """Index remote-only ``packs`` the index does not know from their sealed headers,
    read by ranged GETs of their data shares (prefix and tail only: systematic shares hold
    the pack's bytes in order). A pack holding trees or a snapshot record is fetched whole
    into the store (its blobs are needed, and such packs are kept locally anyway), as is
    any pack whose header cannot be read in parts (e.g. a data share's holders are away:
    the whole fetch decodes from parity). The header authenticates under this node's keys,
    so a holder cannot make up entries; ranged bytes are otherwise unverified."""
    import trio
    repo = node.repo
    known = {r[0] for r in repo.db.execute("SELECT id FROM packs")}
    want = sorted(set(packs) - known)
    out = HeaderFetch()
    for i in range(0, len(want), HEADER_BATCH):
        batch = want[i:i + HEADER_BATCH]
        headers: list[tuple[bytes, int, packfmt.PackHeader]] = []
        whole: list[tuple[bytes, bytes]] = []

        async def run(mesh: Mesh, batch: list[bytes] = batch, headers: list = headers,
                      whole: list = whole) -> None:
            limit = trio.Semaphore(parallel)

            async def one(p: bytes) -> None:
                async with limit:
                    got = await _header_of(mesh, repo.keys, p)
                    if got is not None:
                        size, header, nbytes = got
                        out.bytes_fetched += nbytes
                        if all(e.kind == packfmt.KIND_CHUNK for e in header.entries):
                            headers.append((p, size, header))
                            return
                    data = await mesh.fetch(p)
                    out.bytes_fetched += len(data)
                    whole.append((p, data))
            async with trio.open_nursery() as nursery:
                for p in batch:
                    nursery.start_soon(one, p)
        port.call(run)
        # Written from this thread (the index's database connection lives here).
        for p, data in whole:
            repo.store.put(p, data)
            out.whole.append(p)
        for p, size, header in headers:
            repo.record_pack(p, header.salt, size, header.header_offset, header.entries)
        out.indexed += len(headers)
    return out


async def _header_of(mesh: Mesh, keys: NodeKeys, pack: bytes) -> tuple[int, packfmt.PackHeader, int] | None:
    """(pack size, its opened header, share bytes read), or None when the header cannot
    be read in parts (the caller fetches the pack whole)."""
    from corestate.erasure.share import HEADER_SIZE
    from corestate.node.runtime.mesh import MeshError
    from corestate.protocol.errors import ProtocolError
    name = pack.hex()
    try:
        view, head = await mesh.open_view(pack, packfmt.PREFIX_BYTES)
        nbytes = HEADER_SIZE + len(head)
        if view.size < packfmt.PREFIX_BYTES + packfmt.TRAILER_BYTES:
            return None
        start = max(0, view.size - HEADER_TAIL)
        tail = await mesh.read_view(view, start, view.size)
        nbytes += len(tail)
        length = packfmt.header_length(name, tail[-packfmt.TRAILER_BYTES:], view.size)
        offset = view.size - packfmt.TRAILER_BYTES - length
        if offset < start:
            more = await mesh.read_view(view, offset, start)
            nbytes += len(more)
            tail = more + tail
            start = offset
        sealed = tail[offset - start:len(tail) - packfmt.TRAILER_BYTES]
        header = packfmt.open_header(keys, name, head, sealed, offset)
    except (MeshError, ProtocolError, CorruptObject) as exc:
        log.info("header of pack %s not read in parts (%s): fetching it whole", name[:12], exc)
        return None
    return view.size, header, nbytes


class MeshPackFeed:
    """The restore engine's ``PackFeed`` on a mesh node: remote-only packs fetched from any
    k holders (``Mesh.fetch``: every share checked against its recorded root, the pack
    against its id) into memory, ``parallel`` at once, one wave ahead of the writer and no
    further (so at most two waves are held); nothing is staged on disk. Each pack lives
    in a memory map of its own (``mapped``), returned to the system when its wave goes."""

    def __init__(self, node: LocalNode, port: MeshPort, parallel: int = 2) -> None:
        self.port, self.parallel = port, parallel
        store = node.repo.store
        self._remote = {p for p in node.ledger.remote_only() if not store.has_local(p)}
        self._ready: queue.Queue[dict[bytes, bytes] | BaseException] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.packs_done = 0
        self.packs_total = 0
        self.bytes_fetched = 0

    def remote(self) -> set[bytes]:
        return set(self._remote)

    def start(self, waves: list[list[bytes]]) -> None:
        self.packs_total = len({p for w in waves for p in w})
        self._thread = threading.Thread(target=self._run, args=(waves,), name="pack-feed", daemon=True)
        self._thread.start()

    def next_wave(self) -> dict[bytes, bytes]:
        got = self._ready.get()
        self._ready.task_done()  # taken: the fetcher may begin the wave after it
        if isinstance(got, BaseException):
            raise got
        return got

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a fetcher waiting to hand over
            try:
                self._ready.get_nowait()
                self._ready.task_done()
            except queue.Empty:
                break
        if self._thread is not None:
            self._thread.join()

    def _run(self, waves: list[list[bytes]]) -> None:
        try:
            self.port.call(lambda mesh: self._fetch_waves(mesh, waves))
        except BaseException as exc:  # handed to the writer, which raises it
            while isinstance(exc, BaseExceptionGroup):  # the first failure says why
                exc = exc.exceptions[0]
            if not self._stop.is_set():
                self._ready.put(exc)

    async def _fetch_waves(self, mesh: Mesh, waves: list[list[bytes]]) -> None:
        import trio
        prev: dict[bytes, bytes] = {}
        limit = trio.Semaphore(self.parallel)
        for packs in waves:
            if self._stop.is_set():
                return
            got = {p: prev[p] for p in packs if p in prev}  # shared with the wave before

            async def one(p: bytes, got: dict[bytes, bytes] = got) -> None:
                async with limit:
                    data = await mesh.fetch(p, mapped=True)
                    # A memoryview of the pack's own memory map, typed as the restore's
                    # PackFeed promises bytes: the restore only slices a pack and hands
                    # the slices to the AEAD, which takes any bytes-like object.
                    got[p] = cast(bytes, data)
                    self.packs_done += 1
                    self.bytes_fetched += len(data)
            async with trio.open_nursery() as nursery:
                for p in packs:
                    if p not in got:
                        nursery.start_soon(one, p)
            prev = {}
            # Hand it over, then wait until the writer took it (it then lets go of the
            # wave before): so no more than two waves are ever held.
            while not self._stop.is_set():
                try:
                    self._ready.put_nowait(got)
                    break
                except queue.Full:
                    await trio.sleep(0.02)
            while not self._stop.is_set() and self._ready.unfinished_tasks:
                await trio.sleep(0.02)
            prev = got


def damaged_local(node: LocalNode, packs: Iterable[bytes]) -> list[bytes]:
    """The ``packs`` held in the local store whose bytes no longer hash to their id (bit
    rot, a torn write) and whose shares are on peers, so ``heal_local`` can rebuild them."""
    import blake3
    store = node.repo.store
    has_local = getattr(store, "has_local", None)
    out = []
    for p in sorted(packs):
        if has_local is None or not has_local(p) or node.ledger.get(p) is None:
            continue
        try:
            data = store.get(p)
        except CoreStateError:
            continue
        if blake3.blake3(data).digest() != p:
            out.append(p)
    return out


def heal_local(node: LocalNode, port: MeshPort, packs: Iterable[bytes]) -> list[bytes]:
    """Rebuild each of ``packs`` from its holders (``Mesh.fetch``: every share checked
    against its recorded root, the pack against its id) and write it over the damaged
    local copy, in place: readers that hold the pack file open (a restore's cached
    descriptors, forked workers) then read the healed bytes, never a stale inode. A pack
    that cannot be fetched now stays as it was (logged). Returns the healed packs."""
    import trio
    from corestate.node.runtime.mesh import MeshError
    store = node.repo.store
    want = sorted(packs)
    healed: list[bytes] = []

    def write_over(p: bytes, data: bytes) -> None:
        path = store.path(p)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(fd, view, len(data) - len(view)):]
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)

    async def run(mesh: Mesh) -> None:
        for p in want:
            try:
                data = await mesh.fetch(p)
            except MeshError as exc:
                log.warning("damaged local pack %s not healed: %s", p.hex()[:12], exc)
                continue
            await trio.to_thread.run_sync(write_over, p, data)
            log.warning("damaged local pack %s healed from its shares on peers", p.hex()[:12])
            healed.append(p)
    if want:
        port.call(run)
    return healed


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


__all__ = ["HeaderFetch", "MeshPackFeed", "catalog_items", "delete_shares", "drop_fetched", "fetch", "fetch_headers", "is_mesh_node",
           "packs_of", "placement_items", "short"]
