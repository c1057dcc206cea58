"""The plain snapshot provider: read the live files, detect the ones torn by a writer.

For file systems with neither subvolume snapshots nor reflinks (ext4, tmpfs, NFS, ...).
Nothing is made on disk, so there is nothing to clean up. Reads are not stable: the engine
uses :func:`corestate.kernel.snapshot.read_checked`, which stamps (size, mtime_ns,
ctime_ns, ino) before reading and compares after, re-reads once and reports a file still
changing as torn. Files are each read at their own moment: no cross-file consistency.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from corestate.kernel.snapshot import Range, open_regular
from corestate.kernel.state import PathLock


class PlainSession:
    provider = "plain"

    def __init__(self, path: Path, lock: PathLock | None = None) -> None:
        self.root = path
        self.exclude: list[Path] = []
        self._lock = lock

    def open_file(self, walk_path: Path) -> BinaryIO:
        return open_regular(walk_path)

    def is_stable(self, walk_path: Path) -> bool:
        return False

    def changed_paths(self) -> Iterable[Path] | None:
        return None  # the change journal (kernel.journal) may know; this provider does not

    def block_changes(self, walk_path: Path) -> list[Range] | None:
        return None

    def walked(self) -> None:
        pass

    def close(self, keep_as_parent: bool) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
