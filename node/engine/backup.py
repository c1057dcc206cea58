"""Backup: walk, chunk, dedup, compress, encrypt, pack — on both cores, in bounded memory.

Who does what:
- The calling thread walks the tree (scandir + lstat), decides per directory whether the
  cached tree can be reused, builds tree nodes, and submits the files that must be read.
- Forked worker processes (``workers.ProcessWorkers``) take whole files (small files in
  batches): read, cut with keyed FastCDC, hash each chunk (keyed BLAKE3), skip ids they
  know, compress (zstd) and encrypt (ChaCha20-Poly1305) new chunks into a pack of their
  own, and make a full pack durable in the store. Processes, not threads: threads were
  measured slower than one thread here, handing the GIL around every short system call.
  Each worker knows the ids indexed before the backup plus its own; a chunk first seen by
  two workers in the same run is stored twice (bounded, and harmless to correctness).
- Directories whose files are still being read wait in a post-order queue; the walking
  thread finishes them oldest first (children always before their parent), encodes their
  trees into its own pack and indexes the packs that landed (sqlite: one thread only).

Invariants:
- Bounded memory: at most ``max_inflight`` file jobs and ``max_pending`` unfinished
  directories exist at once; each worker holds one open pack and one chunk, plus buffers
  it reuses instead of allocating per file or pack: one read buffer (``WHOLE_READ_BYTES``)
  and the buffers of up to ``_SPARE_BUFFERS`` stored packs.
- Nothing is indexed before its pack is durable; the snapshot record is written in a pack of
  its own only after every other pack of the backup is durable. A crash at any point
  leaves a consistent store; packs that landed are found by ``Repository.sync`` and their
  chunks are not stored again.
- The node home and the store are never backed up, even inside a protected path.
- A file that changed while it was read is read once more; if it changes again it is
  stored as read, flagged ``torn`` in its node, listed in the snapshot and never cached.
- A directory is reused from the directory cache only when the fingerprint of every
  entry's lstat, recursively, is unchanged and its tree is still in the index.
"""

from __future__ import annotations

import bisect
import io
import itertools
import marshal
import os
import queue
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
from corestate.kernel.changes import ChangeSet
from corestate.node.engine.repo import Repository
from corestate.node.engine.store import LocalPackStore
from corestate.node.engine.workers import ProcessWorkers
from corestate.node.errors import StoreError, StoreFull
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

from corestate.errors import CoreStateError

# Files whose ctime is this close to the moment they were read (with btrfs: to the moment
# the snapshot was taken) may change again without a visible timestamp change (coarse
# kernel clocks): the files cache never takes their stat as proof of their content.
RACY_NS = 2_000_000_000
# Longer than the kernel's coarse clock tick (1-10 ms, by HZ) that stamps file times.
TICK_NS = 20_000_000
SMALL_BATCH_BYTES = 4 << 20
# Content probes for the anomaly model (node/core/anomaly/features.py): blocks sampled per
# file, and the CPU they may take. A file whose cheap signs point at encryption (see
# ``_wants_probe``, judged by the worker that read it) is always probed; of the others, the
# first PROBE_FREE per worker, then only while probing stays under PROBE_SHARE of the
# workers' reading time (target: <= 3% extra CPU on a backup, tests/bench/bench_anomaly.py).
# The probe itself runs in the parent, on the file's blocks still in the page cache: in a
# freshly forked worker the same probe costs ~6x more (copy-on-write faults, cold caches).
PROBE_BLOCKS = 8
PROBE_FREE = 4
HEAD_BYTES = 512  # a file's first bytes, kept from its read for the format check
PROBE_SHARE = 0.005
SMALL_BATCH_FILES = 128
# Files up to this size are read whole into a buffer each worker reuses, then cut.
WHOLE_READ_BYTES = 8 << 20
# Pack buffers kept for reuse per process: one filling, one waiting and one being written
# are in flight at most (see _WriteBehind), so two spares cover the cycle.
_SPARE_BUFFERS = 2
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(slots=True)
class BackupStats:
    """Counters the UI polls while a backup runs."""

    files: int = 0
    dirs: int = 0
    bytes_total: int = 0  # size of every file in the snapshot
    bytes_read: int = 0  # bytes read from files that were not in the caches
    bytes_added: int = 0  # bytes of packs written to the store
    files_unchanged: int = 0
    chunks_new: int = 0
    bytes_new: int = 0  # plaintext bytes of the new chunks
    current: bytes = b""
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    warnings: list[tuple[bytes, str]] = field(default_factory=list)
    torn: list[bytes] = field(default_factory=list)
    paths_visited: int = 0
    # The change journal: None = not offered; else ("used", n changed paths) or
    # ("full walk", reason).
    journal: tuple[str, str] | None = None
    # Filled by an optional concurrent scan, for the ETA.
    estimate_files: int | None = None
    estimate_bytes: int | None = None


@dataclass(slots=True)
class FileChange:
    """What the anomaly model learns of one file read in this backup (new or changed),
    from what the backup did anyway: no byte is read for it but the probe's few blocks."""

    path: bytes  # the original path
    size: int
    mtime_ns: int
    old_size: int | None  # None: a new file (the files cache did not know it)
    kept: float | None  # the share of the old version's chunks still in the file
    new_bytes: int  # plaintext bytes of chunks first stored now
    stored_bytes: int  # the same after compression: the zstd probe's verdict
    probe: list[Any] | None  # a ContentProbe record, or None when the budget said no
    content: list[bytes]  # the chunk ids
    # The content changed while size and mtime did not (the cache vouched for the old
    # content: its stat was settled): bit rot, or a writer that put the mtime back.
    silent: bool = False

    @property
    def digest(self) -> bytes:
        """Of the content ids: same content, same digest."""
        return content_digest(self.content)


class Observer:
    """Receives what a backup sees change, on the walking thread (it may use sqlite)."""

    def file(self, change: FileChange) -> None:
        pass

    def new_file(self, path: bytes, size: int, mtime_ns: int, new_bytes: int, stored_bytes: int,
                 content: list[bytes]) -> None:
        """A file the files cache did not know and no probe was taken of: the commonest
        call by far (every file of a first backup), so an observer may take it without the
        record. By default, the same as ``file``."""
        self.file(FileChange(path=path, size=size, mtime_ns=mtime_ns, old_size=None, kept=None,
                             new_bytes=new_bytes, stored_bytes=stored_bytes, probe=None,
                             content=content))

    def gone(self, path: bytes, size: int, digest: bytes) -> None:
        """A file of the last backup that is no longer there."""


def content_digest(ids: list[bytes] | bytes) -> bytes:
    return blake3.blake3(ids if isinstance(ids, bytes) else b"".join(ids)).digest(16)


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


