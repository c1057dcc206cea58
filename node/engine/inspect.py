"""Looking at a repository: check (structure and data), diff, ls and stats.

``check`` names every damaged pack and blob and the files (per snapshot) that they touch,
so a person knows what is lost; it never changes the store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from corestate.node.engine.repo import KIND_CODE, Repository, SnapshotInfo
from corestate.node.errors import PackMissing, PathNotInSnapshot
from corestate.protocol import pack as packfmt
from corestate.protocol.errors import CorruptObject
from corestate.protocol.objects import DIR, FILE, Node


@dataclass(slots=True)
class Damage:
    what: str  # "pack", "blob", "tree", "snapshot"
    id: bytes
    reason: str
    files: list[str] = field(default_factory=list)  # "snapshot-id:/path" it touches


@dataclass(slots=True)
class CheckReport:
    packs: int = 0
    blobs: int = 0
    snapshots: int = 0
    trees: int = 0
    bytes_read: int = 0
    remote: int = 0  # packs held only by peers, not read here
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage


def check(repo: Repository, *, read_data: bool = False,
          progress: Callable[[int, int], None] | None = None,
          remote: Collection[bytes] = ()) -> CheckReport:
    """Check the store. Packs in ``remote`` live only as shares on peers: they are
    counted but not read here (the mesh survey checks them at their holders)."""
    report = CheckReport()
    for pid, reason in repo.sync():
        report.damage.append(Damage("pack", pid, f"unreadable: {reason}"))
    bad_blobs: dict[bytes, str] = {}
    packs = repo.packs()
    report.packs = len(packs)
    blob_rows: dict[bytes, list[tuple[bytes, int]]] = {}
    index_rows: dict[bytes, tuple] = {}
    for bid, pack, idx, kind, offset, length, raw, codec in repo.db.execute(
            "SELECT id, pack, idx, kind, offset, length, raw_length, codec FROM blobs"):
        blob_rows.setdefault(pack, []).append((bid, idx))
        index_rows[bid] = (pack, idx, kind, offset, length, raw, codec)
        report.blobs += 1
    for n, (pid, _salt, size, header_offset) in enumerate(packs):
        if progress:
            progress(n, len(packs))
        name = pid.hex()
        if pid in remote and not getattr(repo.store, "has_local", lambda p: True)(pid):
            report.remote += 1
            continue
        try:
            if read_data:
                data = repo.store.get(pid)
                report.bytes_read += len(data)
                if packfmt.pack_id_of(data) != pid:
                    raise CorruptObject(name, "content does not match its id (bit rot or tampering)")
                header = packfmt.read_header(repo.keys, name, data)
            else:
                actual = repo.store.size(pid)
                if actual != size:
                    raise CorruptObject(name, f"is {actual} bytes, the index says {size}")
                prefix = repo.store.read_range(pid, 0, packfmt.PREFIX_BYTES)
                sealed = repo.store.read_range(pid, header_offset, size - header_offset - packfmt.TRAILER_BYTES)
                header = packfmt.open_header(repo.keys, name, prefix, sealed, header_offset)
        except PackMissing:
            report.damage.append(Damage("pack", pid, "missing from the store"))
            bad_blobs.update((b, "its pack is missing") for b, _ in blob_rows.get(pid, []))
            continue
        except CorruptObject as exc:
            report.damage.append(Damage("pack", pid, exc.reason))
            if read_data:
                # Salvage: blobs that still decrypt and hash are fine; name only the others.
                try:
                    header = packfmt.open_header(
                        repo.keys, name, data[: packfmt.PREFIX_BYTES],
                        data[header_offset : size - packfmt.TRAILER_BYTES], header_offset)
                except CorruptObject:
                    bad_blobs.update((b, f"in damaged pack {name[:16]}") for b, _ in blob_rows.get(pid, []))
                    continue
            else:
                bad_blobs.update((b, f"in damaged pack {name[:16]}") for b, _ in blob_rows.get(pid, []))
                continue
        for e in header.entries:
            row = index_rows.get(e.id)
            if row is not None and row[0] == pid and row != (
                    pid, e.index, KIND_CODE[e.kind], e.offset, e.length, e.raw_length, e.codec):
                report.damage.append(Damage(
                    "index", e.id, f"the index row disagrees with the header of pack {name[:16]}"))
        if read_data:
            for e, sealed_blob in packfmt.iter_blobs(data, header):
                try:
                    repo.opener.open(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed_blob)
                except CorruptObject as exc:
                    report.damage.append(Damage("blob", e.id, f"{e.kind} in pack {name[:16]}: {exc.reason}"))
                    bad_blobs[e.id] = exc.reason
    if progress:
        progress(len(packs), len(packs))
    _check_snapshots(repo, report, bad_blobs)
    return report


def _check_snapshots(repo: Repository, report: CheckReport, bad: dict[bytes, str]) -> None:
    locs = repo.locations()
    seen_trees: set[bytes] = set()
    snaps = repo.snapshots()
    report.snapshots = len(snaps)
    affected: dict[bytes, Damage] = {}
    for d in report.damage:
        affected.setdefault(d.id, d)
    for snap in snaps:
        stack: list[tuple[bytes, bytes]] = [(snap.record.tree, b"")]
        while stack:
            tid, prefix = stack.pop()
            where = f"{snap.short_id}:{prefix.decode(errors='replace') or '/'}"
            if tid not in locs or tid in bad:
                d = affected.get(tid) or Damage("tree", tid, bad.get(tid, "missing from the index"))
                if tid not in affected:
                    affected[tid] = d
                    report.damage.append(d)
                d.files.append(where)
                continue
            try:
                nodes = repo.tree(tid)
            except (CorruptObject, PackMissing) as exc:
                d = Damage("tree", tid, str(exc), [where])
                affected[tid] = d
                report.damage.append(d)
                continue
            first_visit = tid not in seen_trees
            seen_trees.add(tid)
            for node in nodes:
                path = prefix + b"/" + node.name
                if node.type == DIR and node.subtree is not None:
                    stack.append((node.subtree, path))
                elif node.type == FILE:
                    for cid in node.content:
                        if cid in locs and cid not in bad:
                            continue
                        hit = affected.get(cid)
                        if hit is None:
                            hit = Damage("blob", cid, bad.get(cid, "chunk missing from the index"))
                            affected[cid] = hit
                            report.damage.append(hit)
                        hit.files.append(f"{snap.short_id}:{path.decode(errors='replace')}")
            if first_visit:
                report.trees += 1
    # A damaged pack's blobs get listed under the pack too.
    for d in report.damage:
        if d.what == "pack":
            rows = repo.db.execute("SELECT id FROM blobs WHERE pack = ?", (d.id,)).fetchall()
            for (bid,) in rows:
                sub = affected.get(bid)
                if sub is not None and sub is not d:
                    d.files.extend(sub.files)


def diff(repo: Repository, a: bytes | None, b: bytes | None, prefix: bytes = b"") -> Iterator[tuple[str, bytes]]:
    """(op, path) for every difference between two trees: + added, - removed, M modified,
    T type changed. Identical subtrees are skipped without reading them."""
    if a == b:
        return
    left = {n.name: n for n in repo.tree(a)} if a else {}
    right = {n.name: n for n in repo.tree(b)} if b else {}
    for name in sorted(left.keys() | right.keys()):
        path = prefix + b"/" + name
        x, y = left.get(name), right.get(name)
        if y is None:
            assert x is not None
            yield "-", path
            if x.type == DIR:
                yield from diff(repo, x.subtree, None, path)
        elif x is None:
            yield "+", path
            if y.type == DIR:
                yield from diff(repo, None, y.subtree, path)
        elif x.type != y.type:
            yield "T", path
        elif x.type == DIR:
            if _meta_differs(x, y):
                yield "M", path
            yield from diff(repo, x.subtree, y.subtree, path)
        elif x.to_obj() != y.to_obj():
            yield "M", path


def _meta_differs(x: Node, y: Node) -> bool:
    return (x.mode, x.uid, x.gid, x.mtime_ns, x.xattrs) != (y.mode, y.uid, y.gid, y.mtime_ns, y.xattrs)


def find(repo: Repository, snap: SnapshotInfo, path: bytes) -> tuple[bytes, Node | None]:
    """The node at ``path`` in a snapshot (None for the root) and the tree to list."""
    tree = snap.record.tree
    node = None
    for comp in [c for c in path.split(b"/") if c]:
        node = next((n for n in repo.tree(tree) if n.name == comp), None)
        if node is None:
            raise PathNotInSnapshot(path.decode(errors="replace"))
        if node.subtree is not None:
            tree = node.subtree
    return tree, node


def stats(repo: Repository) -> dict[str, int]:
    db = repo.db
    packs, store_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM packs").fetchone()
    chunks, raw = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(raw_length), 0) FROM blobs WHERE kind = 0").fetchone()
    trees = db.execute("SELECT COUNT(*) FROM blobs WHERE kind = 1").fetchone()[0]
    snaps = repo.snapshots()
    latest = snaps[-1].record if snaps else None
    return {
        "snapshots": len(snaps),
        "packs": packs,
        "store_bytes": store_bytes,
        "chunks": chunks,
        "trees": trees,
        "unique_bytes": raw,
        "latest_files": latest.files if latest else 0,
        "latest_bytes": latest.size if latest else 0,
    }
