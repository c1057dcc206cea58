"""Forgetting snapshots, and pruning the packs no remaining snapshot needs.

A snapshot is its record, alone in a pack of its own: forgetting it deletes that pack.
Pruning deletes every pack none of whose blobs is reachable from a remaining snapshot
(its record, its trees, every chunk of every file).

A pack partly in use whose unneeded bytes exceed ``REPACK_ABOVE`` of it is *repacked*:
the blobs still needed are copied into new packs, which the index then names, and the old
pack goes. Only packs that never left this machine are repacked (a pack on the mesh
would need its shares fetched and the new ones placed first: not done).

Invariants:

- Nothing a remaining snapshot needs is deleted: a pack goes only when none of its blobs
  is reachable, or when every reachable one is durable in a new pack the index names.
- This runs under the home lock (the CLI's, or the daemon's command lock), so no backup
  adds packs meanwhile; packs left by a crashed backup are unreferenced and go.
- Files go before their index rows: a crash in between leaves rows for missing files,
  which the next ``Repository.sync`` drops. A forgotten snapshot never comes back.
- The directory cache is emptied: a cached tree is trusted by its id alone, and a tree
  that no snapshot reaches may have lost chunks. (The files cache checks each chunk id
  against the index, so it stays.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from corestate.node.engine.repo import CODE_KIND, Repository
from corestate.protocol import pack as packfmt
from corestate.protocol.objects import Snapshot

from corestate.errors import CoreStateError

REPACK_ABOVE = 0.10


class PruneUnsafe(CoreStateError):
    def __init__(self, unindexed: int) -> None:
        super().__init__(
            f"{unindexed} pack(s) in the store are not in the index, so what they hold cannot "
            "be counted as in use: nothing was pruned",
            hint="run `corestate check --rebuild-index` (it fetches packs held only by peers), then prune")


@dataclass(slots=True)
class PrunePlan:
    delete: list[bytes] = field(default_factory=list)  # packs that go
    delete_bytes: int = 0
    repack: list[bytes] = field(default_factory=list)  # packs whose needed blobs move first
    repack_bytes: int = 0  # bytes of those packs that are no longer needed
    partly_used: int = 0  # packs kept for some blobs (repacked ones excluded)
    unused_in_kept: int = 0  # bytes of blobs nobody needs, in packs that stay
    kept: int = 0
    snapshots_gone: list[bytes] = field(default_factory=list)
    keep: set[bytes] = field(default_factory=set)  # the blob ids still needed


def _all_snapshots(repo: Repository) -> dict[bytes, Snapshot]:
    """Every snapshot in the index, whoever recorded it (``Repository.snapshots`` lists only
    this identity's once it has any; a prune must not miss an earlier identity's)."""
    return {bytes(sid): Snapshot.decode(rec, bytes(sid).hex())
            for sid, rec in repo.db.execute("SELECT id, record FROM snapshots")}


def reachable(repo: Repository, snapshot_ids: Iterable[bytes]) -> set[bytes]:
    """Every blob id the given snapshots need: records, trees, chunks."""
    wanted = _all_snapshots(repo)
    out: set[bytes] = set()
    stack: list[bytes] = []
    for sid in snapshot_ids:
        out.add(sid)
        stack.append(wanted[sid].tree)
    while stack:
        tid = stack.pop()
        if tid in out:
            continue  # shared with another snapshot (or folder): walked once
        out.add(tid)
        for node in repo.tree(tid):
            out.update(node.content)
            if node.subtree is not None:
                stack.append(node.subtree)
    return out


def plan(repo: Repository, forget: Iterable[bytes] = (), *, prune: bool = True,
         movable: Callable[[bytes], bool] = lambda pack: False) -> PrunePlan:
    """What forgetting ``forget`` (snapshot ids) and, with ``prune``, pruning would delete;
    partly used packs for which ``movable`` says yes may be repacked."""
    gone = set(forget)
    snaps = set(_all_snapshots(repo))
    unknown = gone - snaps
    if unknown:
        raise ValueError(f"not snapshots of this repository: {sorted(u.hex()[:8] for u in unknown)}")
    sizes = {pid: size for pid, _, size, _ in repo.packs()}
    if prune:
        unindexed = set(repo.store.list()) - set(sizes)
        if unindexed:
            # A snapshot recorded in a pack the index does not know would look absent,
            # and what only it needs would look unused.
            raise PruneUnsafe(len(unindexed))
    p = PrunePlan(snapshots_gone=sorted(gone))
    by_pack: dict[bytes, list[tuple[bytes, int, int]]] = {}
    for bid, kind, pack, length in repo.db.execute("SELECT id, kind, pack, length FROM blobs"):
        by_pack.setdefault(pack, []).append((bid, kind, length))
    if prune:
        keep = reachable(repo, snaps - gone)
    else:
        # Only the record packs of the forgotten snapshots go (a record's blob id is the
        # snapshot id).
        keep = {bid for blobs in by_pack.values() for bid, _, _ in blobs} - gone
    p.keep = keep
    for pack in sorted(sizes):
        blobs = by_pack.get(pack, [])  # none: every blob of it is indexed in another pack
        unused = sum(n for bid, _, n in blobs if bid not in keep)
        if not any(bid in keep for bid, _, _ in blobs):
            p.delete.append(pack)
            p.delete_bytes += sizes[pack]
        elif prune and unused > REPACK_ABOVE * sizes[pack] and movable(pack):
            p.repack.append(pack)
            p.repack_bytes += unused
        else:
            p.kept += 1
            if unused:
                p.partly_used += 1
                p.unused_in_kept += unused
    return p


def repack(repo: Repository, packs: Iterable[bytes], keep: set[bytes], *, pack_size: int,
           compression_level: int) -> list[bytes]:
    """Copy the needed blobs of ``packs`` into new packs; the index names the new ones once
    each is durable. The old packs are then the caller's to delete (``apply``)."""
    import os
    out: list[bytes] = []
    w: packfmt.PackWriter | None = None

    def land(w: packfmt.PackWriter) -> None:
        entries, header_offset = list(w.entries), len(w)
        pid, data = w.finish()
        repo.store.put(pid, data)
        repo.record_pack(pid, w.salt, len(data), header_offset, entries, move=True)
        out.append(pid)
    for old in packs:
        rows = repo.db.execute("SELECT id, kind FROM blobs WHERE pack = ? ORDER BY idx", (old,)).fetchall()
        for bid, kind in rows:
            if bid not in keep:
                continue
            if w is None:
                w = packfmt.PackWriter(repo.keys, os.urandom(packfmt.SALT_BYTES),
                                       compression_level=compression_level)
            w.add(CODE_KIND[kind], bid, repo.load_blob(bid))
            if len(w) >= pack_size:
                land(w)
                w = None
    if w is not None and w.entries:
        land(w)
    return out


def apply(repo: Repository, packs: Iterable[bytes]) -> None:
    """Delete ``packs`` from the local store and then from the index (see the invariants).
    The mesh side (shares on holders, the share ledger) is the caller's."""
    packs = list(packs)
    for pid in packs:
        repo.store.delete(pid)
    repo.drop_packs(packs)
