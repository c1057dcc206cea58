"""The repository: a pack store plus the local sqlite index that makes it fast to use.

Everything a restore needs lives in the packs (chunks, trees, snapshot records; the pack
headers are the chunk-to-pack index). ``index.db`` is a cache of what the pack headers
say, plus the files cache; ``sync`` rebuilds any part of it from the packs, so a pack
that landed before a crash is found and reused, and a lost index.db costs only time.

Invariant: a row in ``packs``/``blobs`` is written only after its pack is durable in the
store; a snapshot row only after every pack it needs is.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from corestate.node.engine.store import LocalPackStore, PackStore
from corestate.node.errors import PackMissing, SnapshotNotFound
from corestate.protocol import pack as packfmt
from corestate.protocol.errors import CorruptObject
from corestate.protocol.keys import NodeKeys
from corestate.protocol.objects import Node, Snapshot, decode_tree

KIND_CODE = {packfmt.KIND_CHUNK: 0, packfmt.KIND_TREE: 1, packfmt.KIND_SNAPSHOT: 2}
CODE_KIND = {v: k for k, v in KIND_CODE.items()}

SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id BLOB PRIMARY KEY, salt BLOB NOT NULL, size INTEGER NOT NULL,
    header_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack BLOB NOT NULL, idx INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL,
    codec INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_pack ON blobs(pack);
CREATE TABLE IF NOT EXISTS snapshots (
    id BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS files_cache (
    path BLOB PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    chunks BLOB NOT NULL,  -- the chunk ids, 32 bytes each, concatenated
    xattrs BLOB,  -- CBOR map, or NULL
    sparse INTEGER NOT NULL,
    -- 1: the stat proves the content (a later change must move it); 0: read from a btrfs
    -- snapshot too soon after a change: only the base of a block-level increment
    exact INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS dir_cache (
    path BLOB PRIMARY KEY, fingerprint BLOB NOT NULL, tree BLOB NOT NULL,
    files INTEGER NOT NULL, bytes INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BlobLocation:
    kind: str
    pack: bytes
    index: int
    offset: int
    length: int
    raw_length: int
    codec: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: bytes
    record: Snapshot

    @property
    def short_id(self) -> str:
        return self.id.hex()[:8]


class Repository:
    def __init__(self, keys: NodeKeys, store: PackStore, db_path: str, *, readonly: bool = False) -> None:
        """``readonly``: a reader beside the home's writer (``corestate mount``): the index
        opened read-only, never created or migrated; ``sync`` and writes must not be called."""
        self.keys = keys
        self.store = store
        if readonly:
            uri = "file:" + urllib.parse.quote(db_path) + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(files_cache)")}
            if "exact" not in columns:  # an index.db from before the column
                self.db.execute("ALTER TABLE files_cache ADD COLUMN exact INTEGER NOT NULL DEFAULT 1")
        self.opener = packfmt.BlobOpener(keys)
        self._salts: dict[bytes, bytes] = {}
        self._locs: dict[bytes, BlobLocation] | None = None
        self._tree_cache: dict[bytes, list[Node]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        closer = getattr(self.store, "close", None)
        if closer is not None:
            closer()
        self.db.close()

    # -- index ------------------------------------------------------------------------

    def sync(self) -> list[tuple[bytes, str]]:
        """Index packs in the store that the index does not know; forget vanished ones.

        Returns (pack id, reason) for packs that could not be read, so a caller can report
        them; such packs are left alone (check names them).
        """
        if isinstance(self.store, LocalPackStore):
            self.store.clean_temporary()
        known = {r[0] for r in self.db.execute("SELECT id FROM packs")}
        present = set(self.store.list())
        problems: list[tuple[bytes, str]] = []
        new = present - known
        for pid in sorted(new):
            try:
                try:
                    data = self.store.get(pid)
                except PackMissing:
                    problems.append((pid, "held only by peers; not indexed until fetched"))
                    continue
                if packfmt.pack_id_of(data) != pid:
                    raise CorruptObject(pid.hex(), "content does not match its name")
                header = packfmt.read_header(self.keys, pid.hex(), data)
            except CorruptObject as exc:
                problems.append((pid, exc.reason))
                continue
            snaps = [
                (e.id, self.opener.open(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, blob))
                for e, blob in packfmt.iter_blobs(data, header)
                if e.kind == packfmt.KIND_SNAPSHOT
            ]
            self.record_pack(pid, header.salt, len(data), header.header_offset, header.entries, snaps)
        gone = known - present
        if gone:
            with self.db:
                self.db.executemany("DELETE FROM blobs WHERE pack = ?", [(g,) for g in gone])
                self.db.executemany("DELETE FROM packs WHERE id = ?", [(g,) for g in gone])
            self._locs = None
        return problems

    def rebuild_index(self) -> list[tuple[bytes, str]]:
        """Forget the pack index and snapshots and read them again from the packs."""
        with self._lock:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM blobs")
            self.db.execute("DELETE FROM packs")
            self.db.execute("DELETE FROM snapshots")
            self.db.execute("COMMIT")
        self._locs = None
        self._salts.clear()
        self._tree_cache.clear()
        return self.sync()

    def record_pack(
        self, pack_id: bytes, salt: bytes, size: int, header_offset: int,
        entries: Iterable[packfmt.BlobEntry], snapshots: Iterable[tuple[bytes, bytes]] = (),
        *, move: bool = False,
    ) -> None:
        """Index a pack that is durable in the store (one transaction). With ``move``, its
        blobs are found here from now on even where another pack holds them too (repack)."""
        rows = [
            (e.id, KIND_CODE[e.kind], pack_id, e.index, e.offset, e.length, e.raw_length, e.codec)
            for e in entries
        ]
        snaps = []
        for sid, record in snapshots:
            snap = Snapshot.decode(record, sid.hex())
            snaps.append((sid, snap.time_ns, record))
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute(
                    "INSERT OR IGNORE INTO packs VALUES (?, ?, ?, ?)", (pack_id, salt, size, header_offset)
                )
                verb = "INSERT OR REPLACE" if move else "INSERT OR IGNORE"
                self.db.executemany(f"{verb} INTO blobs VALUES (?,?,?,?,?,?,?,?)", rows)
                self.db.executemany("INSERT OR IGNORE INTO snapshots VALUES (?, ?, ?)", snaps)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            if self._locs is not None:
                for r in rows:
                    loc = BlobLocation(CODE_KIND[r[1]], pack_id, *r[3:])
                    if move:
                        self._locs[r[0]] = loc
                    else:
                        self._locs.setdefault(r[0], loc)
            self._salts[pack_id] = salt

    def known_blob_ids(self) -> set[bytes]:
        return {r[0] for r in self.db.execute("SELECT id FROM blobs")}

    def locations(self) -> dict[bytes, BlobLocation]:
        if self._locs is None:
            self._locs = {
                r[0]: BlobLocation(CODE_KIND[r[1]], *r[2:])
                for r in self.db.execute(
                    "SELECT id, kind, pack, idx, offset, length, raw_length, codec FROM blobs"
                )
            }
        return self._locs

    def refresh(self) -> None:
        """Forget the cached blob locations: a reader beside a writer (``corestate mount``)
        then sees the packs indexed since."""
        self._locs = None

    def raw_lengths(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """The plaintext length of each of ``ids`` the index knows (a query per 500 ids:
        the cost follows the ids asked for, not the size of the repository)."""
        out: dict[bytes, int] = {}
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            out.update(self.db.execute(
                f"SELECT id, raw_length FROM blobs WHERE id IN ({','.join('?' * len(part))})", part))
        return out

    def drop_packs(self, packs: Iterable[bytes]) -> None:
        """Forget ``packs`` (their files are gone): their blobs, the snapshots recorded in
        them, and the whole directory cache (see ``node/engine/prune.py``)."""
        snap = KIND_CODE[packfmt.KIND_SNAPSHOT]
        with self._lock:
            self.db.execute("BEGIN")
            try:
                for pid in packs:
                    self.db.execute(
                        "DELETE FROM snapshots WHERE id IN (SELECT id FROM blobs WHERE pack = ? AND kind = ?)",
                        (pid, snap))
                    self.db.execute("DELETE FROM blobs WHERE pack = ?", (pid,))
                    self.db.execute("DELETE FROM packs WHERE id = ?", (pid,))
                self.db.execute("DELETE FROM dir_cache")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._locs = None
            self._tree_cache.clear()

    def salt(self, pack_id: bytes) -> bytes:
        s = self._salts.get(pack_id)
        if s is None:
            row = self.db.execute("SELECT salt FROM packs WHERE id = ?", (pack_id,)).fetchone()
            if row is None:
                raise CorruptObject(pack_id.hex(), "pack is not in the index")
            s = self._salts[pack_id] = row[0]
        return s

    def preload_salts(self) -> None:
        """Load every pack salt, so worker threads never touch sqlite."""
        self._salts.update(self.db.execute("SELECT id, salt FROM packs"))
        self.locations()

    def packs(self) -> list[tuple[bytes, bytes, int, int]]:
        return list(self.db.execute("SELECT id, salt, size, header_offset FROM packs"))

    # -- reading blobs ------------------------------------------------------------------

    def load_blob(self, blob_id: bytes) -> bytes:
        loc = self.locations().get(blob_id)
        if loc is None:
            raise CorruptObject(blob_id.hex(), "blob is not in the index (missing from the store)")
        sealed = self.store.read_range(loc.pack, loc.offset, loc.length)
        if len(sealed) != loc.length:
            raise CorruptObject(f"pack {loc.pack.hex()}", "is shorter than its index says")
        return self.opener.open(
            self.salt(loc.pack), loc.kind, blob_id, loc.index, loc.codec, loc.raw_length, sealed
        )

    def load_blob_view(self, blob_id: bytes) -> bytes | memoryview:
        """Like ``load_blob`` (verified alike), but read and decrypted into this thread's
        buffers when the store is local: valid until this thread's next call. For a
        restore, which writes each chunk at once: no fresh pages per chunk."""
        loc = self.locations().get(blob_id)
        if loc is None:
            raise CorruptObject(blob_id.hex(), "blob is not in the index (missing from the store)")
        if not isinstance(self.store, LocalPackStore):
            return self.load_blob(blob_id)
        sealed = self.opener.buffer("sealed", loc.length)
        if self.store.read_range_into(loc.pack, loc.offset, sealed) != loc.length:
            raise CorruptObject(f"pack {loc.pack.hex()}", "is shorter than its index says")
        return self.opener.open_view(
            self.salt(loc.pack), loc.kind, blob_id, loc.index, loc.codec, loc.raw_length, sealed
        )

    def tree(self, tree_id: bytes) -> list[Node]:
        nodes = self._tree_cache.get(tree_id)
        if nodes is None:
            nodes = decode_tree(self.load_blob(tree_id), f"tree {tree_id.hex()}")
            if len(self._tree_cache) > 10000:
                self._tree_cache.clear()
            self._tree_cache[tree_id] = nodes
        return nodes

    # -- snapshots ----------------------------------------------------------------------

    def snapshots(self) -> list[SnapshotInfo]:
        out = [
            SnapshotInfo(sid, Snapshot.decode(rec, sid.hex()))
            for sid, rec in self.db.execute("SELECT id, record FROM snapshots ORDER BY time_ns, id")
        ]
        return [s for s in out if s.record.peer_id == self.keys.peer_id] or out

    def snapshots_newest_first(self) -> Iterator[SnapshotInfo]:
        """Every snapshot, newest first, each record decoded only when reached (a caller
        that wants the last few need not decode a long history). Unlike ``snapshots``, it
        does not leave out other peers' snapshots: the caller sees ``peer_id``."""
        for sid, rec in self.db.execute("SELECT id, record FROM snapshots ORDER BY time_ns DESC, id DESC"):
            yield SnapshotInfo(sid, Snapshot.decode(rec, sid.hex()))

    def resolve(self, ref: str) -> SnapshotInfo:
        snaps = self.snapshots()
        if not snaps:
            raise SnapshotNotFound(ref, "there are no snapshots yet")
        if ref == "latest":
            return snaps[-1]
        if ref.startswith("latest~") and ref[7:].isdigit():
            back = int(ref[7:])
            if back >= len(snaps):
                raise SnapshotNotFound(ref, f"there are only {len(snaps)} snapshots")
            return snaps[-1 - back]
        matches = [s for s in snaps if s.id.hex().startswith(ref.lower())]
        if not matches:
            raise SnapshotNotFound(ref)
        if len(matches) > 1:
            raise SnapshotNotFound(ref, f"the prefix matches {len(matches)} snapshots; give more of the id")
        return matches[0]

    def walk(self, tree_id: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, Node]]:
        """Every (path, node) below a tree, depth first, parents before children."""
        for node in self.tree(tree_id):
            path = prefix + b"/" + node.name
            yield path, node
            if node.subtree is not None:
                yield from self.walk(node.subtree, path)

    # -- files cache --------------------------------------------------------------------

    def load_files_cache(self) -> dict[bytes, tuple[int, int, int, int, bytes, bytes | None, int, int]]:
        return {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT path, ino, size, mtime_ns, ctime_ns, chunks, xattrs, sparse, exact FROM files_cache")
        }

    def load_dir_cache(self) -> dict[bytes, tuple[bytes, bytes, int, int]]:
        return {
            r[0]: r[1:]
            for r in self.db.execute("SELECT path, fingerprint, tree, files, bytes FROM dir_cache")
        }

    def update_files_cache(
        self, upserts: Sequence[tuple], deletes: Sequence[bytes],
        dir_upserts: Sequence[tuple[bytes, bytes, bytes, int, int]] = (),
        dir_deletes: Sequence[bytes] = (),
    ) -> None:
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.executemany("DELETE FROM files_cache WHERE path = ?", [(p,) for p in deletes])
                self.db.executemany("INSERT OR REPLACE INTO files_cache VALUES (?,?,?,?,?,?,?,?,?)", upserts)
                self.db.executemany("DELETE FROM dir_cache WHERE path = ?", [(p,) for p in dir_deletes])
                # Everything cached below a directory that is gone.
                self.db.executemany(
                    "DELETE FROM files_cache WHERE path > ? AND path < ?",
                    [(p.rstrip(b"/") + b"/", p.rstrip(b"/") + b"0") for p in dir_deletes])
                self.db.executemany("INSERT OR REPLACE INTO dir_cache VALUES (?,?,?,?,?)", dir_upserts)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