@dataclass(slots=True)
class _Read:
    """What a worker learned reading one file."""

    content: list[bytes] = field(default_factory=list)
    size: int = 0
    st: os.stat_result | None = None
    xattrs: dict[bytes, bytes] | None = None
    torn: bool = False
    read_ns: int = 0
    error: str | None = None
    warning: str | None = None
    new_chunks: int = 0
    new_bytes: int = 0
    new_stored: int = 0  # new_bytes after compression (what the pack writer kept)
    probe: list[Any] | None = None  # the anomaly model's content probe (a record)
    busy_ns: int = 0  # the worker's time reading it (the probing budget's measure)
    # Whether the cheap signs ask for a probe whatever the budget (None: not to be probed:
    # no observer, an error, a part of a split read).
    wants_probe: bool | None = None
    cacheable: bool = True
    bytes_read: int | None = None  # when less than size was read (block-level increments)
    # One part of a block-level increment split over workers: where it began and ended,
    # and where each of its chunks begins; failed: its bytes did not add up.
    span: tuple[int, int] | None = None
    offsets: list[int] | None = None
    failed: bool = False


@dataclass(slots=True)
class _Pending:
    """A directory whose tree waits for its files to be read."""

    path: bytes
    digest: bytes
    nodes: list[Node]
    reads: list[tuple[Node, bytes, Future[list[_Read]], int]]  # node, path, job, index in job
    subdirs: list[tuple[Node, _Pending]]
    newest_ns: int
    clean: bool
    files: int  # files already known (cache hits) among the direct entries
    size: int
    tree: bytes | None = None
    batched: int = 0  # bit w: some of its files wait in worker w's unsent batch


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


def _split_ids(blob: bytes) -> list[bytes]:
    return [blob[i:i + 32] for i in range(0, len(blob), 32)]


