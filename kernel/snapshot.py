"""Snapshot sessions: one consistent view of a protected path, and the choice of provider.

The engine backs up a protected path through a :class:`SnapshotSession`:

```python
session = open_snapshot(path, state_dir)           # btrfs > reflink > plain
try:
    changed = session.changed_paths()               # None: walk everything
    for walk_path in <walk session.root, skipping session.exclude>:
        res = read_checked(session, walk_path, consume)   # consume(file) -> chunk ids
        if res.torn: <flag the file as torn in the snapshot record>
        ranges = session.block_changes(walk_path)   # large files: None = read all
    session.walked()                                # every path listed, every plan made
    <wait for the reads>
    session.close(keep_as_parent=True)              # only when the backup was recorded
except BaseException:
    session.close(keep_as_parent=False)
    raise
```

Members (the whole interface; nothing else is promised):

- ``provider``: ``"btrfs"`` (read-only subvolume snapshot: one instant of the whole tree),
  ``"reflink"`` (each file cloned when opened: one instant per file), ``"plain"`` (live
  files, re-checked after reading).
- ``root``: the directory (or file) to walk; it shows the protected path as of the snapshot.
- ``exclude``: absolute paths under ``root`` the walk must skip (our own snapshot folders);
  possibly empty.
- ``open_file(walk_path)``: an unbuffered binary reader (``io.FileIO`` for the real
  providers, so ``fileno()`` works) of a regular file found under ``root``. The reflink
  provider clones the file first (into an unnamed O_TMPFILE: nothing to clean up).
- ``is_stable(walk_path)``: True when what was read through ``open_file`` needs no torn-file
  re-check (btrfs always; reflink unless that file could not be cloned; plain never). Ask it
  after opening the file.
- ``changed_paths()``: paths (relative to ``root``) changed since the parent snapshot, or
  ``None`` when not known (walk all). Reported: every file whose data or metadata changed
  (each of its hard-link names) and every directory whose entries changed; a deleted or
  renamed-away name shows up through its directory. Ancestors are not listed.
- ``block_changes(walk_path)``: byte ranges ``[(offset, length), ...]`` of that file written
  since the parent snapshot (sorted, merged), or ``None`` when not known (read all).
- ``walked()``: the walk is over (every ``changed_paths`` and ``block_changes`` asked); the
  session may let go of what only they needed. The btrfs provider starts destroying the
  previous parent then, in the background, so its wait for a transaction commit overlaps
  the reads instead of following them; ``close`` waits for it. After ``walked`` both
  answer ``None``. If the backup then fails, the next one has no parent (a full read:
  slower, never wrong).
- ``close(keep_as_parent)``: remove everything the session made, except that with
  ``keep_as_parent=True`` a btrfs snapshot stays as the parent of the next incremental
  (replacing the previous parent). Idempotent.

Invariants:

- At most one snapshot per (state dir, protected path) survives a session: the parent.
  Anything else found at open (after a crash, SIGKILL included) is removed before a new
  snapshot is taken. One session per (state dir, protected path) at a time: a second
  ``open_snapshot`` raises :class:`SnapshotBusy` (the lock is an flock, freed by the kernel
  when a holder dies).
- This module imports no OS-touching module at import time (the providers load lazily), so
  pure code may import the protocol.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, TypeVar

PROVIDERS: tuple[str, ...] = ("btrfs", "reflink", "plain")

Range = tuple[int, int]
T = TypeVar("T")


class SnapshotSession(Protocol):
    """What the engine reads a protected path through (see the module docstring)."""

    provider: str
    root: Path
    exclude: list[Path]

    def open_file(self, walk_path: Path) -> BinaryIO: ...

    def is_stable(self, walk_path: Path) -> bool: ...

    def changed_paths(self) -> Iterable[Path] | None: ...

    def block_changes(self, walk_path: Path) -> list[Range] | None: ...

    def walked(self) -> None: ...

    def close(self, keep_as_parent: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What must not change while a live file is read: size, times and identity."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def read_was_stable(f: BinaryIO, walk_path: Path, before: FileStamp) -> bool:
    """True when neither the open inode nor the name changed since ``before`` was taken.

    fstat catches writes to the inode we read; stat of the name catches a replacement by
    rename (the usual "save" of editors). Linux ≥ 6.13 gives fine-grained ctime/mtime once a
    timestamp was queried (multigrain timestamps), so a write right after our first stat is
    seen even within one clock tick; older kernels may miss a write in the same tick.
    """
    try:
        after_fd = FileStamp.of(os.fstat(f.fileno()))
        after_name = FileStamp.of(os.stat(walk_path, follow_symlinks=False))
    except (OSError, ValueError):
        return False
    return after_fd == before and after_name == before


@dataclass(frozen=True, slots=True)
class Checked(Generic[T]):
    """Result of :func:`read_checked`: the value of the last read and whether it was torn."""

    value: T
    torn: bool
    attempts: int


#: A file open for writing must have been left alone this long to be read live as whole.
SETTLE_NS = 1_000_000_000


def read_checked(
    session: SnapshotSession,
    walk_path: Path,
    consume: Callable[[BinaryIO], T],
    *,
    retries: int = 1,
    settle_ns: int = SETTLE_NS,
) -> Checked[T]:
    """Read ``walk_path`` through the session with ``consume``; re-read a torn live file.

    A stable read (btrfs, reflink clone) runs ``consume`` once. A live read counts as whole
    when the file's stamp did not change across the read and either nobody had the file
    open for writing when the read began (a read lease could be taken: a later writer must
    open it, and its write then moves the timestamps), or its last change is at least
    ``settle_ns`` old. The second rule exists because timestamps move when a write(2)
    *starts*: a write in progress when we stamped the file (its writer preempted mid-copy)
    tears the read without any visible change. The residual risk is a single write(2)
    stalled for longer than ``settle_ns``.

    A file still not whole after ``1 + retries`` reads comes back with ``torn=True``; the
    engine records it so, never silently.
    """
    attempts = 0
    while True:
        attempts += 1
        with session.open_file(walk_path) as f:
            if session.is_stable(walk_path):
                return Checked(consume(f), False, attempts)
            now = time.time_ns()
            before = _stamp(f)
            quiet = _no_writers(f)
            value = consume(f)
            unchanged = before is not None and read_was_stable(f, walk_path, before)
        settled = before is not None and now - before.ctime_ns >= settle_ns
        if unchanged and (quiet or settled):
            return Checked(value, False, attempts)
        if attempts > retries:
            return Checked(value, True, attempts)


def _no_writers(f: BinaryIO) -> bool:
    """True when no one has the file open for writing (or mapped writable) right now.

    A read lease is granted only then; we drop it at once, we only want the answer. False
    also when we cannot tell (not the owner without CAP_LEASE, file systems without leases).
    """
    try:
        fd = f.fileno()
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except (OSError, ValueError, AttributeError):
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except OSError:
        pass
    return True


def _stamp(f: BinaryIO) -> FileStamp | None:
    try:
        return FileStamp.of(os.fstat(f.fileno()))
    except (OSError, ValueError, AttributeError):  # in-memory readers (kernel.fake) have no fd
        return None


def session_key(path: Path, state_dir: Path) -> str:
    """Short stable key naming what a session leaves on disk for (state dir, protected path)."""
    h = hashlib.sha256(f"{state_dir.resolve()}\0{path.resolve()}".encode())
    return h.hexdigest()[:16]


def open_regular(walk_path: Path) -> BinaryIO:
    """Open a regular file for reading without following a symlink swapped in under us."""
    fd = os.open(walk_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"not a regular file: {walk_path}")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def open_snapshot(
    path: Path, state_dir: Path, *, allow: Sequence[str] = PROVIDERS
) -> SnapshotSession:
    """Open a session on ``path``, trying the providers in ``allow`` order (btrfs > reflink > plain).

    ``state_dir`` holds the small state files and locks (per node; not inside ``path``).
    Stale leftovers of earlier sessions on this path are removed first, whatever provider
    made them.
    """
    # Deferred imports: these modules touch the OS; importing this one must not.
    from corestate.kernel import btrfs, plain, reflink, state

    path = Path(os.path.abspath(path))
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = state.PathLock.acquire(path, state_dir)
    try:
        reflink.remove_stale(path, state_dir)
        for name in allow:
            if name == "btrfs":
                session: SnapshotSession | None = btrfs.try_open(path, state_dir, lock)
            elif name == "reflink":
                session = reflink.try_open(path, state_dir, lock)
            elif name == "plain":
                session = plain.PlainSession(path, lock)
            else:
                raise ValueError(f"unknown snapshot provider {name!r}")
            if session is not None:
                if name != "btrfs":
                    # A parent left by an earlier btrfs session is useless to another provider.
                    btrfs.forget(path, state_dir)
                return session
    except BaseException:
        lock.release()
        raise
    lock.release()
    raise ValueError(f"no snapshot provider among {list(allow)} can serve {path}")
