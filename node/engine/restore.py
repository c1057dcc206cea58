"""Restore: the reverse of backup, verifying every chunk, never writing outside the target.

Each backed-up path comes back below the target under its full original path (as restic
does). Safety does not rest on trusting the snapshot, nor on the target staying as it was:
other users may write in it while root restores (in place, or into a home).

- Tree names are validated when they are decoded (no ``..``, ``/``, NUL or empty names), and
  every tree is decoded before anything is written.
- Below the target, only ``open_beneath`` resolves a path of more than one component, and it
  follows no symlink and no ``..`` (openat2 ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, or an
  ``O_NOFOLLOW`` walk per component on kernels before 5.6). Every create, mkdir, rename,
  link, unlink and metadata change acts on one name relative to a directory fd it opened
  from the target's fd, afresh each time it is needed and never kept for long: a directory
  replaced by a symlink mid-restore makes every later write below it fail with an error for
  its path, and a directory moved away can take with it only what is being written into it
  at that moment (the fd follows the directory itself; nothing is redirected by a path).
- Files are created ``O_EXCL | O_NOFOLLOW`` (so never through a symlink, never over
  anything): under their own name when it is free, else under a temporary name renamed
  over the existing one at the end. They get their metadata through their own fd; FIFOs
  and devices get theirs through an ``O_PATH`` fd checked to be what was just made;
  symlinks are never followed. A file that fails midway is removed; after a crash a
  partial file may stand under its name (a restore again replaces it).

Packs that are not in the local store (a mesh node's data packs, on peers) come from a
``PackFeed`` into memory: the files are ordered by the pack of their data, cut into
batches, and the batches grouped in waves whose packs fit half the buffer; a wave is
written (its packs inherited by the forked workers) while the feed fetches the next, and
every chunk is verified as from the store. Nothing of them touches the disk.

Files are written by forked worker processes. Directory metadata is applied last, children
before parents: writing into a directory would disturb its restored mtime, and a parent
handed to its owner (or made read-only) before its children are done could lock the restore
out of them or let that owner swap them. One ``syncfs`` at the end makes it durable.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from corestate.kernel.linux import open_beneath, syncfs
from corestate.node.engine.repo import Repository, SnapshotInfo
from corestate.node.errors import PathNotInSnapshot, RestoreTargetError
from corestate.protocol.errors import CorruptObject
from corestate.protocol.objects import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SYMLINK, Node

log = logging.getLogger("corestate.restore")

BATCH_BYTES = 8 << 20
BATCH_FILES = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_FOLLOWED = "a symlink or non-directory stands in the target where a directory belongs; not followed"


@dataclass(slots=True)
class RestoreStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    other: int = 0  # symlinks, FIFOs, devices
    bytes_total: int = 0  # planned bytes, known once the trees are read
    bytes_written: int = 0
    files_total: int = 0
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    current: bytes = b""


class PackFeed(Protocol):
    """Packs that are not in the local store, handed to a restore in memory, wave by wave
    (a mesh node's packs that live only on peers: node/runtime/meshops.py)."""

    def remote(self) -> set[bytes]:
        """The packs this feed brings (the restore reads every other pack from the store)."""
        ...

    def start(self, waves: list[list[bytes]]) -> None:
        """Begin bringing the packs of each wave, in order; a wave may reuse the one before."""
        ...

    def next_wave(self) -> dict[bytes, bytes]:
        """The next wave's packs (pack id -> bytes, each checked against its id), once they
        are all here. The wave before it is no longer needed."""
        ...

    def close(self) -> None:
        """Stop (also mid-way, on a failure) and free what is held."""
        ...


class Restore:
    def __init__(self, repo: Repository, *, workers: int | None = None,
                 stats: RestoreStats | None = None, check: Callable[[], None] | None = None,
                 feed: PackFeed | None = None, buffer: int = 64 << 20) -> None:
        self.repo = repo
        # Remote packs come from ``feed`` in waves of consecutive batches, each wave's packs
        # at most buffer / 2 bytes (but at least what one batch needs): one wave is written
        # while the next is fetched, so about ``buffer`` of them is held in memory, none on
        # disk.
        self._feed = feed
        self._wave_bytes = max(1, buffer // 2)
        self._mem: dict[bytes, bytes] = {}
        # Called between batches of files: what it raises (a cancel) stops the restore
        # there, the files written so far left in place.
        self._check = check or (lambda: None)
        self.stats = stats or RestoreStats()
        # More threads than cores: much of a restore waits on the file system.
        self.workers = workers or max(2, (os.cpu_count() or 2))
        self._lock = threading.Lock()
        self._is_root = os.geteuid() == 0

    def run(self, snap: SnapshotInfo, target: Path, includes: list[bytes] | None = None,
            dry_run: bool = False) -> RestoreStats:
        self.includes = [i.rstrip(b"/") or b"/" for i in (includes or [])]
        for inc in self.includes:
            if inc != b"/" and not self._exists(snap.record.tree, inc):
                raise PathNotInSnapshot(os.fsdecode(inc))
        self._dirs: list[tuple[bytes, Node]] = []
        self._jobs: list[tuple[bytes, Node]] = []
        # Hard links as ((dir, name) of the first path, (dir, name) of the link).
        self._links: list[tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = []
        self._first_by_inode: dict[int, tuple[bytes, bytes]] = {}
        target = Path(os.path.abspath(target))
        tb = self._tb = os.fsencode(target)
        # A first pass writes nothing: it decodes (and so validates) every tree the
        # restore needs, so a forged tree is refused before a single byte is written.
        self.dry_run = True
        self._plan(snap.record.tree, b"", tb, not self.includes)
        if dry_run:
            return self.stats
        self.stats.files_total = self.stats.files + len(self._links)
        self.stats.files = self.stats.dirs = 0
        self._links.clear()
        self._first_by_inode.clear()
        self.dry_run = False
        try:
            os.makedirs(target, exist_ok=True)
            # The target itself may be a symlink: the user named it. Below it, nothing is.
            tfd = self._tfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RestoreTargetError(str(target), exc.strerror or str(exc))
        try:
            self.repo.preload_salts()
            self._plan(snap.record.tree, b"", tb, not self.includes)
            # Files go to the workers in batches: one hand-off per file would cost a thread
            # wake-up (and a GIL hand-off) each, which dominates when files are small.
            if self._feed is not None:
                self._by_pack(self._feed.remote())
            batches: list[list[tuple[bytes, Node]]] = [[]]
            size = 0
            for job in self._jobs:
                if size >= BATCH_BYTES or len(batches[-1]) >= BATCH_FILES:
                    batches.append([])
                    size = 0
                batches[-1].append(job)
                size += job[1].size
            if self._feed is None:
                self._write_batches(batches)
            else:
                self._write_waves(batches, self._feed)
            for src, dst in self._links:
                self._link(src, dst)
            # _dirs is in post-order (a directory is added once its subtree is planned), so
            # this visits children before parents.
            for dpath, node in self._dirs:
                self._apply_dir_meta(dpath, node)
            syncfs(tfd)
        finally:
            os.close(tfd)
        return self.stats

    # -- planning (one thread) ------------------------------------------------------------

    def _exists(self, tree: bytes, path: bytes) -> bool:
        comps = [c for c in path.split(b"/") if c]
        for i, c in enumerate(comps):
            node = next((n for n in self.repo.tree(tree) if n.name == c), None)
            if node is None:
                return False
            if i == len(comps) - 1:
                return True
            if node.subtree is None:
                return False
            tree = node.subtree
        return True

    def _selected(self, p: bytes) -> int:
        """2: restore all of p; 1: p is only an ancestor of a chosen path; 0: skip."""
        for inc in self.includes:
            if p == inc or p.startswith(inc + b"/") or inc == b"/":
                return 2
        for inc in self.includes:
            if inc.startswith(p + b"/"):
                return 1
        return 0

    def _plan(self, tree: bytes, spath: bytes, dpath: bytes, full: bool) -> bool:
        """Plan (and, when not a dry run, make the directories and special files of) the
        directory ``dpath``; False when it cannot be entered (an error is recorded)."""
        dfd = -1
        if not self.dry_run:
            dfd = self._reopen(dpath)
            if dfd < 0:
                return False
        try:
            for node in self.repo.tree(tree):
                p = spath + b"/" + node.name
                sel = 2 if full else self._selected(p)
                if not sel:
                    continue
                out = dpath + b"/" + node.name
                self.stats.current = out
                if node.type == DIR:
                    self.stats.dirs += 1
                    if self.dry_run:
                        self._plan(node.subtree or b"", p, out, sel == 2)
                        continue
                    if dfd < 0 and (dfd := self._reopen(dpath)) < 0:
                        return False
                    if not self._mkdir(dfd, out, node.name):
                        continue
                    # A subtree can take long to plan: this directory is opened afresh for
                    # its next entry rather than trusted to still be where it was.
                    os.close(dfd)
                    dfd = -1
                    assert node.subtree is not None
                    if self._plan(node.subtree, p, out, sel == 2):
                        self._dirs.append((out, node))
                elif sel == 1:
                    continue
                elif node.type == FILE:
                    here = (dpath, node.name)
                    if node.inode is not None and node.inode in self._first_by_inode:
                        self._links.append((self._first_by_inode[node.inode], here))
                        continue
                    if node.inode is not None:
                        self._first_by_inode[node.inode] = here
                    if self.dry_run:
                        self.stats.files += 1
                        self.stats.bytes_total += node.size
                    else:
                        self._jobs.append((dpath, node))
                elif not self.dry_run:
                    if dfd < 0 and (dfd := self._reopen(dpath)) < 0:
                        return False
                    self._special(dfd, out, node)
        finally:
            if dfd >= 0:
                os.close(dfd)
        return True

    def _opendir(self, dpath: bytes) -> int:
        """A fresh fd of the restored directory ``dpath``, opened below the target without
        following any symlink."""
        try:
            return open_beneath(self._tfd, dpath[len(self._tb) + 1:], _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                raise OSError(exc.errno, _NOT_FOLLOWED) from None
            raise

    def _reopen(self, dpath: bytes) -> int:
        """``_opendir``, or -1 with the error recorded for ``dpath``."""
        try:
            return self._opendir(dpath)
        except OSError as exc:
            self._error(dpath, exc)
            return -1

    def _mkdir(self, dfd: int, out: bytes, name: bytes) -> bool:
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)
        except FileExistsError:
            pass  # opening it for its subtree checks that it is a directory
        except OSError as exc:
            self._error(out, exc)
            return False
        return True

    def _special(self, dfd: int, out: bytes, node: Node) -> None:
        name = node.name
        try:
            try:
                st = os.lstat(name, dir_fd=dfd)
                if stat.S_ISDIR(st.st_mode):
                    self.stats.errors.append((out, "a directory is in the way"))
                    return
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            if node.type == SYMLINK:
                assert node.target is not None
                os.symlink(node.target, name, dir_fd=dfd)
            elif node.type == FIFO:
                os.mkfifo(name, node.mode, dir_fd=dfd)
            elif node.type in (CHARDEV, BLOCKDEV):
                kind = stat.S_IFCHR if node.type == CHARDEV else stat.S_IFBLK
                os.mknod(name, kind | node.mode, node.rdev or 0, dir_fd=dfd)
            if node.type == SYMLINK:
                # Both calls act on whatever has the name, never through it.
                if self._is_root:
                    os.chown(name, node.uid, node.gid, dir_fd=dfd, follow_symlinks=False)
                os.utime(name, ns=(node.mtime_ns, node.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            else:
                self._special_meta(dfd, name, node)
            self.stats.other += 1
        except OSError as exc:
            self._error(out, exc)

    def _special_meta(self, dfd: int, name: bytes, node: Node) -> None:
        """Metadata of a just-made FIFO or device through an O_PATH fd (which neither opens
        the device nor blocks on the FIFO), after checking it is still what was made: chmod
        by name would follow a symlink put in its place."""
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            want = {FIFO: stat.S_IFIFO, CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK}[node.type]
            if stat.S_IFMT(os.fstat(fd).st_mode) != want:
                raise OSError(errno.EEXIST, "replaced by something else while it was restored")
            # An O_PATH fd takes no fchmod; its /proc link names exactly that inode.
            proc = f"/proc/self/fd/{fd}"
            if self._is_root:
                os.chown(proc, node.uid, node.gid)
            os.chmod(proc, node.mode)
            os.utime(proc, ns=(node.mtime_ns, node.mtime_ns))
        finally:
            os.close(fd)

    # -- writing (workers) ------------------------------------------------------------------

    def _write_batches(self, batches: list[list[tuple[bytes, Node]]]) -> None:
        """Write every file, in worker processes when there is enough to share.

        Processes, not threads: restoring small files is a stream of short system calls,
        and threads passing the GIL back and forth around each of them were measured
        slower than one thread. Forked workers inherit the plan and the loaded index.
        """
        if self.workers <= 1 or len(batches) < 2:
            for b in batches:
                self._check()
                self._write_files(b)
            return
        global _ACTIVE
        _ACTIVE = (self, batches)
        ctx = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(min(self.workers, len(batches)), mp_context=ctx) as pool:
                for files, written, errors in pool.map(_write_batch_in_child, range(len(batches))):
                    self.stats.files += files
                    self.stats.bytes_written += written
                    self.stats.errors.extend(errors)
                    try:
                        self._check()
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)  # the batches not begun
                        raise
        finally:
            _ACTIVE = None

    def _by_pack(self, remote: set[bytes]) -> None:
        """Order the files by where their data lies (the pack and offset of their first
        remote chunk): the files of one pack are then written together, and each pack is
        needed by one run of consecutive batches, so it is fetched once. (Files are
        independent of each other; directory metadata and hard links come after all.)"""
        locs = self.repo.locations()
        rank: dict[bytes, int] = {}

        def key(job: tuple[bytes, Node]) -> tuple[int, int]:
            for cid in job[1].content:
                loc = locs.get(cid)
                if loc is not None and loc.pack in remote:
                    return rank.setdefault(loc.pack, len(rank)), loc.offset
            return -1, 0
        self._jobs.sort(key=key)

    def _write_waves(self, batches: list[list[tuple[bytes, Node]]], feed: PackFeed) -> None:
        """Write the batches in waves: consecutive batches whose remote packs together fit
        the wave size; each wave's packs are in memory (``_mem``, inherited by the forked
        workers) while it is written, and the next wave's are fetched meanwhile."""
        remote = feed.remote()
        locs = self.repo.locations()
        sizes = {pid: size for pid, _, size, _ in self.repo.packs()}
        waves: list[tuple[list[list[tuple[bytes, Node]]], list[bytes]]] = []
        cur: list[list[tuple[bytes, Node]]] = []
        packs: dict[bytes, None] = {}  # the current wave's packs, in first-use order
        held = 0
        for b in batches:
            need: dict[bytes, None] = {}
            for _, node in b:
                for cid in node.content:
                    loc = locs.get(cid)
                    if loc is not None and loc.pack in remote:
                        need[loc.pack] = None
            more = [p for p in need if p not in packs]
            extra = sum(sizes.get(p, 0) for p in more)
            # A batch that needs no pack beyond the wave's joins it whatever the wave
            # holds already (one batch may need more than the wave size on its own).
            if cur and more and held + extra > self._wave_bytes:
                waves.append((cur, list(packs)))
                cur, packs, held = [], {}, 0
                more, extra = list(need), sum(sizes.get(p, 0) for p in need)
            cur.append(b)
            packs.update(dict.fromkeys(more))
            held += extra
        if cur:
            waves.append((cur, list(packs)))
        feed.start([w[1] for w in waves])
        waited = wrote = 0.0
        try:
            for wave_batches, _ in waves:
                self._check()
                self._mem = {}
                t0 = time.monotonic()
                self._mem = feed.next_wave()
                t1 = time.monotonic()
                self._write_batches(wave_batches)
                waited, wrote = waited + t1 - t0, wrote + time.monotonic() - t1
        finally:
            self._mem = {}
            feed.close()
            log.info("restore: %d batches in %d waves needing %d remote packs (%d distinct); "
                     "%.2f s waiting for packs, %.2f s writing", len(batches), len(waves),
                     sum(len(w[1]) for w in waves), len({p for w in waves for p in w[1]}), waited, wrote)

    def _load(self, blob_id: bytes, view: bool = False) -> bytes | memoryview:
        """A chunk's plaintext: from a pack of the current wave in memory, else the store.
        Verified alike (AEAD, then the keyed hash of the plaintext against its id).
        ``view``: from the store, possibly a view of this thread's buffers, valid until its
        next ``_load``."""
        loc = self.repo.locations().get(blob_id) if self._mem else None
        if loc is None or loc.pack not in self._mem:
            return self.repo.load_blob_view(blob_id) if view else self.repo.load_blob(blob_id)
        sealed = self._mem[loc.pack][loc.offset:loc.offset + loc.length]
        if len(sealed) != loc.length:
            raise CorruptObject(f"pack {loc.pack.hex()}", "is shorter than its index says")
        return self.repo.opener.open(self.repo.salt(loc.pack), loc.kind, blob_id, loc.index, loc.codec,
                                     loc.raw_length, sealed)

    def _write_files(self, batch: list[tuple[bytes, Node]]) -> None:
        for dpath, node in batch:
            # Each file opens its directory afresh (one openat2): a directory swapped after
            # the previous file fails this one with its path instead of redirecting it.
            try:
                dfd = self._opendir(dpath)
            except OSError as exc:
                self._error(dpath + b"/" + node.name, exc)
                continue
            try:
                self._write_file(dfd, dpath, node)
            finally:
                os.close(dfd)

    def _write_file(self, dfd: int, dpath: bytes, node: Node) -> None:
        final = dpath + b"/" + node.name
        # The common case, a name that does not exist yet, is created in place: O_EXCL |
        # O_NOFOLLOW makes a new inode or fails (it never opens, truncates or follows what
        # is there, a symlink included). Only a name that exists (a restore over an earlier
        # one, or something planted) goes through a temporary name and a rename, which
        # replaces whatever has the name without following it. Saves a rename and an lstat
        # per file (about a quarter of the system time of restoring small files).
        name = node.name
        replace = False
        try:
            fd = os.open(name, _CREATE, 0o600, dir_fd=dfd)
        except FileExistsError:
            replace = True
            name = b".corestate-restore-" + secrets.token_hex(8).encode()
            try:
                fd = os.open(name, _CREATE, 0o600, dir_fd=dfd)
            except OSError as exc:
                self._error(final, exc)
                return
        except OSError as exc:
            self._error(final, exc)
            return
        try:
            written = 0
            for cid in node.content:
                if node.sparse:
                    data = self._load(cid)
                    assert isinstance(data, bytes)
                    _write_sparse(fd, data)
                else:
                    # Written before the next chunk is loaded: a view of a buffer will do.
                    data = self._load(cid, view=True)
                    _write_all(fd, memoryview(data))
                written += len(data)
                with self._lock:
                    self.stats.bytes_written += len(data)
            if node.sparse:
                os.ftruncate(fd, written)  # a trailing hole: seeked over, not yet written
            self._apply_meta_fd(fd, node)
            os.close(fd)
            fd = -1
            if replace:
                st = _lstat_or_none(dfd, node.name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
                os.rename(name, node.name, src_dir_fd=dfd, dst_dir_fd=dfd)
            with self._lock:
                self.stats.files += 1
        except (OSError, CorruptObject) as exc:
            if fd >= 0:
                os.close(fd)
            try:
                # What this restore created (a partial file): never an existing name.
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
            if isinstance(exc, CorruptObject):
                with self._lock:
                    self.stats.errors.append((final, f"damaged data: {exc}"))
            else:
                self._error(final, exc)

    def _apply_meta_fd(self, fd: int, node: Node) -> None:
        if self._is_root:
            os.fchown(fd, node.uid, node.gid)
        os.fchmod(fd, node.mode)
        for k, v in (node.xattrs or {}).items():
            try:
                os.setxattr(fd, k, v)
            except OSError:
                pass  # a file system without xattrs, or a namespace we may not write
        os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))

    def _apply_dir_meta(self, dpath: bytes, node: Node) -> None:
        try:
            fd = self._opendir(dpath)
        except OSError as exc:
            self._error(dpath, exc)
            return
        try:
            self._apply_meta_fd(fd, node)
        except OSError as exc:
            self._error(dpath, exc)
        finally:
            os.close(fd)

    def _link(self, src: tuple[bytes, bytes], dst: tuple[bytes, bytes]) -> None:
        (sdir, sname), (ddir, dname) = src, dst
        sfd = dfd = -1
        try:
            sfd = self._opendir(sdir)
            dfd = self._opendir(ddir)
            st = _lstat_or_none(dfd, dname)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
                os.unlink(dname, dir_fd=dfd)
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            self.stats.links += 1
            self.stats.files += 1
        except OSError as exc:
            self._error(ddir + b"/" + dname, exc)
        finally:
            for fd in (sfd, dfd):
                if fd >= 0:
                    os.close(fd)

    def _error(self, path: bytes, exc: OSError) -> None:
        with self._lock:
            self.stats.errors.append((path, exc.strerror or str(exc)))


_ACTIVE: tuple[Restore, list[list[tuple[bytes, Node]]]] | None = None


def _write_batch_in_child(index: int) -> tuple[int, int, list[tuple[bytes, str]]]:
    """In a forked worker: write one batch of the active restore; report what happened."""
    assert _ACTIVE is not None
    restore, batches = _ACTIVE
    restore.stats = RestoreStats()
    restore._write_files(batches[index])
    return restore.stats.files, restore.stats.bytes_written, restore.stats.errors


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


SPARSE_BLOCK = 64 << 10


def _write_sparse(fd: int, data: bytes) -> None:
    """Write ``data``, leaving holes where whole blocks are zero (the file is truncated to
    its size at the end, so a trailing hole is kept too)."""
    view = memoryview(data)
    for i in range(0, len(data), SPARSE_BLOCK):
        end = min(i + SPARSE_BLOCK, len(data))
        if data.count(0, i, end) == end - i:
            os.lseek(fd, end - i, os.SEEK_CUR)
        else:
            _write_all(fd, view[i:end])


def _lstat_or_none(dfd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