class Backup:
    def __init__(
        self, repo: Repository, cfg: Config, *, skip_dirs: list[Path], exclude: list[str],
        stats: BackupStats | None = None, workers: int | None = None,
        state_dir: Path | None = None,
        allow_providers: tuple[str, ...] = ("btrfs", "reflink", "plain"),
        changes: Callable[[], ChangeSet] | None = None,
        check: Callable[[], None] | None = None,
        observer: Observer | None = None,
        on_pack: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        self.repo = repo
        self.observer = observer
        # Told of each pack once it is durable and indexed, with whether it holds chunks
        # only (a data pack), from the walking thread: a mesh node's upload starts there.
        # It may block (back-pressure when holders are slow); what it raises stops the run.
        self._on_pack = on_pack
        # Called before each file is read; what it raises stops the walk like any error
        # there (packs already landed stay, no snapshot is written): a cancel's safe point.
        self._check = check
        # The change journal's answer, asked once per protected path right after its
        # snapshot is open: directories it does not name (nor anything below them) are
        # taken whole from the directory cache without being listed.
        self._change_source = changes
        self._changed: set[bytes] | None = None
        self._dirty: set[bytes] = set()
        self._totals: dict[bytes, tuple[int, int]] | None = None
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
        if exclude:
            import pathspec  # slow to import; only when there are patterns
            self.spec: pathspec.GitIgnoreSpec | None = pathspec.GitIgnoreSpec.from_lines(exclude)
        else:
            self.spec = None
        # One more worker than cores: a worker waiting on a read or a pack write leaves
        # its core to the others (measured: 3 workers beat 2 on 2 cores).
        self.workers = workers or (os.cpu_count() or 2) + 1
        # Streaming (``on_pack``), a shorter window: what the workers hold in flight lands on
        # disk even while slow holders hold the walk back, so it bounds the owner's disk.
        self.max_inflight = (8 if on_pack is None else 2) * self.workers
        self.max_pending = 512
        self._cdc_args = (cfg.avg_size, cfg.min_size, cfg.max_size, self.keys.chunker_seed)
        self._known: set[bytes] = set()
        self._new_chunks = 0
        self._new_bytes = 0
        self._new_stored = 0
        # In the parent: the probing budget (see PROBE_SHARE).
        self._probes = 0
        self._probe_ns = 0
        self._busy_ns = 0
        self._head = b""  # in a worker: the first bytes of the file it read last
        self.state_dir = state_dir
        self.allow_providers = allow_providers
        self.sessions: list = []
        self._clone_sessions: list[tuple[bytes, Any]] = []  # reflink: read through clones
        self._block_session: Any = None  # btrfs: changed ranges of large files
        self._frozen_ns = 0  # btrfs: a moment no later than the snapshot's
        self.providers: set[str] = set()
        self._walk_prefix: bytes | None = None
        self._orig_prefix = b""
        self._root_dev = 0
        self._root_tag = 0
        self._slots = threading.Semaphore(self.max_inflight)
        self._landed: queue.SimpleQueue[_Landed] = queue.SimpleQueue()
        self._write_behind: _WriteBehind | None = None  # in workers: packs are written aside
        self._local = threading.local()
        self._writers: list[packfmt.PackWriter] = []
        self._writers_lock = threading.Lock()
        # Buffers of packs already stored, for the next packs (see _write_pack).
        self._spare: list[bytearray] = []
        self._pending: deque[_Pending] = deque()
        # Small files wait in one batch per worker (see _route).
        self._batches: list[list[tuple[bytes, os.stat_result, None]]] = [[] for _ in range(self.workers)]
        self._promises: list[list[tuple[Node, bytes, int, _Pending | None]]] = [
            [] for _ in range(self.workers)]
        self._batch_bytes = [0] * self.workers
        self._cache: dict[bytes, tuple[int, int, int, int, bytes, bytes | None, int, int]] = {}
        self._cache_upserts: list[tuple] = []
        self._seen: set[bytes] = set()
        self._seen_dirs: set[bytes] = set()
        self._reused_dirs: set[bytes] = set()
        self._dir_cache: dict[bytes, tuple[bytes, bytes, int, int]] = {}
        self._dir_upserts: list[tuple[bytes, bytes, bytes, int, int]] = []
        # Anything that changes how a tree is built must change every fingerprint (and void
        # a journal token taken under other settings: see fingerprint_salt).
        self._fp_salt = repr(("fp3", cfg.min_size, cfg.avg_size, cfg.max_size, sorted(exclude))).encode()

    def read_paths(self) -> set[bytes]:
        """The files this run read and cached (a check of cache hits can skip them)."""
        return {u[0] for u in self._cache_upserts}

    @property
    def fingerprint_salt(self) -> bytes:
        return blake3.blake3(self._fp_salt).digest()

    # -- the run ------------------------------------------------------------------------

    def run(self, paths: list[Path], now_ns: int | None = None) -> BackupResult:
        t0 = time.monotonic()
        start_ns = now_ns if now_ns is not None else time.time_ns()
        roots = sorted({os.fsencode(os.path.abspath(p)) for p in paths})
        # A path inside another protected path is already covered by it.
        roots = [r for r in roots if not any(r != o and r.startswith(o.rstrip(b"/") + b"/") for o in roots)]
        self._known = self.repo.known_blob_ids()
        self._cache_loaded = False  # loaded when the first directory must be rebuilt
        self._dir_cache = self.repo.load_dir_cache()
        self._readers: ProcessWorkers | None = None  # started when a file must be read
        try:
            root_tree = self._virtual_root(roots)
            if self._readers is not None:
                self._readers.close()
        except BaseException:
            if self._readers is not None:
                self._readers.close(flush=False)
            self._drain()
            for session in self.sessions:
                session.close(keep_as_parent=False)
            raise
        for w in self._writers:
            if w.entries:
                self._land(w)
        self._drain()
        snap = Snapshot(
            tree=root_tree, time_ns=start_ns, hostname=socket.gethostname(), paths=roots,
            peer_id=self.keys.peer_id, files=self.stats.files, dirs=self.stats.dirs,
            size=self.stats.bytes_total, torn=self.stats.torn, errors=self.stats.errors,
            provider="+".join(sorted(self.providers)) or "plain",
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
        if self._on_pack is not None:
            self._on_pack(landed.pack_id, False)

        def under(p: bytes) -> bool:
            return any(p == r or p.startswith(r.rstrip(b"/") + b"/") for r in roots)

        def covered(p: bytes) -> bool:
            """Below a directory reused whole from the cache (not listed, still there)."""
            d = os.path.dirname(p)
            while d not in (b"/", b""):
                if d in self._reused_dirs:
                    return True
                d = os.path.dirname(d)
            return False
        # A file or folder not seen is stale unless a folder above it was reused whole.
        # (Files below vanished directories go with them, by prefix, in update_files_cache.)
        stale = [p for p in self._cache if p not in self._seen and under(p) and not covered(p)]
        if self.observer is not None:
            for p in stale:
                row = self._cache[p]
                self.observer.gone(p, row[1], content_digest(row[4]))
        stale_dirs = [p for p in self._dir_cache
                      if p not in self._seen_dirs and under(p) and not covered(p)]
        self.repo.update_files_cache(self._cache_upserts, stale, self._dir_upserts, stale_dirs)
        # Only now, with the snapshot recorded, may a btrfs snapshot become the parent.
        for session in self.sessions:
            session.close(keep_as_parent=True)
        return BackupResult(sid, snap, self.stats, time.monotonic() - t0)

    def _virtual_root(self, roots: list[bytes]) -> bytes:
        """The snapshot's root tree: each protected path under its full original path."""
        if b"/" in roots:
            _, ref = self._dir(b"/", b"", os.lstat(b"/"))
            self._finish_all()
            return self._tree_of(ref) if ref is not None else self._emit_tree([])
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
            node: Node | None = None
            if c in leaves:
                walk = self._open_session(p)
                self._ask_journal()
                try:
                    wst = os.lstat(walk) if walk != p else st
                except OSError as exc:
                    self._error(p, exc)
                    continue
                self._root_dev = wst.st_dev
                self._root_tag = int.from_bytes(blake3.blake3(p).digest(4), "little") << 96
                if stat.S_ISDIR(wst.st_mode):
                    _, ref = self._dir(walk, b"", wst)
                    self._walked()
                    self._finish_all()
                    if ref is not None:
                        node = _meta(name, DIR, wst)
                        node.xattrs = _xattrs(walk)
                        node.subtree = self._tree_of(ref)
                elif stat.S_ISREG(wst.st_mode):
                    pend = _Pending(path, b"", [], [], [], 0, False, 0, 0)
                    node = self._file_node(walk, name, wst, pend)
                    self._walked()
                    self._flush_batch()
                    self._finish(pend)
                    node = node if node in pend.nodes else None
                else:
                    node = self._other(walk, name, wst)
                self._walk_prefix = None
            elif stat.S_ISDIR(st.st_mode):
                node = _meta(name, DIR, st)
                node.subtree = self._virtual(p, c, sub, leaves)
            if node is not None:
                nodes.append(node)
        return self._emit_tree(nodes)

    # -- directories (walking thread) -----------------------------------------------------

    def _excluded(self, rel: bytes, is_dir: bool) -> bool:
        assert self.spec is not None
        s = os.fsdecode(rel.lstrip(b"/"))
        return self.spec.match_file(s + "/" if is_dir else s)

    def _dir(self, path: bytes, rel: bytes, st: os.stat_result) -> tuple[bytes, bytes | _Pending | None]:
        """(fingerprint, tree id or pending tree) of a directory; None: not backed up.

        The fingerprint covers the lstat of every entry and, recursively, the fingerprints
        of subdirectories, so it needs no file to be read. When it matches the one cached
        by the last backup, the cached tree is reused without building a single node.
        """
        if (st.st_dev, st.st_ino) in self.skip:
            self.stats.warnings.append((self._key(path), "skipped: the node home, store or snapshots"))
            return b"", None
        self.stats.dirs += 1
        key = self._key(path)
        self._seen_dirs.add(key)
        if self._changed is not None and not self._touched(key):
            hit = self._dir_cache.get(key)
            if hit is not None and hit[1] in self._known:
                # Not listed: count the whole subtree from the cache rows below it.
                files, size = self._subtree_totals().get(key, (hit[2], hit[3]))
                self._reused_dirs.add(key)
                self.stats.files += files
                self.stats.files_unchanged += files
                self.stats.bytes_total += size
                return hit[0], hit[1]
        clean = True
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            self._error(key, exc)
            entries = []
            clean = False
        base = path.rstrip(b"/")
        items: list[tuple[bytes, bytes, os.stat_result, bytes | _Pending | None]] = []
        fp: list[tuple] = []
        newest = 0
        for e in entries:
            name = e.name
            p = base + b"/" + name
            self.stats.paths_visited += 1
            try:
                est = e.stat(follow_symlinks=False)
            except OSError as exc:
                self._error(self._key(p), exc)
                clean = False
                continue
            is_dir = stat.S_ISDIR(est.st_mode)
            if self.spec is not None and self._excluded(rel + b"/" + name, is_dir):
                continue
            sub: bytes | _Pending | None = None
            sub_fp = b""
            if is_dir:
                sub_fp, sub = self._dir(p, rel + b"/" + name, est)
                if sub is None:
                    continue
            items.append((name, p, est, sub))
            fp.append((name, est.st_ino, est.st_size, est.st_mtime_ns, est.st_ctime_ns,
                       est.st_mode, est.st_uid, est.st_gid, est.st_nlink, est.st_rdev, sub_fp))
            if est.st_ctime_ns > newest:
                newest = est.st_ctime_ns
        # marshal: fast and deterministic for one Python version (another version only
        # costs a cache miss).
        digest = blake3.blake3(self._fp_salt + marshal.dumps(fp)).digest()
        cached = self._dir_cache.get(key)
        if clean and cached is not None and cached[0] == digest and cached[1] in self._known:
            self._reused_dirs.add(key)
            self.stats.files += cached[2]
            self.stats.files_unchanged += cached[2]
            self.stats.bytes_total += cached[3]
            return digest, cached[1]
        pend = _Pending(key, digest, [], [], [], newest, clean, 0, 0)
        for name, p, est, sub in items:
            if sub is not None:
                node = _meta(name, DIR, est)
                node.xattrs = _xattrs(p)
                if isinstance(sub, _Pending):
                    pend.subdirs.append((node, sub))
                else:
                    node.subtree = sub
                pend.nodes.append(node)
            elif stat.S_ISREG(est.st_mode):
                self._file_node(p, name, est, pend)
            else:
                other = self._other(p, name, est)
                if other is not None:
                    pend.nodes.append(other)
        self._pending.append(pend)
        while len(self._pending) > self.max_pending:
            self._finish(self._pending.popleft())
        self._drain()
        return digest, pend

    def _ask_journal(self) -> None:
        if self._change_source is None:
            return
        cs = self._change_source()
        if cs.paths is None:
            self._changed = None
            self.stats.journal = ("full walk", cs.reason)
            return
        self._changed = {os.fsencode(p) for p in cs.paths}
        dirty = set()
        for p in self._changed:
            while p not in dirty and p not in (b"/", b""):
                dirty.add(p)
                p = os.path.dirname(p)
        self._dirty = dirty
        self.stats.journal = ("used", f"{len(self._changed)} changed path(s)")

    def _subtree_totals(self) -> dict[bytes, tuple[int, int]]:
        """Files and bytes of each cached directory's whole subtree (cache rows hold a
        directory's own files only)."""
        if self._totals is None:
            totals: dict[bytes, tuple[int, int]] = {}
            for p, (_, _, files, size) in self._dir_cache.items():
                q = p
                while True:
                    f, b = totals.get(q, (0, 0))
                    totals[q] = (f + files, b + size)
                    if q in (b"/", b""):
                        break
                    q = os.path.dirname(q)
            self._totals = totals
        return self._totals

    def _touched(self, key: bytes) -> bool:
        """Must this directory be listed: it, or something below or above it, changed."""
        if key in self._dirty:
            return True
        d = os.path.dirname(key)
        while d not in (b"/", b""):
            if d in self._changed:  # type: ignore[operator]
                return True  # a changed (maybe renamed) folder: walk its whole subtree
            d = os.path.dirname(d)
        return False

    def _key(self, walk_path: bytes) -> bytes:
        """The original path of something walked inside a snapshot (cache keys, reports)."""
        w = self._walk_prefix
        if w is None or not walk_path.startswith(w):
            return walk_path
        return self._orig_prefix + walk_path[len(w):]

    def _open_session(self, path: bytes) -> bytes:
        """Open the kernel snapshot session for a protected path; return where to walk."""
        self._walk_prefix = None
        self._block_session = None
        if self.state_dir is None:
            self.providers.add("plain")
            return path
        from corestate.kernel.snapshot import open_snapshot
        self._frozen_ns = time.time_ns()
        session = open_snapshot(Path(os.fsdecode(path)), self.state_dir, allow=self.allow_providers)
        self.sessions.append(session)
        self.providers.add(session.provider)
        for ex in session.exclude:
            try:
                est = os.lstat(ex)
                self.skip.add((est.st_dev, est.st_ino))
            except OSError:
                pass
        walk = os.fsencode(session.root)
        if session.provider == "reflink":
            self._clone_sessions.append((walk, session))
            if self._readers is not None:
                # Workers forked before this session know nothing of it: start new ones.
                self._readers.close()
                self._readers = None
        self._block_session = session if session.provider == "btrfs" else None
        if walk != path:
            self._walk_prefix, self._orig_prefix = walk, path
        return walk

    def _walked(self) -> None:
        """The protected path is listed and every read is planned: tell its session (a
        btrfs one lets go of the previous parent while the reads go on)."""
        if self.sessions:
            self.sessions[-1].walked()

    def _other(self, path: bytes, name: bytes, st: os.stat_result) -> Node | None:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                self._error(self._key(path), exc)
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
        self.stats.warnings.append((self._key(path), "skipped: a socket or other special file"))
        return None

    def _file_node(self, path: bytes, name: bytes, st: os.stat_result, pend: _Pending) -> Node:
        node = _meta(name, FILE, st)
        node.size = st.st_size
        if st.st_nlink > 1:
            # Stable across snapshots (a btrfs snapshot has a new st_dev each time): the
            # protected path, the device only when it is not the root's, the inode.
            dev = 0 if st.st_dev == self._root_dev else st.st_dev
            node.inode = self._root_tag | (dev << 64) | st.st_ino
        key = self._key(path)
        self._seen.add(key)
        pend.nodes.append(node)
        if not self._cache_loaded:
            self._cache = self.repo.load_files_cache()
            self._cache_loaded = True
        cached = self._cache.get(key)
        if cached is not None and cached[7] and cached[:4] == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            content = _split_ids(cached[4])
            if all(c in self._known for c in content):
                node.content = content
                node.xattrs = None if cached[5] is None else _decode_xattrs(cached[5])
                node.sparse = bool(cached[6])
                pend.files += 1
                pend.size += st.st_size
                self.stats.files += 1
                self.stats.files_unchanged += 1
                self.stats.bytes_total += st.st_size
                return node
        # To be read by a worker: big files alone, small ones in batches.
        if self._check is not None:
            self._check()
        self.stats.current = key
        if st.st_size >= SMALL_BATCH_BYTES:
            plan = self._increment_plan(path, st, cached)
            self._take_slot()
            fut = self._submit_large(path, st, plan)
            fut.add_done_callback(lambda f: self._slots.release())
            pend.reads.append((node, key, fut, 0))
        else:
            w = self._route(st)
            batch, promise = self._batches[w], self._promises[w]
            batch.append((path, st, None))
            promise.append((node, key, len(batch) - 1, pend))
            pend.batched |= 1 << w
            self._batch_bytes[w] += st.st_size
            if self._batch_bytes[w] >= SMALL_BATCH_BYTES or len(batch) >= SMALL_BATCH_FILES:
                self._flush_batch(w)
        return node

    def readers(self) -> ProcessWorkers:
        """The worker processes, forked on first use: a backup with nothing new to read
        (the common case) forks none."""
        if self._readers is None:
            self._readers = ProcessWorkers(
                self.workers, self._read_files, self._harvest, self._finish_worker,
                _describe_error, _rebuild_error, self._landed.put, start=self._worker_start,
            )
        return self._readers

    def _worker_start(self) -> None:
        """In a new worker: forget the parent's open pack (never reuse its salt and nonces)
        and the packs it had landed but not yet indexed."""
        self._local = threading.local()
        self._writers = []
        self._spare = []
        self._landed = queue.SimpleQueue()
        self._write_behind = _WriteBehind(self._write_pack, self._landed.put)

    def _route(self, st: os.stat_result) -> int:
        """The worker for a file. Each worker dedups against what it has seen, so files of
        one size (identical copies are) go to one worker and are stored once."""
        return (st.st_size * 0x9E3779B1 >> 7) % self.workers

    def _flush_batch(self, w: int | None = None) -> None:
        for i in range(self.workers) if w is None else (w,):
            batch, promises = self._batches[i], self._promises[i]
            if not batch:
                continue
            self._batches[i], self._promises[i], self._batch_bytes[i] = [], [], 0
            self._take_slot()
            fut = self.readers().submit(batch, i)
            fut.add_done_callback(lambda f: self._slots.release())
            for node, path, index, pend in promises:
                assert pend is not None
                pend.reads.append((node, path, fut, index))
                pend.batched &= ~(1 << i)

    def _take_slot(self) -> None:
        """A slot for one more file job. Streaming, the packs landed so far are handed on
        first (``_drain``): when the upload is behind, that blocks, and no new job starts."""
        if self._on_pack is None:
            self._slots.acquire()
            return
        while True:
            self._drain()
            if self._slots.acquire(timeout=0.05):
                return

    def _finish_all(self) -> None:
        self._flush_batch()
        while self._pending:
            self._finish(self._pending.popleft())

    def _finish(self, pend: _Pending) -> None:
        """Wait for a directory's files, then encode its tree (children are done first)."""
        if pend.tree is not None:
            return
        # Its files may still wait in a batch (a bit per worker: scanning the batches
        # for each directory cost a scan of up to SMALL_BATCH_FILES entries per worker).
        for i in range(self.workers):
            if pend.batched >> i & 1:
                self._flush_batch(i)
        drop: set[int] = set()
        files, size = pend.files, pend.size
        for node, path, fut, index in pend.reads:
            r = fut.result()[index]
            if r.error is None:
                self.stats.bytes_read += r.size if r.bytes_read is None else r.bytes_read
            self.stats.chunks_new += r.new_chunks
            self.stats.bytes_new += r.new_bytes
            if r.error is not None or r.st is None:
                if r.error is not None:
                    self.stats.errors.append((path, r.error))
                    pend.clean = False
                else:
                    self.stats.warnings.append((path, r.warning or "skipped"))
                drop.add(id(node))
                continue
            st1 = r.st
            node.content, node.size, node.xattrs = r.content, r.size, r.xattrs
            node.mode, node.uid, node.gid, node.mtime_ns = (
                stat.S_IMODE(st1.st_mode), st1.st_uid, st1.st_gid, st1.st_mtime_ns)
            node.sparse = st1.st_blocks * 512 < st1.st_size
            files += 1
            size += r.size
            self.stats.files += 1
            self.stats.bytes_total += r.size
            if r.torn:
                node.torn = True
                self.stats.torn.append(path)
                pend.clean = False
            elif r.cacheable:
                # Racy in a btrfs snapshot: the entry still describes the file as the
                # snapshot (the next parent) holds it, the base a block-level increment
                # needs; it is just not proof enough to skip reading the file.
                exact = self._settled(st1.st_ctime_ns, r.read_ns)
                if exact or self._block_session is not None:
                    self._cache_upserts.append((
                        path, st1.st_ino, st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns,
                        b"".join(r.content), _encode_xattrs(node.xattrs), int(node.sparse),
                        int(exact),
                    ))
            if self.observer is not None:
                self._observe(path, node, r)
            if st1.st_ctime_ns > pend.newest_ns:
                pend.newest_ns = st1.st_ctime_ns
        for node, child in pend.subdirs:
            if child.tree is None:
                self._finish(child)
            node.subtree = child.tree
        nodes = [n for n in pend.nodes if id(n) not in drop] if drop else pend.nodes
        pend.tree = self._emit_tree(nodes)
        if pend.clean and self._settled(pend.newest_ns, time.time_ns()):
            self._dir_upserts.append((pend.path, pend.digest, pend.tree, files, size))
        pend.reads.clear()
        pend.subdirs.clear()
        pend.nodes = []
        self._drain()

    def _observe(self, path: bytes, node: Node, r: _Read) -> None:
        assert self.observer is not None
        self._busy_ns += r.busy_ns
        if r.wants_probe is not None:
            budget = self._probes < PROBE_FREE * self.workers or self._probe_ns < PROBE_SHARE * self._busy_ns
            if budget or r.wants_probe:
                t1 = time.perf_counter_ns()
                r.probe = _probe(path, r.size)
                if budget:
                    self._probes += 1
                    self._probe_ns += time.perf_counter_ns() - t1
        old = self._cache.get(path)
        if old is None and r.probe is None:
            self.observer.new_file(path, r.size, node.mtime_ns, r.new_bytes, r.new_stored, r.content)
            return
        kept: float | None = None
        silent = False
        if old is not None:
            old_ids = _split_ids(old[4])
            if old_ids:
                now = set(r.content)
                kept = sum(1 for x in old_ids if x in now) / len(old_ids)
            silent = bool(old[7]) and old[1] == r.size and old[2] == node.mtime_ns and b"".join(r.content) != old[4]
        self.observer.file(FileChange(
            path=path, size=r.size, mtime_ns=node.mtime_ns, old_size=None if old is None else old[1],
            kept=kept, new_bytes=r.new_bytes, stored_bytes=r.new_stored, probe=r.probe,
            content=r.content, silent=silent))

    def _settled(self, ctime_ns: int, seen_ns: int) -> bool:
        """Whether a change at ``ctime_ns``, seen at ``seen_ns``, is old enough that any later
        change must move the timestamps (a btrfs snapshot is seen when it was taken)."""
        if self._block_session is not None:
            seen_ns = self._frozen_ns
        return seen_ns - ctime_ns > RACY_NS

    def _tree_of(self, ref: bytes | _Pending) -> bytes:
        if isinstance(ref, _Pending):
            self._finish(ref)
            assert ref.tree is not None
            return ref.tree
        return ref

    def _emit_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        tid = self.keys.tree_id(data)
        if tid not in self._known:
            self._known.add(tid)
            self._pack(packfmt.KIND_TREE, tid, data)
        return tid

    def _error(self, path: bytes, exc: OSError) -> None:
        self.stats.errors.append((path, exc.strerror or str(exc)))

    def _drain(self) -> None:
        """Index packs that landed (walking thread only: sqlite lives here)."""
        while True:
            try:
                landed = self._landed.get_nowait()
            except queue.Empty:
                break
            self.repo.record_pack(landed.pack_id, landed.salt, landed.size, landed.header_offset, landed.entries)
            self.stats.bytes_added += landed.size
            if self._on_pack is not None:
                self._on_pack(landed.pack_id, all(e.kind == packfmt.KIND_CHUNK for e in landed.entries))

    # -- files (worker threads) -----------------------------------------------------------

    def _increment_plan(self, path: bytes, st: os.stat_result, cached: tuple | None) -> tuple | None:
        """For a large changed file on btrfs: its old chunks (offset, length, id) and the
        byte ranges written since the parent snapshot, so a worker re-reads only around
        them. None: read it all (no parent, another inode, or unknown chunks)."""
        session = self._block_session
        if session is None or cached is None or cached[0] != st.st_ino:
            return None
        walk = Path(os.fsdecode(path))
        # The cached chunks must describe the file as the parent snapshot holds it, or
        # "unchanged since the parent" would not mean "as cached".
        parent = getattr(session, "parent_root", None)
        try:
            pst = os.stat(parent / walk.relative_to(session.root)) if parent is not None else None
        except (OSError, ValueError):
            pst = None
        if pst is None or (pst.st_ino, pst.st_size, pst.st_mtime_ns, pst.st_ctime_ns) != cached[:4]:
            return None
        ranges = session.block_changes(walk)
        if ranges is None:
            return None
        ids = _split_ids(cached[4])
        lengths = self.repo.raw_lengths(ids)
        old, offset = [], 0
        for cid in ids:
            n = lengths.get(cid)
            if n is None:
                return None
            old.append((offset, n, cid))
            offset += n
        if offset != cached[1]:
            return None
        return old, sorted(ranges)

    def _submit_large(self, path: bytes, st: os.stat_result, plan: tuple | None) -> Future[list[_Read]]:
        """Queue a large file. A block-level increment with enough to read is split at old
        chunk boundaries far from any change, one part per worker, and put together again
        here; if the parts do not fit, the file is read whole."""
        home = self._route(st)
        parts = self._split_plan(st.st_size, *plan) if plan is not None else None
        if not parts:
            return self.readers().submit([(path, st, plan)], home)
        futs = [self.readers().submit([(path, st, part)], (home + i) % self.workers)
                for i, part in enumerate(parts)]
        whole: Future[list[_Read]] = Future()
        left = [len(futs)]
        lock = threading.Lock()

        def chain(f: Future[list[_Read]]) -> None:
            exc = f.exception()
            if exc is not None:
                whole.set_exception(exc)
            else:
                whole.set_result(f.result())

        def part_done(_: Future[list[_Read]]) -> None:  # in the workers' collector thread
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                r = _stitch([f.result()[0] for f in futs], st.st_size)
            except BaseException as exc:
                whole.set_exception(exc)
                return
            if r is not None:
                whole.set_result([r])
            else:
                self.readers().submit([(path, st, None)], home).add_done_callback(chain)

        for f in futs:
            f.add_done_callback(part_done)
        return whole

    def _split_plan(self, size: int, old: list[tuple[int, int, bytes]],
                    ranges: list[tuple[int, int]]) -> list[tuple] | None:
        """Parts of an increment plan for the workers to read side by side, or None.

        Each part is (old chunks from its start on, its changed ranges, (start, stop, old
        end)): start and stop are old chunk boundaries in a gap between changes, wide
        enough that the part before has found its way back to the old boundaries long
        before it (content-defined cuts resynchronise within a chunk or two).
        """
        changed = sum(n for _, n in ranges)
        if self.workers < 2 or len(ranges) < 2 or changed < SMALL_BATCH_BYTES:
            return None
        margin = 16 * self.cfg.avg_size
        target = changed / self.workers
        old_end = old[-1][0] + old[-1][1]
        starts = [o for o, _, _ in old]
        cuts: list[tuple[int, int]] = []  # (index of the first range of a part, its start)
        acc = 0
        for i in range(1, len(ranges)):
            acc += ranges[i - 1][1]
            if acc < target * (len(cuts) + 1) or len(cuts) == self.workers - 1:
                continue
            prev_end, next_start = sum(ranges[i - 1]), ranges[i][0]
            k = bisect.bisect_left(starts, (prev_end + next_start) // 2)
            if k < len(starts) and prev_end + margin <= starts[k] <= next_start:
                cuts.append((i, starts[k]))
        if not cuts:
            return None
        parts = []
        bounds = [(0, 0), *cuts, (len(ranges), size)]
        for (ri, start), (rj, stop) in itertools.pairwise(bounds):
            first = bisect.bisect_left(starts, start)
            last = bisect.bisect_left(starts, stop) + 64  # room to resynchronise past stop
            parts.append((old[first:last], ranges[ri:rj], (start, stop, old_end)))
        return parts

    def _read_files(self, files: list[tuple[bytes, os.stat_result, tuple | None]]) -> list[_Read]:
        out = []
        for path, st, plan in files:
            before, before_bytes, before_stored = self._new_chunks, self._new_bytes, self._new_stored
            t0 = time.perf_counter_ns()
            r = None
            self._head = b""
            if plan is not None:
                r = self._read_increment(path, st, *plan)
                if r is None and len(plan) > 2:  # a part: the whole file is not ours to read
                    r = _Read(failed=True)
            if r is None:
                r = self._read_file(path, st)
            r.new_chunks = self._new_chunks - before
            r.new_bytes = self._new_bytes - before_bytes
            r.new_stored = self._new_stored - before_stored
            r.busy_ns = time.perf_counter_ns() - t0
            if self.observer is not None and r.st is not None and r.error is None and r.span is None:
                r.wants_probe = _wants_probe(path, r, self._head)
            out.append(r)
        return out

    def _harvest(self) -> list[_Landed]:
        """In a worker: the packs it landed since the last call."""
        out = []
        while True:
            try:
                out.append(self._landed.get_nowait())
            except queue.Empty:
                return out

    def _finish_worker(self) -> list[_Landed]:
        """In a worker, at the end: make its open pack durable too."""
        w = getattr(self._local, "writer", None)
        if w is not None and w.entries:
            self._land(w)
        if self._write_behind is not None:
            self._write_behind.flush()
        return self._harvest()

    def _read_file(self, path: bytes, lst: os.stat_result) -> _Read:
        for prefix, session in self._clone_sessions:
            if path == prefix or path.startswith(prefix + b"/"):
                return self._read_clone(session, path, lst)
        return self._read_live(path, lst)

    def _read_live(self, path: bytes, lst: os.stat_result) -> _Read:
        """Read a live file; re-read once if it changed meanwhile, else flag it torn."""
        r = _Read()
        try:
            try:
                fd = os.open(path, _OPEN | _O_NOATIME)
            except PermissionError:
                fd = os.open(path, _OPEN)  # O_NOATIME needs ownership; fall back
        except OSError as exc:
            r.error = exc.strerror or str(exc)
            return r
        try:
            base = (lst.st_ino, lst.st_size, lst.st_mtime_ns, lst.st_ctime_ns)
            for attempt in (0, 1):
                if attempt:
                    os.lseek(fd, 0, os.SEEK_SET)
                    time.sleep(TICK_NS / 1e9)  # let a write just before the read age past a tick
                r.read_ns = time.time_ns()
                r.content, r.size = self._read_chunks(fd, base[1])
                st1 = os.fstat(fd)
                if not stat.S_ISREG(st1.st_mode):
                    r.warning = "skipped: replaced by a special file while reading"
                    return r
                now = (st1.st_ino, st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns)
                # File times come from a coarse clock: a write during the read can carry a
                # time up to one tick before the read began and leave the stat unchanged.
                # A change that recent may have happened while we read: not stable.
                recent = st1.st_ctime_ns >= r.read_ns - TICK_NS
                r.torn = recent or not (now == base and r.size == st1.st_size)
                if not r.torn:
                    break
                base = now
            r.st = st1
            r.xattrs = _xattrs(fd)
        except OSError as exc:
            r.error = exc.strerror or str(exc)
        finally:
            os.close(fd)
        return r

    def _read_increment(self, path: bytes, lst: os.stat_result, old: list[tuple[int, int, bytes]],
                        ranges: list[tuple[int, int]],
                        span: tuple[int, int, int] | None = None) -> _Read | None:
        """Read only around the changed ranges of a file in a btrfs snapshot.

        Old chunks that lie wholly before the next changed byte and start where we are are
        kept as they were; from there the file is cut again until a cut lands on an old
        chunk boundary past the change. FastCDC's cuts depend only on the bytes since the
        last cut, so the chunks come out exactly as a full read would cut them. Returns None
        (read it all) if anything does not add up.

        With ``span`` (start, stop, old end) only the part from the old boundary ``start``
        is read, up to the first old boundary at or past ``stop`` where it is back on the
        old cuts; ``old`` then holds the old chunks from ``start`` on (see _split_plan).
        """
        size = lst.st_size
        if span is not None:
            start, stop, old_end = span
        else:
            start, stop, old_end = 0, size, old[-1][0] + old[-1][1] if old else 0
        starts = {o: k for k, (o, _, _) in enumerate(old)}
        # A part holds the old chunks only to a little past its stop: past them, give up.
        given = old[-1][0] if old and old[-1][0] + old[-1][1] < old_end else size
        r = _Read()
        try:
            fd = os.open(path, _OPEN)
        except OSError:
            return None
        try:
            content: list[bytes] = []
            offsets: list[int] = []
            pos, nread, ri = start, 0, 0
            r.read_ns = time.time_ns()
            while pos < stop:
                while ri < len(ranges) and sum(ranges[ri]) <= pos:
                    ri += 1
                next_change = ranges[ri][0] if ri < len(ranges) else size
                k = starts.get(pos)
                if k is not None:
                    o, n, cid = old[k]
                    # The old last chunk was cut by the old end of file: reuse it only if
                    # the file still ends there.
                    if o + n <= min(next_change, size) and (o + n < old_end or size == old_end):
                        content.append(cid)
                        offsets.append(pos)
                        pos = o + n
                        continue
                change_end = sum(ranges[ri]) if ri < len(ranges) else size
                os.lseek(fd, pos, os.SEEK_SET)
                resynced = False
                for c in self._chunker().cut_stream(io.FileIO(fd, closefd=False)):
                    content.append(self._chunk(c.data))
                    offsets.append(pos)
                    pos += c.length
                    nread += c.length
                    if pos >= change_end and pos in starts:
                        resynced = True
                        break
                    if pos > given:
                        return None  # past the old chunks this part was given
                if not resynced:
                    break
            st1 = os.fstat(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        if (pos != size if span is None else pos < stop) or (
                st1.st_ino, st1.st_size, st1.st_mtime_ns, st1.st_ctime_ns) != (
                lst.st_ino, lst.st_size, lst.st_mtime_ns, lst.st_ctime_ns):
            return None
        r.content, r.size, r.st = content, size, st1
        r.bytes_read = nread
        if span is not None:
            r.span, r.offsets = (start, pos), offsets
        if start == 0:
            r.xattrs = _xattrs(path)
        return r

    def _read_clone(self, session: Any, path: bytes, lst: os.stat_result) -> _Read:
        """Read a file through a reflink session: a clone taken at one instant, so the read
        cannot tear; metadata comes from the original's lstat."""
        r = _Read()
        wp = Path(os.fsdecode(path))
        try:
            f = session.open_file(wp)
        except OSError as exc:
            r.error = exc.strerror or str(exc)
            return r
        try:
            if not session.is_stable(wp):
                f.close()
                return self._read_live(path, lst)
            r.read_ns = time.time_ns()
            r.content, r.size = self._read_chunks(f.fileno(), lst.st_size)
            after = os.lstat(path)
            r.st = lst
            # Changed around the clone: the content is whole, but which stat it goes with
            # is unsure, so it is not cached (the next backup reads it again).
            r.cacheable = (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
                lst.st_ino, lst.st_size, lst.st_mtime_ns, lst.st_ctime_ns)
            r.xattrs = _xattrs(path)
        except OSError as exc:
            r.error = exc.strerror or str(exc)
        finally:
            f.close()
        return r

    def _chunker(self) -> Any:
        cdc = getattr(self._local, "cdc", None)
        if cdc is None:
            from pyfastcdc import FastCDC  # workers only: a no-change backup never cuts
            avg, mn, mx, seed = self._cdc_args
            cdc = self._local.cdc = FastCDC(avg, min_size=mn, max_size=mx, seed=seed)
        return cdc

    def _read_chunks(self, fd: int, size_hint: int) -> tuple[list[bytes], int]:
        content: list[bytes] = []
        if size_hint < self.cfg.min_size:
            # One read for a small file: a short read of a regular file means end of file.
            data = os.read(fd, size_hint + 1)
            if len(data) > size_hint:
                parts = [data]
                while b := os.read(fd, 1 << 20):
                    parts.append(b)
                data = b"".join(parts)
            self._head = data[:HEAD_BYTES]
            if len(data) <= self.cfg.max_size:
                if data:
                    content.append(self._chunk(data))
                return content, len(data)
            chunks = (c.data for c in self._chunker().cut_buf(data))
        elif size_hint <= WHOLE_READ_BYTES and (whole := self._read_whole(fd)) is not None:
            # Most files that take chunking fit this worker's read buffer: read whole into
            # it and cut in place. (A stream chunker allocates and zeroes a buffer of twice
            # the largest chunk, 8 MiB, for every file: about 1.7 ms each.)
            chunks = (c.data for c in self._chunker().cut_buf(whole))
        else:
            # Each chunk's view is valid until the next one is cut; _chunk hashes, compresses
            # and encrypts it before that, so no copy is made.
            chunks = (c.data for c in self._chunker().cut_stream(io.FileIO(fd, closefd=False)))
        n = 0
        for data in chunks:
            if not n:
                self._head = bytes(data[:HEAD_BYTES])
            content.append(self._chunk(data))
            n += len(data)
        return content, n

    def _read_whole(self, fd: int) -> memoryview | None:
        """The rest of the file in this thread's read buffer (valid until the next file),
        or None with the file position back where it was when it does not fit (it grew)."""
        buf: bytearray | None = getattr(self._local, "read_buffer", None)
        if buf is None:
            buf = self._local.read_buffer = bytearray(WHOLE_READ_BYTES + 1)
        view = memoryview(buf)
        n = 0
        while n < len(buf) and (got := os.readv(fd, [view[n:]])):
            n += got
        if n > WHOLE_READ_BYTES:
            os.lseek(fd, -n, os.SEEK_CUR)
            return None
        return view[:n]

    def _chunk(self, data: bytes | memoryview) -> bytes:
        cid = self.keys.chunk_id(data)
        # In a worker process: its own copy of the known ids, taken when it started.
        if cid not in self._known:
            self._known.add(cid)
            self._new_chunks += 1
            self._new_bytes += len(data)
            entry = self._pack(packfmt.KIND_CHUNK, cid, data)
            self._new_stored += entry.length - packfmt.TAG_BYTES
        return cid

    # -- packing (any thread: each has its own open pack) --------------------------------------

    def _writer(self) -> packfmt.PackWriter:
        w: packfmt.PackWriter | None = getattr(self._local, "writer", None)
        if w is None:
            with self._writers_lock:
                buffer = self._spare.pop() if self._spare else None
            if buffer is None and self._write_behind is not None:
                # A worker's chunk pack: room for a full pack and the blob that crosses
                # the line, so it never grows (a copy) on the way.
                buffer = bytearray(self.cfg.pack_size + self.cfg.max_size + (64 << 10))
            w = packfmt.PackWriter(
                self.keys, os.urandom(packfmt.SALT_BYTES), compression_level=self.cfg.compression_level,
                buffer=buffer,
            )
            self._local.writer = w
            with self._writers_lock:
                self._writers.append(w)
        return w

    def _pack(self, kind: str, blob_id: bytes, data: bytes | memoryview) -> packfmt.BlobEntry:
        w = self._writer()
        entry = w.add(kind, blob_id, data)
        if len(w) >= self.cfg.pack_size:
            self._local.writer = None
            self._land(w)
        return entry

    def _land(self, w: packfmt.PackWriter) -> None:
        if self._write_behind is not None:
            self._write_behind.submit(w)
        else:
            self._landed.put(self._write_pack(w))

    def _write_pack(self, w: packfmt.PackWriter) -> _Landed:
        entries = list(w.entries)
        header_offset = len(w)
        pid, view = w.finish_view()
        w.entries.clear()
        size = len(view)
        with view:
            # The local store writes the view and keeps nothing of it; any other store
            # (one that may hold on to the bytes) gets its own copy.
            local = type(self.repo.store).put is LocalPackStore.put
            self.repo.store.put(pid, view if local else bytes(view))
        # The pack is durable: its buffer builds a later pack, already in memory (a fresh
        # buffer costs a page fault per 4 KiB, about as much as the copy it replaced).
        with self._writers_lock:
            if len(self._spare) < _SPARE_BUFFERS:
                self._spare.append(w.buffer)
        w.buffer = bytearray()
        return _Landed(pid, w.salt, size, header_offset, entries)


class _WriteBehind:
    """A worker's pack writes, in a thread of their own: the next pack fills while the last
    one is sealed, written and fsynced (both release the GIL). One pack waits at most."""

    def __init__(self, write: Callable[[packfmt.PackWriter], _Landed],
                 landed: Callable[[_Landed], None]) -> None:
        self._write, self._landed = write, landed
        self._queue: queue.Queue[packfmt.PackWriter] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="pack-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            w = self._queue.get()
            try:
                if self._error is None:
                    self._landed(self._write(w))
            except BaseException as exc:  # raised in the worker by the next submit or flush
                self._error = exc
            finally:
                self._queue.task_done()

    def submit(self, w: packfmt.PackWriter) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(w)

    def flush(self) -> None:
        """Wait until every pack submitted is durable (or raise why one is not)."""
        self._queue.join()
        if self._error is not None:
            raise self._error


def _stitch(parts: list[_Read], size: int) -> _Read | None:
    """One file's read from the parts of a split increment (in file order), or None when
    they do not join up: a part that ran past the next one's start must meet it on one of
    its chunk boundaries (from a common cut on, the cuts are the same)."""
    if any(p.failed or p.span is None or p.offsets is None for p in parts):
        return None
    first = parts[0]
    assert first.span is not None
    content, end = list(first.content), first.span[1]
    for p in parts[1:]:
        assert p.span is not None and p.offsets is not None
        k = bisect.bisect_left(p.offsets, end)
        if end > p.span[1] or (end > p.span[0] and (k == len(p.offsets) or p.offsets[k] != end)):
            return None
        content += p.content[k:]
        end = max(end, p.span[1])
    if end != size:
        return None
    first.content, first.span, first.offsets = content, None, None
    first.bytes_read = sum(p.bytes_read or 0 for p in parts)
    first.read_ns = min(p.read_ns for p in parts)
    first.new_chunks = sum(p.new_chunks for p in parts)
    first.new_bytes = sum(p.new_bytes for p in parts)
    return first


_FORMATS: Any = None  # (EXTENSION_TYPES, COMPRESSED_TYPES, MAGIC), imported on first use


def _wants_probe(path: bytes, r: _Read, head: bytes) -> bool:
    """Whether what the backup already knows of a file read points at encryption, so the
    model must see its bytes whatever the budget: its new chunks do not compress although
    its extension names a format that does (or names nothing: ``x.docx.locked``), or they
    compress worse than text does in a text file (partly encrypted, base64-masked), or its
    first bytes (``head``, kept from the read; a 512-byte read when the read kept none) are
    not the format its extension names."""
    global _FORMATS
    if _FORMATS is None:
        from corestate.node.core.anomaly.features import COMPRESSED_TYPES, EXTENSION_TYPES, MAGIC
        _FORMATS = (EXTENSION_TYPES, COMPRESSED_TYPES, MAGIC)
    EXTENSION_TYPES, COMPRESSED_TYPES, MAGIC = _FORMATS
    if r.new_bytes < 4096:
        return False  # too little new to tell (small files compress poorly anyway)
    ratio = r.new_stored / r.new_bytes
    if ratio <= 0.5:
        return False  # it compresses: not ciphertext, nor mostly ciphertext
    name = path.rpartition(b"/")[2]
    stem, dot, ext = name.rpartition(b".")
    types = EXTENSION_TYPES.get(os.fsdecode(ext).lower()) if dot and stem else None
    if types is None:
        # Incompressible, and no extension that says why: unless the first bytes name a
        # compressed format (git's loose objects are zlib streams without an extension).
        if ratio <= 0.95:
            return False
        wanted = [(off, sig) for fmt, off, sig in MAGIC if fmt in COMPRESSED_TYPES]
        head = head or _head(path)
        return not any(head[off:off + len(sig)] == sig for off, sig in wanted)
    if "text" in types:
        return ratio > 0.5
    wanted = [(off, sig) for fmt, off, sig in MAGIC if fmt in types]
    if not wanted:
        return not (types & COMPRESSED_TYPES) and ratio > 0.95
    head = head or _head(path)
    return not any(head[off:off + len(sig)] == sig for off, sig in wanted)


def _head(path: bytes) -> bytes:
    """The first bytes of a file (when its read kept none: a block-level increment)."""
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return b""
    try:
        return os.pread(fd, HEAD_BYTES, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _probe(path: bytes, size: int) -> list[Any] | None:
    """The anomaly model's content probe of a file just read (its blocks are in the page
    cache): a few blocks at the offsets the model names, never the whole file."""
    from corestate.node.core.anomaly.features import probe, sample_plan
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    try:
        blocks = [os.pread(fd, n, off) for off, n in sample_plan(size, max_blocks=PROBE_BLOCKS)]
    except OSError:
        return None
    finally:
        os.close(fd)
    return probe(blocks).to_record()


def _describe_error(exc: BaseException) -> tuple[str, Any]:
    """A worker's error as plain data that crosses the process boundary."""
    if isinstance(exc, StoreFull):
        return "full", exc.where
    if isinstance(exc, CoreStateError):
        return "known", (str(exc), exc.hint, exc.retryable)
    return "other", f"{type(exc).__name__}: {exc}"


def _rebuild_error(kind: str, fields: Any) -> BaseException:
    if kind == "full":
        return StoreFull(fields)
    if kind == "known":
        message, hint, retryable = fields
        return StoreError(message, hint=hint, retryable=retryable)
    return StoreError(f"a backup worker failed: {fields}", retryable=True)


def _encode_xattrs(x: dict[bytes, bytes] | None) -> bytes | None:
    if not x:
        return None
    import cbor2
    return cbor2.dumps(x)


def _decode_xattrs(b: bytes) -> dict[bytes, bytes] | None:
    import cbor2
    return cbor2.loads(b) or None
