"""``corestate mount DIR``: the snapshots as a read-only FUSE file system (pyfuse3, on trio).

Layout::

    DIR/snapshots/<short id>/<original path>   each snapshot's tree, as backed up
    DIR/latest -> snapshots/<short id>          the newest snapshot of this node

Reading a file decrypts only the chunks that cover the bytes asked for (the file's chunk
offsets come from the index's plaintext lengths; a bisect finds the first chunk). A chunk
is read from its pack in the local store, or — for a pack that lives only on its holders —
from the running daemon (``PackReadCall``: ciphertext ranges of a pack it rebuilds from any
k shares); decrypted chunks are kept in an LRU of ``CHUNK_CACHE`` bytes.

The mount works beside the daemon: it takes no home lock and opens ``index.db`` read-only
(SQLite WAL lets a reader beside the writer); new snapshots appear in ``snapshots/``
within ``SNAPSHOT_TTL`` seconds. Without a daemon the CLI holds the home and gives the
store a ``remote`` reader that fetches from the holders in process (node/cli/mount.py).

Invariants: nothing is ever written (the mount is ``ro``, every write-opening ``open``
fails with EROFS); each FUSE request's blocking work (SQLite, pread, decryption, daemon
calls) runs in a worker thread, so a slow pack never stops ``ls``; inode numbers are
stable for the life of the mount (one per (parent, name) seen); damaged or missing data
is EIO for that read only, logged with the pack.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from corestate.node.engine.repo import Repository, SnapshotInfo
from corestate.node.engine.store import LocalPackStore
from corestate.node.errors import PackMissing
from corestate.protocol import control as c
from corestate.protocol.errors import CorruptObject
from corestate.protocol.objects import DIR, FILE, SYMLINK, Node

from corestate.errors import CoreStateError

try:
    import pyfuse3
    _Operations: type = pyfuse3.Operations
except ImportError:  # the optional `mount` extra; `corestate mount` says how to install it
    pyfuse3 = None  # type: ignore[assignment]
    _Operations = object

log = logging.getLogger("corestate.mount")

CHUNK_CACHE = 64 << 20  # bytes of decrypted chunks kept
SNAPSHOT_TTL = 2.0  # seconds a listing of the snapshots is reused
READDIR_BATCH = 1024  # folder entries produced per worker-thread trip
PREFETCH_CHUNKS = 64  # how far ahead in a file reads look for packs to fetch early
PREFETCH_PACKS = 2  # remote packs fetched ahead at once (the daemon keeps 128 MiB of them)
ROOT = 1  # FUSE_ROOT_ID (pyfuse3.ROOT_INODE)
SNAPSHOTS_INO = ROOT + 1
LATEST_INO = ROOT + 2

_TYPE_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK, "p": stat.S_IFIFO,
              "c": stat.S_IFCHR, "b": stat.S_IFBLK}


class MountStore:
    """The pack store as the mount reads it: local pack files, else ``remote`` (the daemon
    by default, or the in-place reader of node/cli/mount.py)."""

    def __init__(self, local: LocalPackStore, home: Path,
                 remote: Callable[[bytes, int, int], bytes] | None = None) -> None:
        """``remote(pack, offset, length)``: how to read a pack not in the local store
        (none: ask the home's daemon)."""
        self.local, self.home, self.remote = local, home, remote

    def read_range(self, pack_id: bytes, offset: int, length: int) -> bytes:
        try:
            return self.local.read_range(pack_id, offset, length)
        except PackMissing:
            pass
        return self._remote_range(pack_id, offset, length)

    def is_local(self, pack_id: bytes) -> bool:
        return self.local.path(pack_id).exists()

    def warm(self, pack_id: bytes) -> None:
        """Fetch a remote pack now (the daemon, or the in-place reader, keeps it for the
        reads to come)."""
        try:
            self._remote_range(pack_id, 0, 1)
        except (CoreStateError, OSError) as exc:
            log.info("prefetch of pack %s: %s", pack_id.hex()[:16], exc)

    def _remote_range(self, pack_id: bytes, offset: int, length: int) -> bytes:
        from corestate.node.runtime.client import call, connect
        out = bytearray()
        while len(out) < length:
            n = min(c.PACK_READ_MAX, length - len(out))
            if self.remote is not None:
                data = self.remote(pack_id, offset + len(out), n)
            else:
                s = connect(self.home)
                if s is None:
                    raise PackMissing(pack_id.hex()) from None
                with s:
                    reply = call(s, c.PackReadCall(pack=pack_id, offset=offset + len(out), length=n))
                assert isinstance(reply, c.PackReadResult)
                data = reply.data
            if not data:
                break
            out += data
        return bytes(out)

    def close(self) -> None:
        self.local.close()


@dataclass(slots=True)
class _Entry:
    ino: int
    parent: int
    kind: str  # FILE, DIR, SYMLINK, ... or "snapshot" (a snapshot's root folder)
    node: Node | None = None  # None: the root, snapshots/, latest, a snapshot's folder
    tree: bytes | None = None  # a folder's tree
    time_ns: int = 0  # a snapshot folder: its time
    names: dict[bytes, int] | None = None  # a folder's children once listed: name -> ino
    offsets: list[int] | None = None  # a file: where each chunk starts


@dataclass(slots=True)
class _Chunks:
    """Decrypted chunks, least recently used dropped first, at most ``limit`` bytes."""

    limit: int
    items: collections.OrderedDict[bytes, bytes] = field(default_factory=collections.OrderedDict)
    size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, cid: bytes) -> bytes | None:
        with self.lock:
            data = self.items.get(cid)
            if data is not None:
                self.items.move_to_end(cid)
            return data

    def put(self, cid: bytes, data: bytes) -> None:
        with self.lock:
            if cid in self.items:
                return
            self.items[cid] = data
            self.size += len(data)
            while self.size > self.limit and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)


