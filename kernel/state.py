"""Small on-disk state of the snapshot providers: per-path locks and JSON state files.

Kernel I/O (stdlib only). Invariants: a state file is replaced atomically (temp file,
fsync, rename, fsync of the folder), so after a crash it holds the old or the new content,
never a mix; a lock is an flock on a file in the state dir, so the kernel frees it when its
holder dies (SIGKILL included) and a stale lock never blocks the next session.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from corestate.kernel.errors import SnapshotBusy
from corestate.kernel.snapshot import session_key


class PathLock:
    """Exclusive lock of one (state dir, protected path); held for a session's lifetime."""

    def __init__(self, fd: int, key: str) -> None:
        self._fd: int | None = fd
        self.key = key

    @classmethod
    def acquire(cls, path: Path, state_dir: Path) -> PathLock:
        key = session_key(path, state_dir)
        fd = os.open(state_dir / f"lock-{key}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SnapshotBusy(f"a snapshot session of {path} is already open")
        return cls(fd, key)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def read_json(p: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable state = no state: the caller falls back to a full walk
    return data if isinstance(data, dict) else None


def write_atomic(path: Path, data: bytes | memoryview, mode: int = 0o600, *, tmp_prefix: str = "") -> None:
    """Write a file so that a crash leaves the old or the new content (or none), never
    half: a temporary name in the same folder, every byte written and fsynced, rename,
    fsync of the folder. ``tmp_prefix`` names the temporary file (so a cleaner that knows
    the prefix can remove leftovers); by default ``.NAME.tmp-PID``."""
    tmp = path.with_name(f"{tmp_prefix}{path.name[:16]}-{os.urandom(4).hex()}" if tmp_prefix
                         else f".{path.name}.tmp-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if tmp_prefix else os.O_TRUNC)
    fd = os.open(tmp, flags, mode)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(p: Path, data: dict[str, Any]) -> None:
    write_atomic(p, json.dumps(data, sort_keys=True).encode())
