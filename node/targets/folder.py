"""A local or mounted folder as a storage target (``file:///mnt/nas/corestate``).

Objects are plain files below the folder, one per key (the key's slashes are folders).
A put writes a temporary name in the same folder, fsyncs it, renames it over the key and
fsyncs the folder, so a crash leaves the old object or the new one, never a part. Temporary
names start with ``.tmp-``; ``list`` skips them and a later put of the same key replaces
its leftover. The folder must exist (a NAS share that is not mounted must not silently
fill the root disk): ``check`` says so.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from corestate.node.targets.store import (
    ObjectMissing,
    TargetError,
    TargetFull,
    TargetMissing,
    TargetUnavailable,
    check_key,
)

_CHUNK = 1 << 20
_PROBE = ".corestate-probe"


class FolderStore:
    def __init__(self, name: str, root: str | Path) -> None:
        self.name = name
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(self.name, key)

    def _fail(self, exc: OSError, what: str) -> TargetError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return TargetFull(self.name, f"{what}: the folder's disk is full",
                              hint=f"free space under {self.root} or lower the target's quota")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return TargetError(self.name, f"{what}: {exc.strerror}",
                               hint=f"let this user write {self.root}")
        if exc.errno == errno.ENOENT and not self.root.is_dir():
            return TargetMissing(self.name, f"the folder {self.root} does not exist",
                                 hint="create it, or mount the share it lives on")
        return TargetUnavailable(self.name, f"{what}: {exc.strerror or exc}",
                                 hint=f"check the disk or share under {self.root}")

    def put(self, key: str, src: bytes | memoryview | BinaryIO, size: int) -> None:
        path = self._path(key)
        if not self.root.is_dir():
            raise TargetMissing(self.name, f"the folder {self.root} does not exist",
                                hint="create it, or mount the share it lives on")
        tmp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                written = 0
                if isinstance(src, (bytes, memoryview)):
                    view = memoryview(src)
                    while written < len(view):
                        written += os.write(fd, view[written:written + _CHUNK])
                else:
                    while piece := src.read(_CHUNK):
                        written += os.write(fd, piece)
                if written != size:
                    raise TargetError(self.name, f"put {key}: {written} bytes given, {size} announced")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._fail(exc, f"put {key}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            if not self.root.is_dir():
                raise TargetMissing(self.name, f"the folder {self.root} does not exist",
                                    hint="create it, or mount the share it lives on") from None
            raise ObjectMissing(self.name, f"no object {key}") from None
        except OSError as exc:
            raise self._fail(exc, f"get {key}") from exc

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(exc, f"stat {key}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail(exc, f"delete {key}") from exc

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        try:
            for dirpath, dirs, files in os.walk(self.root):
                dirs.sort()
                rel = os.path.relpath(dirpath, self.root)
                for f in files:
                    if f.startswith(".tmp-") or f == _PROBE:
                        continue
                    key = f if rel == "." else f"{rel}/{f}"
                    if key.startswith(prefix):
                        found.append((key, os.stat(os.path.join(dirpath, f)).st_size))
        except OSError as exc:
            raise self._fail(exc, "list") from exc
        return iter(sorted(found))

    def free(self) -> int | None:
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise self._fail(exc, "statvfs") from exc
        return st.f_bavail * st.f_frsize

    def check(self) -> None:
        if not self.root.is_dir():
            raise TargetMissing(self.name, f"the folder {self.root} does not exist",
                                hint="create it, or mount the share it lives on")
        probe = secrets.token_bytes(64)
        self.put(_PROBE, probe, len(probe))
        try:
            if self.get(_PROBE) != probe:
                raise TargetUnavailable(self.name, "a probe object read back differently",
                                        hint=f"check the disk or share under {self.root}")
        finally:
            self.delete(_PROBE)

    def close(self) -> None:
        pass