class SnapshotFS(_Operations):
    """The file system. Every handler runs its blocking part in a worker thread."""

    enable_writeback_cache = False

    def __init__(self, repo: Repository, *, chunk_cache: int = CHUNK_CACHE) -> None:
        super().__init__()
        self.repo = repo
        self.uid, self.gid = os.getuid(), os.getgid()
        self._lock = threading.Lock()  # the inode table
        self._entries: dict[int, _Entry] = {
            ROOT: _Entry(ROOT, ROOT, "root"),
            SNAPSHOTS_INO: _Entry(SNAPSHOTS_INO, ROOT, "snapshots"),
            LATEST_INO: _Entry(LATEST_INO, ROOT, SYMLINK),
        }
        self._next = LATEST_INO + 1
        self._snaps: list[SnapshotInfo] = []
        self._snaps_at = -1e9
        self._snap_ino: dict[bytes, int] = {}
        self.chunks = _Chunks(chunk_cache)
        self._warming: set[bytes] = set()  # packs asked for ahead of reads
        self._pool = concurrent.futures.ThreadPoolExecutor(PREFETCH_PACKS, thread_name_prefix="prefetch")
        self.started = time.time_ns()

    def close(self) -> None:
        """Stop reading ahead (a prefetch already asked of the daemon ends by itself)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the model (worker threads) ---------------------------------------------------------

    def snapshots(self) -> list[SnapshotInfo]:
        with self._lock:
            if time.monotonic() - self._snaps_at > SNAPSHOT_TTL:
                self._snaps = self.repo.snapshots()
                self._snaps_at = time.monotonic()
                for s in self._snaps:
                    if s.id not in self._snap_ino:
                        e = self._new(SNAPSHOTS_INO, "snapshot", tree=s.record.tree, time_ns=s.record.time_ns)
                        self._snap_ino[s.id] = e.ino
            return self._snaps

    def _new(self, parent: int, kind: str, **kw: Any) -> _Entry:
        e = _Entry(self._next, parent, kind, **kw)
        self._entries[e.ino] = e
        self._next += 1
        return e

    def entry(self, ino: int) -> _Entry:
        with self._lock:
            e = self._entries.get(ino)
        if e is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return e

    def children(self, e: _Entry) -> list[tuple[bytes, int]]:
        """A folder's entries, in order: (name, inode)."""
        if e.kind == "root":
            snaps = self.snapshots()
            return [(b"snapshots", SNAPSHOTS_INO)] + ([(b"latest", LATEST_INO)] if snaps else [])
        if e.kind == "snapshots":
            snaps = self.snapshots()
            with self._lock:
                return [(s.short_id.encode(), self._snap_ino[s.id]) for s in snaps]
        if e.names is None:
            assert e.tree is not None
            self._locate(e.tree)
            nodes = self.repo.tree(e.tree)
            with self._lock:
                if e.names is None:
                    names: dict[bytes, int] = {}
                    for nd in nodes:
                        child = self._new(e.ino, nd.type, node=nd, tree=nd.subtree)
                        names[nd.name] = child.ino
                    e.names = names
        return list(e.names.items())

    def child_attrs(self, parent: _Entry, name: bytes) -> pyfuse3.EntryAttributes:
        """A name in a folder (a dict lookup once the folder's tree was read)."""
        if parent.kind in ("root", "snapshots"):
            ino = dict(self.children(parent)).get(name)
        else:
            if parent.names is None:
                self.children(parent)
            assert parent.names is not None
            ino = parent.names.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs(self.entry(ino))

    def listing(self, e: _Entry, start: int, count: int) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        kids = self.children(e)[start:start + count]
        return [(name, self.attrs(self.entry(ino))) for name, ino in kids]

    def attrs(self, e: _Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = e.ino
        a.generation = 0
        a.entry_timeout = a.attr_timeout = 60.0 if e.node is not None else 1.0
        a.st_blksize = 128 << 10
        nd = e.node
        if nd is None:
            if e.kind == SYMLINK:
                a.st_mode = stat.S_IFLNK | 0o777
                a.st_size = len(self.link_target(e))
            else:
                a.st_mode = stat.S_IFDIR | 0o555
            a.st_nlink = 2 if e.kind != SYMLINK else 1
            a.st_uid, a.st_gid = self.uid, self.gid
            t = e.time_ns or self.started
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = t
            return a
        a.st_mode = _TYPE_BITS.get(nd.type, stat.S_IFREG) | stat.S_IMODE(nd.mode)
        a.st_nlink = 2 if nd.type == DIR else 1
        a.st_uid, a.st_gid = nd.uid, nd.gid
        a.st_rdev = nd.rdev or 0
        a.st_size = nd.size if nd.type == FILE else len(nd.target or b"")
        a.st_blocks = (a.st_size + 511) // 512
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = nd.mtime_ns
        return a

    def link_target(self, e: _Entry) -> bytes:
        if e.ino == LATEST_INO:
            snaps = self.snapshots()
            if not snaps:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return b"snapshots/" + snaps[-1].short_id.encode()
        if e.node is None or e.node.target is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return e.node.target

    def _locate(self, blob: bytes) -> None:
        """Reload the blob locations when ``blob`` is not among them: its pack was indexed
        after they were read (a backup made while mounted)."""
        if blob not in self.repo.locations():
            self.repo.refresh()

    def _offsets(self, e: _Entry) -> list[int]:
        if e.offsets is None:
            assert e.node is not None
            lengths = self.repo.raw_lengths(e.node.content)
            offs, at = [], 0
            for cid in e.node.content:
                offs.append(at)
                at += lengths.get(cid, 0)
            e.offsets = offs
        return e.offsets

    def chunk(self, cid: bytes) -> bytes:
        data = self.chunks.get(cid)
        if data is None:
            self._locate(cid)
            data = self.repo.load_blob(cid)
            self.chunks.put(cid, data)
        return data

    def read_file(self, e: _Entry, off: int, size: int) -> bytes:
        nd = e.node
        assert nd is not None
        end = min(off + size, nd.size)
        if off >= end:
            return b""
        offs = self._offsets(e)
        i = max(0, bisect.bisect_right(offs, off) - 1)
        out = bytearray()
        while i < len(nd.content) and offs[i] < end:
            data = self.chunk(nd.content[i])
            lo = max(off - offs[i], 0)
            hi = min(end - offs[i], len(data))
            out += data[lo:hi]
            i += 1
        self._prefetch(nd, i)
        return bytes(out)

    def _prefetch(self, nd: Node, i: int) -> None:
        """Read ahead across packs: the next ``PREFETCH_PACKS`` remote packs this file's
        following chunks live in are fetched by the daemon in the background (a pack
        fetch takes a second where a chunk read from a fetched pack takes a millisecond)."""
        store = self.repo.store
        if not isinstance(store, MountStore):
            return
        locs = self.repo.locations()
        packs: list[bytes] = []
        for cid in nd.content[i:i + PREFETCH_CHUNKS]:
            loc = locs.get(cid)
            if loc is not None and loc.pack not in packs:
                packs.append(loc.pack)
        with self._lock:
            todo = [p for p in packs if p not in self._warming][:PREFETCH_PACKS]
            todo = [p for p in todo if not store.is_local(p)]
            self._warming.update(todo)
            if len(self._warming) > 4096:
                self._warming = set(todo)
        for p in todo:
            self._pool.submit(store.warm, p)

    # -- FUSE handlers -------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except pyfuse3.FUSEError:
            raise
        except (CoreStateError, CorruptObject, OSError) as exc:
            log.warning("mount: %s", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self.entry(parent_inode)
        if name == b".":
            return self.attrs(parent)
        if name == b"..":
            return self.attrs(self.entry(parent.parent))
        return await self._run(self.child_attrs, parent, name)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self._run(self.attrs, self.entry(inode))

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return await self._run(self.link_target, self.entry(inode))

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        e = self.entry(inode)
        if e.kind not in ("root", "snapshots", "snapshot", DIR):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        e = self.entry(fh)
        # One worker-thread trip per batch, not per entry (a folder of 100,000 files).
        while True:
            batch = await self._run(self.listing, e, start_id, READDIR_BATCH)
            for name, attrs in batch:
                start_id += 1
                if not pyfuse3.readdir_reply(token, name, attrs, start_id):
                    return
            if len(batch) < READDIR_BATCH:
                return

    async def releasedir(self, fh: int) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        e = self.entry(inode)
        if e.node is None or e.node.type != FILE:
            raise pyfuse3.FUSEError(errno.EISDIR if e.kind in ("root", "snapshots", "snapshot", DIR)
                                    else errno.EINVAL)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._run(self.read_file, self.entry(fh), off, size)

    async def release(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


async def serve(fs: SnapshotFS, mountpoint: Path, *, ready: Any = None, debug: bool = False) -> None:
    """Mount ``fs`` on ``mountpoint`` until SIGINT or SIGTERM, then unmount (also when the
    loop fails)."""
    import signal
    options = set(pyfuse3.default_options)
    options |= {"fsname=corestate", "subtype=corestate", "ro", "default_permissions"}
    if debug:
        options.add("debug")
    pyfuse3.init(fs, str(mountpoint), options)
    unmounted = False
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def stop_on_signal() -> None:
                    async for sig in signals:
                        log.info("%s: unmounting %s", signal.Signals(sig).name, mountpoint)
                        nursery.cancel_scope.cancel()
                        return
                nursery.start_soon(stop_on_signal)
                if ready is not None:
                    ready()
                await pyfuse3.main()
                nursery.cancel_scope.cancel()  # unmounted from outside (fusermount -u)
                unmounted = True
    finally:
        pyfuse3.close(unmount=not unmounted)
        fs.close()


__all__ = ["MountStore", "SnapshotFS", "serve"]
