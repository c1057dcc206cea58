"""Backup: walk, chunk, dedup, compress, encrypt, pack — on both cores, in bounded memory.

Threads and who does what:
- The calling thread walks the tree, reads files, cuts them with keyed FastCDC, hashes each
  chunk (keyed BLAKE3) and checks it against the set of known ids. Reading, cutting and
  hashing release the GIL, so this overlaps with the workers.
- Worker threads compress (zstd) and encrypt (ChaCha20-Poly1305) new blobs into packs;
  each worker owns its own open pack, so no two threads share a writer or a nonce space,
  and a full pack is made durable in the store by the worker that filled it.
- Landed packs come back to the walking thread through a queue and are indexed there, so
  sqlite is used from one thread.

Invariants:
- Back-pressure: at most ``max_inflight`` batches wait for a worker; memory stays bounded by
  that plus one open pack per worker, whatever the size of the tree.
- Nothing is indexed before its pack is durable; the snapshot record is written in a pack of
  its own only after every other pack of the backup is durable. A crash at any point
  leaves a consistent store; packs that landed are found by ``Repository.sync`` and their
  chunks are not stored again.
- The node home and the store are never backed up, even inside a protected path.
- A file that changed while it was read is read once more; if it changes again it is
  stored as read, flagged ``torn`` in its node, listed in the snapshot and never cached.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import cbor2
import pathspec
from corestate.node.engine.repo import Repository
from corestate.node.home import Config
from corestate.protocol import pack as packfmt
from corestate.protocol.objects import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SYMLINK,
    Node,
    Snapshot,
    encode_tree,
)
from pyfastcdc import FastCDC

# Files whose mtime or ctime is this close to the moment they were read may change again
# without a visible timestamp change (coarse kernel clocks): they are never cached.
RACY_NS = 2_000_000_000
BATCH_BYTES = 1 << 20
BATCH_BLOBS = 256
_O_NOATIME = getattr(os, "O_NOATIME", 0)


@dataclass(slots=True)
class BackupStats:
    """Counters the UI polls while a backup runs (plain ints: reads are racy but harmless)."""

    files: int = 0
    dirs: int = 0
    bytes_total: int = 0  # size of every file in the snapshot
    bytes_read: int = 0  # bytes read from files that were not in the files cache
    bytes_added: int = 0  # bytes of packs written to the store
    files_unchanged: int = 0
    chunks_new: int = 0
    current: bytes = b""
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    warnings: list[tuple[bytes, str]] = field(default_factory=list)
    torn: list[bytes] = field(default_factory=list)
    # Filled by an optional concurrent scan, for the ETA.
    estimate_files: int | None = None
    estimate_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class BackupResult:
    snapshot_id: bytes
    snapshot: Snapshot
    stats: BackupStats
    seconds: float


class _Landed:
    __slots__ = ("entries", "header_offset", "pack_id", "salt", "size")

    def __init__(self, pack_id: bytes, salt: bytes, size: int, header_offset: int,
                 entries: list[packfmt.BlobEntry]) -> None:
        self.pack_id, self.salt, self.size = pack_id, salt, size
        self.header_offset, self.entries = header_offset, entries


def _meta(name: bytes, kind: str, st: os.stat_result) -> Node:
    return Node(name, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)


def _xattrs(target: bytes | int) -> dict[bytes, bytes] | None:
    """Extended attributes of a path (never following a symlink) or an open fd."""
    follow = isinstance(target, int)  # fds refuse follow_symlinks=False
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        return None
    if not names:
        return None
    out = {}
    for n in names:
        try:
            out[n.encode("utf-8", "surrogateescape")] = os.getxattr(target, n, follow_symlinks=follow)
        except OSError:
            continue
    return out or None


class Backup:
    def __init__(
        self, repo: Repository, cfg: Config, *, skip_dirs: list[Path], exclude: list[str],
        stats: BackupStats | None = None, workers: int | None = None,
    ) -> None:
        self.repo = repo
        self.keys = repo.keys
        self.cfg = cfg
        self.stats = stats or BackupStats()
        self.skip: set[tuple[int, int]] = set()
        for d in skip_dirs:
            try:
                st = os.stat(d)
                self.skip.add((st.st_dev, st.st_ino))
            except OSError:
                pass
        self.spec = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.max_inflight = 2 * self.workers + 2
        self.cdc = FastCDC(
            cfg.avg_size, min_size=cfg.min_size, max_size=cfg.max_size, seed=self.keys.chunker_seed
        )
        self._known: set[bytes] = set()
        self._batch: list[tuple[str, bytes, bytes]] = []
        self._batch_bytes = 0
        self._futures: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(self.max_inflight)
        self._landed: queue.SimpleQueue[_Landed] = queue.SimpleQueue()
        self._local = threading.local()
        self._writers: list[packfmt.PackWriter] = []
        self._writers_lock = threading.Lock()
        self._cache: dict[bytes, tuple[int, int, int, int, bytes]] = {}
        self._cache_upserts: list[tuple[bytes, int, int, int, int, bytes]] = []
        self._seen: set[bytes] = set()
        self._seen_dirs: set[bytes] = set()
        self._reused_dirs: set[bytes] = set()
        self._dir_cache: dict[bytes, tuple[bytes, bytes, int, int]] = {}
        self._dir_upserts: list[tuple[bytes, bytes, bytes, int, int]] = []
        # Anything that changes how a tree is built must change every fingerprint.
        self._fp_salt = repr(("fp1", cfg.min_size, cfg.avg_size, cfg.max_size, sorted(exclude))).encode()
        self._root: bytes = b""

    # -- the walk -------------------------------------------------------------------------

    def run(self, paths: list[Path], now_ns: int | None = None) -> BackupResult:
        t0 = time.monotonic()
        start_ns = now_ns if now_ns is not None else time.time_ns()
        roots = sorted({os.fsencode(os.path.abspath(p)) for p in paths})
        # A path inside another protected path is already covered by it.
        roots = [r for r in roots if not any(r != o and r.startswith(o.rstrip(b"/") + b"/") for o in roots)]
        self._known = self.repo.known_blob_ids()
        self._cache = self.repo.load_files_cache()
        self._dir_cache = self.repo.load_dir_cache()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pack")
        try:
            root_tree = self._virtual_root(roots)
            self._submit_batch()
            for f in self._futures:
                f.result()
        except BaseException:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._drain()
            raise
        self.pool.shutdown(wait=True)
        for w in self._writers:
            if w.entries:
                self._land(w)
        self._drain()
        snap = Snapshot(
            tree=root_tree, time_ns=start_ns, hostname=socket.gethostname(), paths=roots,
            peer_id=self.keys.peer_id, files=self.stats.files, dirs=self.stats.dirs,
            size=self.stats.bytes_total, torn=self.stats.torn, errors=self.stats.errors,
        )
        record = snap.encode()
        sid = self.keys.tree_id(record)
        # The commit point: the snapshot record, in a pack of its own, after all others.
        w = packfmt.PackWriter(self.keys, os.urandom(packfmt.SALT_BYTES))
        w.add(packfmt.KIND_SNAPSHOT, sid, record)
        landed = self._write_pack(w)
        self.repo.record_pack(
            landed.pack_id, landed.salt, landed.size, landed.header_offset, landed.entries,
            [(sid, record)],
        )
        self.stats.bytes_added += landed.size
        def under(p: bytes) -> bool:
            return any(p == r or p.startswith(r.rstrip(b"/") + b"/") for r in roots)
        # A file not seen is stale unless its directory was reused whole from the cache.
        stale = [p for p in self._cache
                 if p not in self._seen and os.path.dirname(p) not in self._reused_dirs and under(p)]
        stale_dirs = [p for p in self._dir_cache if p not in self._seen_dirs and under(p)]
        self.repo.update_files_cache(self._cache_upserts, stale, self._dir_upserts, stale_dirs)
        return BackupResult(sid, snap, self.stats, time.monotonic() - t0)

    def _virtual_root(self, roots: list[bytes]) -> bytes:
        """The snapshot's root tree: each protected path under its full original path."""
        if b"/" in roots:
            tid = self._dir(b"/", b"", os.lstat(b"/"))
            return tid if tid is not None else self._emit_tree([])
        tree: dict[bytes, dict] = {}
        leaves: set[tuple[bytes, ...]] = set()
        for r in roots:
            comps = tuple(c for c in r.split(b"/") if c)
            leaves.add(comps)
            node = tree
            for c in comps:
                node = node.setdefault(c, {})
        return self._virtual(b"", (), tree, leaves)

    def _virtual(self, path: bytes, comps: tuple[bytes, ...], tree: dict, leaves: set) -> bytes:
        nodes = []
        for name, sub in tree.items():
            p = path + b"/" + name
            c = (*comps, name)
            try:
                st = os.lstat(p)
            except OSError as exc:
                self._error(p, exc)
                continue
            if c in leaves:
                self._root = p
                node = self._entry(p, name, st, b"")
            elif stat.S_ISDIR(st.st_mode):
                node = _meta(name, DIR, st)
                node.subtree = self._virtual(p, c, sub, leaves)
            else:
                node = None
            if node is not None:
                nodes.append(node)
        return self._emit_tree(nodes)

    def _excluded(self, rel: bytes, is_dir: bool) -> bool:
        if self.spec is None or not rel:
            return False
        s = os.fsdecode(rel.lstrip(b"/"))
        return self.spec.match_file(s + "/" if is_dir else s)

    def _entry(self, path: bytes, name: bytes, st: os.stat_result, rel: bytes,
               subtree: bytes | None = None) -> Node | None:
        mode = st.st_mode
        self.stats.current = path
        if stat.S_ISREG(mode):
            return self._file(path, name, st)
        if stat.S_ISDIR(mode):
            if subtree is None:
                subtree = self._dir(path, rel, st)
                if subtree is None:
                    return None
            node = _meta(name, DIR, st)
            node.xattrs = _xattrs(path)
            node.subtree = subtree
            return node
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                self._error(path, exc)
                return None
            node = _meta(name, SYMLINK, st)
            node.target = target
            return node
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = FIFO if stat.S_ISFIFO(mode) else CHARDEV if stat.S_ISCHR(mode) else BLOCKDEV
            node = _meta(name, kind, st)
            if kind != FIFO:
                node.rdev = st.st_rdev
            return node
        self.stats.warnings.append((path, "skipped: a socket or other special file"))
        return None

    def _dir(self, path: bytes, rel: bytes, st: os.stat_result) -> bytes | None:
        """The tree id of a directory, or None when it must not be backed up.

        Subdirectories are walked first: their tree ids, with the lstat of every entry,
        make this directory's fingerprint. When the fingerprint matches the one cached by
        the last backup, the cached tree is reused without building a single node; else
        the tree is built (unchanged files still come from the files cache).
        """
        if (st.st_dev, st.st_ino) in self.skip:
            self.stats.warnings.append((path, "skipped: the node home or store"))
            return None
        self.stats.dirs += 1
        self._seen_dirs.add(path)
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            self._error(path, exc)
            entries = []
        base = path.rstrip(b"/")
        items: list[tuple[bytes, bytes, bytes, os.stat_result, bytes | None]] = []
        fp: list[tuple] = []
        newest = 0
        errors_before = len(self.stats.errors) + len(self.stats.torn)
        for e in entries:
            name = e.name
            p = base + b"/" + name
            try:
                est = e.stat(follow_symlinks=False)
            except OSError as exc:
                self._error(p, exc)
                continue
            r = rel + b"/" + name
            is_dir = stat.S_ISDIR(est.st_mode)
            if self.spec is not None and self._excluded(r, is_dir):
                continue
            sub = None
            if is_dir:
                sub = self._dir(p, r, est)
                if sub is None:
                    continue
            items.append((name, p, r, est, sub))
            fp.append((name, est.st_ino, est.st_size, est.st_mtime_ns, est.st_ctime_ns,
                       est.st_mode, est.st_uid, est.st_gid, est.st_nlink, est.st_rdev, sub))
            if est.st_ctime_ns > newest:
                newest = est.st_ctime_ns
        digest = blake3.blake3(self._fp_salt + repr(fp).encode()).digest()
        cached = self._dir_cache.get(path)
        if cached is not None and cached[0] == digest and cached[1] in self._known:
            self._reused_dirs.add(path)
            self.stats.files += cached[2]
            self.stats.files_unchanged += cached[2]
            self.stats.bytes_total += cached[3]
            return cached[1]
        files0, bytes0 = self.stats.files, self.stats.bytes_total
        nodes: list[Node] = []
        for name, p, r, est, sub in items:
            if not stat.S_ISDIR(est.st_mode):
                self.stats.current = p
            node = self._entry(p, name, est, r, sub)
            if node is not None:
                nodes.append(node)
        tid = self._emit_tree(nodes)
        clean = len(self.stats.errors) + len(self.stats.torn) == errors_before
        if clean and time.time_ns() - newest > RACY_NS:
            # Counts of this directory's own files (subdirectories were counted before).
            self._dir_upserts.append(
                (path, digest, tid, self.stats.files - files0, self.stats.bytes_total - bytes0))
        return tid

    def _emit_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        tid = self.keys.tree_id(data)
        if tid not in self._known:
            self._known.add(tid)
            self._queue(packfmt.KIND_TREE, tid, data)
        return tid

    def _error(self, path: bytes, exc: OSError) -> None:
        self.stats.errors.append((path, exc.strerror or str(exc)))

    # -- files ----------------------------------------------------------------------------

    def _file(self, path: bytes, name: bytes, st: os.stat_result) -> Node | None:
        node = _meta(name, FILE, st)
        node.size = st.st_size
        if st.st_nlink > 1:
            node.inode = (st.st_dev << 64) | st.st_ino
        self._seen.add(path)
        self.stats.files += 1
        cached = self._cache.get(path)
        if cached is not None and cached[:4] == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            content, xattrs, sparse = cbor2.loads(cached[4])
            if all(c in self._known for c in content):
                node.content, node.xattrs, node.sparse = content, xattrs, sparse
                self.stats.files_unchanged += 1
                self.stats.bytes_total += st.st_size
                return node
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | _O_NOATIME)
        except PermissionError:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                self._error(path, exc)
                self.stats.files -= 1
                return None
        except OSError as exc:
            self._error(path, exc)
            self.stats.files -= 1
            return None
        try:
            for attempt in (0, 1):
                st0 = os.fstat(fd)
                if not stat.S_ISREG(st0.st_mode):
                    self.stats.warnings.append((path, "skipped: replaced by a special file while reading"))
                    self.stats.files -= 1
                    return None
                if attempt:
                    os.lseek(fd, 0, os.SEEK_SET)
                read_ns = time.time_ns()
                content, nread = self._read_chunks(fd, st0.st_size)
                st1 = os.fstat(fd)
                stable = nread == st1.st_size and (st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns) == (
                    st0.st_size, st0.st_mtime_ns, st0.st_ctime_ns)
                if stable:
                    break
            node.xattrs = _xattrs(fd)
        except OSError as exc:
            self._error(path, exc)
            self.stats.files -= 1
            return None
        finally:
            os.close(fd)
        node.content = content
        node.size = nread
        node.mode, node.uid, node.gid, node.mtime_ns = (
            stat.S_IMODE(st1.st_mode), st1.st_uid, st1.st_gid, st1.st_mtime_ns)
        node.sparse = st1.st_blocks * 512 < st1.st_size
        self.stats.bytes_total += nread
        if not stable:
            node.torn = True
            self.stats.torn.append(path)
        elif read_ns - max(st1.st_mtime_ns, st1.st_ctime_ns) > RACY_NS:
            self._cache_upserts.append((
                path, st1.st_ino, st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns,
                cbor2.dumps([content, node.xattrs, node.sparse]),
            ))
        return node

    def _read_chunks(self, fd: int, size_hint: int) -> tuple[list[bytes], int]:
        content: list[bytes] = []
        nread = 0
        if size_hint < self.cfg.min_size:
            # One read for a small file: a short read of a regular file means end of file.
            data = os.read(fd, size_hint + 1)
            if len(data) > size_hint:
                parts = [data]
                while b := os.read(fd, 1 << 20):
                    parts.append(b)
                data = b"".join(parts)
            if len(data) <= self.cfg.max_size:
                if data:
                    content.append(self._chunk(data))
                self.stats.bytes_read += len(data)
                return content, len(data)
            chunks_src = (bytes(c.data) for c in self.cdc.cut_buf(data))
        else:
            chunks_src = (bytes(c.data) for c in self.cdc.cut_stream(io.FileIO(fd, closefd=False)))
        for data in chunks_src:
            content.append(self._chunk(data))
            nread += len(data)
            self.stats.bytes_read += len(data)
        return content, nread

    def _chunk(self, data: bytes) -> bytes:
        cid = self.keys.chunk_id(data)
        if cid not in self._known:
            self._known.add(cid)
            self.stats.chunks_new += 1
            self._queue(packfmt.KIND_CHUNK, cid, data)
        return cid

    # -- packing (workers) ---------------------------------------------------------------

    def _queue(self, kind: str, blob_id: bytes, data: bytes) -> None:
        self._batch.append((kind, blob_id, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_BLOBS:
            self._submit_batch()

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._slots.acquire()
        try:
            fut = self.pool.submit(self._work, batch)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda f: self._slots.release())
        self._futures.append(fut)
        self._drain()

    def _drain(self) -> None:
        """Index packs that landed; surface the first worker failure."""
        while True:
            try:
                landed = self._landed.get_nowait()
            except queue.Empty:
                break
            self.repo.record_pack(landed.pack_id, landed.salt, landed.size, landed.header_offset, landed.entries)
            self.stats.bytes_added += landed.size
        if len(self._futures) > 4 * self.max_inflight:
            pending = []
            for f in self._futures:
                if f.done():
                    f.result()  # raises the worker's error here, in the walking thread
                else:
                    pending.append(f)
            self._futures = pending

    def _writer(self) -> packfmt.PackWriter:
        w: packfmt.PackWriter | None = getattr(self._local, "writer", None)
        if w is None:
            w = packfmt.PackWriter(
                self.keys, os.urandom(packfmt.SALT_BYTES), compression_level=self.cfg.compression_level
            )
            self._local.writer = w
            with self._writers_lock:
                self._writers.append(w)
        return w

    def _work(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        for kind, blob_id, data in batch:
            w = self._writer()
            w.add(kind, blob_id, data)
            if len(w) >= self.cfg.pack_size:
                self._local.writer = None
                self._land(w)

    def _land(self, w: packfmt.PackWriter) -> None:
        self._landed.put(self._write_pack(w))

    def _write_pack(self, w: packfmt.PackWriter) -> _Landed:
        entries = list(w.entries)
        header_offset = len(w)
        pid, data = w.finish()
        w.entries.clear()
        self.repo.store.put(pid, data)
        return _Landed(pid, w.salt, len(data), header_offset, entries)
