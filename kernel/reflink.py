"""The reflink snapshot provider: clone each file the engine opens, read the clone.

For file systems with FICLONE (xfs with ``reflink=1``, btrfs when a subvolume snapshot is
not possible). Cost is O(files opened): the engine opens only new or changed files, so an
incremental backup clones only those. A clone is one instant of that file (the kernel
locks the inode and flushes it), so no file is torn; there is no cross-file consistency.

What lands on disk: a scratch folder ``.corestate-scratch-<key>`` on the same file system
(in the state dir when that is on the same file system, else at the file system's mount
root, else at the top of the protected path, where it is reported in ``exclude``). Clones
are unnamed O_TMPFILE inodes in it, freed by the kernel when their fd closes, even when the
process is killed; the folder itself is removed at close and, after a crash, by the next
``open_snapshot`` of the same path (:func:`remove_stale`). When O_TMPFILE is refused, a
clone gets a name, is opened and unlinked at once.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from corestate.kernel import linux
from corestate.kernel.snapshot import Range, open_regular, session_key
from corestate.kernel.state import PathLock

SCRATCH_PREFIX = ".corestate-scratch-"


def _top(path: Path) -> Path:
    return path if path.is_dir() and not path.is_symlink() else path.parent


def _mount_root(p: Path) -> Path:
    dev = os.stat(p).st_dev
    while not os.path.ismount(p):
        parent = p.parent
        if parent == p or os.stat(parent).st_dev != dev:
            break
        p = parent
    return p


def _candidates(path: Path, state_dir: Path) -> list[Path]:
    key = session_key(path, state_dir)
    top = _top(path)
    out: list[Path] = []
    try:
        if os.stat(state_dir).st_dev == os.stat(top).st_dev:
            out.append(state_dir / f"{SCRATCH_PREFIX}{key}")
    except OSError:
        pass
    try:
        out.append(_mount_root(top) / f"{SCRATCH_PREFIX}{key}")
    except OSError:
        pass
    out.append(top / f"{SCRATCH_PREFIX}{key}")
    return list(dict.fromkeys(out))


def remove_stale(path: Path, state_dir: Path) -> None:
    """Remove scratch folders a crashed session of this (state dir, path) left behind."""
    for scratch in _candidates(path, state_dir):
        shutil.rmtree(scratch, ignore_errors=True)


def _tmpfile(scratch: Path) -> int:
    return os.open(scratch, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)


def _probe(scratch: Path) -> None:
    """Raise OSError unless an O_TMPFILE-or-named clone works inside ``scratch``."""
    src = _tmpfile(scratch)
    try:
        os.write(src, b"\0" * 4096)
        dst = _tmpfile(scratch)
        try:
            linux.ficlone(dst, src)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def try_open(path: Path, state_dir: Path, lock: PathLock) -> ReflinkSession | None:
    """A reflink session on ``path``, or None when its file system cannot clone."""
    for scratch in _candidates(path, state_dir):
        try:
            scratch.mkdir(mode=0o700)
        except OSError:
            continue
        try:
            _probe(scratch)
        except OSError as e:
            shutil.rmtree(scratch, ignore_errors=True)
            if e.errno in linux.UNSUPPORTED:
                return None  # the file system cannot clone: no other folder will help
            continue  # EPERM, EROFS, ENOSPC...: try the next folder
        return ReflinkSession(path, scratch, lock)
    return None


class ReflinkSession:
    provider = "reflink"

    def __init__(self, path: Path, scratch: Path, lock: PathLock | None) -> None:
        self.root = path
        self.scratch = scratch
        self.exclude: list[Path] = [scratch] if scratch.is_relative_to(_top(path)) else []
        self._lock = lock
        self._live: set[Path] = set()  # files that could not be cloned: read live, re-check
        self._closed = False

    def open_file(self, walk_path: Path) -> BinaryIO:
        if self._closed:
            raise ValueError("session closed")
        src = open_regular(walk_path)
        try:
            dst = self._clone(src.fileno())
        except OSError as e:
            if e.errno not in linux.UNSUPPORTED:
                src.close()
                raise
            # e.g. a file on another file system mounted inside the tree, a swap file
            self._live.add(walk_path)
            return src
        src.close()
        self._live.discard(walk_path)
        return os.fdopen(dst, "rb", buffering=0)

    def _clone(self, src_fd: int) -> int:
        try:
            dst = _tmpfile(self.scratch)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            return self._clone_named(src_fd)
        try:
            linux.ficlone(dst, src_fd)
        except BaseException:
            os.close(dst)
            raise
        return dst

    def _clone_named(self, src_fd: int) -> int:
        name = self.scratch / f"clone-{os.getpid()}-{os.urandom(6).hex()}"
        dst = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            linux.ficlone(dst, src_fd)
        except BaseException:
            os.close(dst)
            raise
        finally:
            os.unlink(name)  # the open fd keeps the clone alive; nothing named stays behind
        return dst

    def is_stable(self, walk_path: Path) -> bool:
        return walk_path not in self._live

    def changed_paths(self) -> Iterable[Path] | None:
        return None

    def block_changes(self, walk_path: Path) -> list[Range] | None:
        return None

    def walked(self) -> None:
        pass

    def close(self, keep_as_parent: bool) -> None:
        if not self._closed:
            self._closed = True
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
