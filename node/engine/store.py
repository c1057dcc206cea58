"""Pack stores: where whole packs live. The engine sees only the ``PackStore`` protocol.

``LocalPackStore`` keeps packs as plain files ``ROOT/packs/<2 hex>/<64 hex>``. A pack is
written to a temporary name in its final folder, fsynced, renamed, and the folder fsynced:
after ``put`` returns, the pack survives a crash or power loss; a crash before leaves at
most a temporary file, which ``clean_temporary`` removes. The mesh implements the same
protocol with shares on peers (mesh issue).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from corestate.kernel.state import write_atomic
from corestate.node.errors import PackMissing, StoreError, StoreFull


class PackStore(Protocol):
    def put(self, pack_id: bytes, data: bytes) -> None: ...
    def get(self, pack_id: bytes) -> bytes: ...
    def read_range(self, pack_id: bytes, offset: int, length: int) -> bytes: ...
    def size(self, pack_id: bytes) -> int: ...
    def list(self) -> Iterator[bytes]: ...
    def delete(self, pack_id: bytes) -> None: ...


def _io_error(exc: OSError, where: Path) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(str(where))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(f"cannot write the store at {where}: {exc.strerror}",
                          hint="check the permissions and mount of the store folder")
    return StoreError(f"store I/O error at {where}: {exc.strerror}", retryable=True)


class LocalPackStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs = root / "packs"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_fds: list[int] = []

    def create(self) -> None:
        self.packs.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, pack_id: bytes) -> Path:
        h = pack_id.hex()
        return self.packs / h[:2] / h

    def put(self, pack_id: bytes, data: bytes) -> None:
        final = self.path(pack_id)
        try:
            final.parent.mkdir(exist_ok=True, mode=0o700)
            write_atomic(final, data, tmp_prefix=".tmp-")
        except OSError as exc:
            raise _io_error(exc, self.root)

    def read_range(self, pack_id: bytes, offset: int, length: int) -> bytes:
        return os.pread(self._fd(pack_id), length, offset)

    def read_range_into(self, pack_id: bytes, offset: int, buf: memoryview) -> int:
        """Like ``read_range`` into ``buf`` (``len(buf)`` bytes at most); bytes read."""
        return os.preadv(self._fd(pack_id), [buf], offset)

    def _fd(self, pack_id: bytes) -> int:
        # Each thread keeps a few packs open: a restore reads many blobs of one pack.
        cache: dict[bytes, int] | None = getattr(self._local, "fds", None)
        if cache is None:
            cache = self._local.fds = {}
        fd = cache.get(pack_id)
        if fd is None:
            try:
                fd = os.open(self.path(pack_id), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise PackMissing(pack_id.hex())
            if len(cache) >= 8:
                old = cache.pop(next(iter(cache)))
                with self._lock:
                    self._open_fds.remove(old)
                os.close(old)
            cache[pack_id] = fd
            with self._lock:
                self._open_fds.append(fd)
        return fd

    def close(self) -> None:
        """Close the pack files readers left open."""
        with self._lock:
            fds, self._open_fds = self._open_fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._local = threading.local()

    def get(self, pack_id: bytes) -> bytes:
        try:
            return self.path(pack_id).read_bytes()
        except FileNotFoundError:
            raise PackMissing(pack_id.hex())

    def size(self, pack_id: bytes) -> int:
        try:
            return self.path(pack_id).stat().st_size
        except FileNotFoundError:
            raise PackMissing(pack_id.hex())

    def list(self) -> Iterator[bytes]:
        if not self.packs.exists():
            return
        for sub in os.scandir(self.packs):
            if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
                continue
            for e in os.scandir(sub.path):
                if len(e.name) == 64 and not e.name.startswith("."):
                    try:
                        yield bytes.fromhex(e.name)
                    except ValueError:
                        continue

    def delete(self, pack_id: bytes) -> None:
        self.path(pack_id).unlink(missing_ok=True)

    def clean_temporary(self) -> int:
        """Remove temporary files a crash left behind; return how many."""
        n = 0
        if self.packs.exists():
            for sub in os.scandir(self.packs):
                if sub.is_dir(follow_symlinks=False):
                    for e in os.scandir(sub.path):
                        if e.name.startswith(".tmp-"):
                            os.unlink(e.path)
                            n += 1
        return n


class StagingPackStore(LocalPackStore):
    """The local store of a mesh node.

    Packs are written here first; once their shares are acknowledged by peers, data packs
    may leave (``remote()`` then names them). ``list`` names both, so the index keeps
    packs that live only on peers; reading a remote-only pack raises ``PackMissing``
    until a command fetched it back (``put``) for the time it needs it.
    """

    def __init__(self, root: Path, remote: Callable[[], set[bytes]]) -> None:
        super().__init__(root)
        self.remote = remote

    def list(self) -> Iterator[bytes]:
        local = set(super().list())
        yield from local
        yield from self.remote() - local

    def local_ids(self) -> set[bytes]:
        return set(super().list())

    def has_local(self, pack_id: bytes) -> bool:
        return self.path(pack_id).exists()
