"""The btrfs snapshot provider: a read-only snapshot of the subvolume holding the path.

Raw ioctls through ``linux.ioctl_buffer`` (the PyPI ``btrfsutil`` is an sdist that needs the C
libbtrfsutil headers to build; the ioctls need nothing). Creating and destroying snapshots
and searching trees need CAP_SYS_ADMIN, so this provider serves root only; others get the
reflink provider (btrfs clones work unprivileged).

Layout: the protected path ``P`` lies in the subvolume rooted at ``S`` (the nearest
ancestor with inode 256). Snapshots of ``S`` live in ``S/.corestate-snapshots/`` (mode 0700)
named ``cs-<key>-<time_ns>``, ``<key>`` from (state dir, P). A session's ``root`` is
``S/.corestate-snapshots/<name>/<P relative to S>``; when P is S itself, the snapshot shows
the ``.corestate-snapshots`` folder (with empty stubs: btrfs does not descend into nested
subvolumes), and it is listed in ``exclude``. Nested subvolumes under P appear as empty
folders in the snapshot: protect them as paths of their own.

Consistency: a snapshot is one instant of the subvolume's tree (one transaction commit),
i.e. exactly what a crash at that moment would leave: every write(2) made durable by
fsync/fdatasync before the snapshot is in it, in the order the writer made them durable;
buffered unsynced data may or may not be in it (the kernel flushes most, never a torn page).

State (``<state_dir>/btrfs-<key>.json``): the name of the parent snapshot, its creation
transaction (``otransid``) and the source subvolume's UUID. Invariants: at most one
snapshot per key survives a session: the parent. At open every ``cs-<key>-*`` that is not
the recorded parent is destroyed (the leftovers of a crash); at close the new snapshot
becomes the parent (state written first, then the old parent destroyed) or is destroyed.
A crash between those steps leaves one extra snapshot, removed at the next open.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from corestate.kernel import linux, state
from corestate.kernel.errors import SnapshotError
from corestate.kernel.snapshot import Range, open_regular, session_key
from corestate.kernel.state import PathLock

SNAPDIR = ".corestate-snapshots"
FIRST_FREE_OBJECTID = 256  # inode number of every subvolume's root folder
EMPTY_SUBVOL_DIR_OBJECTID = 2  # the stub a nested subvolume shows inside a snapshot

# ioctl numbers (checked against <linux/btrfs.h> with a C compiler).
IOC_SNAP_CREATE_V2 = 0x50009417
IOC_SNAP_DESTROY = 0x5000940F
IOC_INO_LOOKUP = 0xD0009412
IOC_TREE_SEARCH = 0xD0009411
IOC_GET_SUBVOL_INFO = 0x81F8943C
SUBVOL_RDONLY = 1 << 1

# item types in a subvolume tree
INODE_ITEM_KEY = 1
INODE_REF_KEY = 12
INODE_EXTREF_KEY = 13
EXTENT_DATA_KEY = 108

U64_MAX = 2**64 - 1

_VOL_ARGS_V2 = struct.Struct("=qQQ32s4040s")  # fd, transid, flags, unused[4], name
_VOL_ARGS = struct.Struct("=q4088s")  # fd, name
_INO_LOOKUP = struct.Struct("=QQ4080s")  # treeid, objectid, name
_SEARCH_KEY = struct.Struct("=QQQQQQQIIII32x")  # 104 bytes
_SEARCH_HDR = struct.Struct("=QQQII")  # transid, objectid, offset, type, len
_SEARCH_BUF = 4096 - _SEARCH_KEY.size


@dataclass(frozen=True, slots=True)
class SubvolInfo:
    tree_id: int
    generation: int
    ctransid: int
    otransid: int
    uuid: bytes
    parent_uuid: bytes


def is_btrfs(path: Path) -> bool:
    try:
        return linux.statfs_type(path) == linux.BTRFS_SUPER_MAGIC
    except OSError:
        return False


def subvol_info(fd: int) -> SubvolInfo:
    """Generation, creation transaction and UUIDs of the subvolume holding ``fd`` (no root needed)."""
    buf = bytearray(504)
    linux.ioctl_buffer(fd, IOC_GET_SUBVOL_INFO, buf)
    (tree_id,) = struct.unpack_from("=Q", buf, 0)
    (generation,) = struct.unpack_from("=Q", buf, 280)
    ctransid, otransid = struct.unpack_from("=QQ", buf, 344)
    return SubvolInfo(
        tree_id, generation, ctransid, otransid, bytes(buf[296:312]), bytes(buf[312:328])
    )


def subvolume_root(path: Path) -> Path:
    """The root folder of the subvolume holding ``path`` (nearest ancestor with inode 256)."""
    p = path if path.is_dir() and not path.is_symlink() else path.parent
    while os.stat(p).st_ino != FIRST_FREE_OBJECTID:
        if p.parent == p:
            raise SnapshotError(f"no btrfs subvolume root above {path}")
        p = p.parent
    return p


def _open_dir(p: Path) -> int:
    return os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def create_snapshot(source: Path, dest_dir: Path, name: str, *, readonly: bool = True) -> None:
    src = _open_dir(source)
    try:
        dst = _open_dir(dest_dir)
        try:
            args = bytearray(
                _VOL_ARGS_V2.pack(src, 0, SUBVOL_RDONLY if readonly else 0, b"", name.encode())
            )
            linux.ioctl_buffer(dst, IOC_SNAP_CREATE_V2, args)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def destroy_snapshot(dest_dir: Path, name: str) -> None:
    """Delete the subvolume ``dest_dir/name`` (read-only ones too; needs root)."""
    dst = _open_dir(dest_dir)
    try:
        args = bytearray(_VOL_ARGS.pack(0, name.encode()))
        linux.ioctl_buffer(dst, IOC_SNAP_DESTROY, args)
    finally:
        os.close(dst)


def ino_lookup(fd: int, tree_id: int, objectid: int) -> str:
    """Path (relative to the subvolume root, '' for the root) of folder ``objectid``."""
    buf = bytearray(_INO_LOOKUP.pack(tree_id, objectid, b""))
    linux.ioctl_buffer(fd, IOC_INO_LOOKUP, buf)
    name = bytes(buf[16:]).split(b"\0", 1)[0]
    return os.fsdecode(name).rstrip("/")


def tree_search(
    fd: int,
    tree_id: int,
    *,
    min_objectid: int = 0,
    max_objectid: int = U64_MAX,
    min_type: int = 0,
    max_type: int = 255,
    min_offset: int = 0,
    max_offset: int = U64_MAX,
    min_transid: int = 0,
) -> Iterator[tuple[int, int, int, int, bytes]]:
    """Items (transid, objectid, type, offset, data) of a btree, in key order (needs root).

    The bounds are one compound key range (objectid, type, offset), as in the kernel: items
    of other types between the bounds are returned too, so callers filter by type.
    ``min_transid`` skips tree blocks written before it (the reported transid is the leaf's).
    """
    key = [min_objectid, min_type, min_offset]
    while True:
        buf = bytearray(4096)
        _SEARCH_KEY.pack_into(
            buf, 0, tree_id, key[0], max_objectid, key[2], max_offset, min_transid,
            U64_MAX, key[1], max_type, 4096, 0,
        )  # fmt: skip
        linux.ioctl_buffer(fd, IOC_TREE_SEARCH, buf)
        nr = struct.unpack_from("=I", buf, 64)[0]
        if nr == 0:
            return
        pos = _SEARCH_KEY.size
        last = (0, 0, 0)
        for _ in range(nr):
            transid, objectid, offset, typ, length = _SEARCH_HDR.unpack_from(buf, pos)
            pos += _SEARCH_HDR.size
            yield transid, objectid, typ, offset, bytes(buf[pos : pos + length])
            pos += length
            last = (objectid, typ, offset)
        objectid, typ, offset = last
        if offset < U64_MAX:
            key = [objectid, typ, offset + 1]
        elif typ < 255:
            key = [objectid, typ + 1, 0]
        elif objectid < U64_MAX:
            key = [objectid + 1, 0, 0]
        else:
            return
        if (key[0], key[1], key[2]) > (max_objectid, max_type, max_offset):
            return


def _state_file(state_dir: Path, key: str) -> Path:
    return state_dir / f"btrfs-{key}.json"


def _destroy_quietly(snapdir: Path, name: str) -> None:
    try:
        destroy_snapshot(snapdir, name)
    except FileNotFoundError:
        pass


def forget(path: Path, state_dir: Path) -> None:
    """Destroy the parent snapshot an earlier btrfs session of ``path`` kept, if any."""
    sf = _state_file(state_dir, session_key(path, state_dir))
    st = state.read_json(sf)
    if st is None:
        return
    parent, snapdir = st.get("parent"), st.get("snapdir")
    if isinstance(parent, str) and isinstance(snapdir, str) and os.geteuid() == 0:
        try:
            _destroy_quietly(Path(snapdir), parent)
        except OSError:
            pass  # its file system is gone or not mounted: nothing of ours left to clean
    sf.unlink(missing_ok=True)


def try_open(path: Path, state_dir: Path, lock: PathLock) -> BtrfsSession | None:
    """A btrfs session on ``path``, or None when this provider cannot serve it."""
    if os.geteuid() != 0 or not is_btrfs(path):
        return None
    key = session_key(path, state_dir)
    try:
        sub = subvolume_root(path)
        snapdir = sub / SNAPDIR
        snapdir.mkdir(mode=0o700, exist_ok=True)
    except (OSError, SnapshotError):
        return None
    sf = _state_file(state_dir, key)
    st = state.read_json(sf) or {}
    parent = st.get("parent") if st.get("snapdir") == str(snapdir) else None
    if parent is None and isinstance(st.get("parent"), str) and isinstance(st.get("snapdir"), str):
        forget(path, state_dir)  # the path moved to another subvolume: the old parent is useless
    prefix = f"cs-{key}-"
    for entry in os.listdir(snapdir):
        if entry.startswith(prefix) and entry != parent:
            _destroy_quietly(snapdir, entry)
    if parent is not None and not (snapdir / parent).is_dir():
        parent = None
    name = f"{prefix}{time.time_ns()}"
    try:
        create_snapshot(sub, snapdir, name)
    except OSError as e:
        if e.errno in linux.UNSUPPORTED or e.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
            return None
        raise SnapshotError(f"cannot snapshot {sub}: {e}", retryable=True)
    return BtrfsSession(path, state_dir, sub, snapdir, name, parent, st, lock)


class BtrfsSession:
    provider = "btrfs"

    def __init__(
        self,
        path: Path,
        state_dir: Path,
        subvol: Path,
        snapdir: Path,
        name: str,
        parent: str | None,
        st: dict[str, object],
        lock: PathLock | None,
    ) -> None:
        self.path = path
        self.subvol = subvol
        self.snapdir = snapdir
        self.name = name
        self.rel = path.relative_to(subvol)
        self.snapshot = snapdir / name
        self.root = self.snapshot / self.rel
        self.exclude: list[Path] = [self.snapshot / SNAPDIR] if self.rel == Path() else []
        self._state_file = _state_file(state_dir, session_key(path, state_dir))
        self._lock = lock
        self._closed = False
        fd = _open_dir(self.snapshot)
        try:
            self.info = subvol_info(fd)
        finally:
            os.close(fd)
        # The parent counts only if it is a snapshot of the same subvolume (same source UUID).
        self.parent: str | None = None
        self.parent_generation: int | None = None
        if parent is not None and st.get("source_uuid") == self.info.parent_uuid.hex():
            otransid = st.get("otransid")
            if isinstance(otransid, int):
                self.parent = parent
                # The parent was copied from the source inside the commit of transaction
                # ``otransid`` while no writer could join it; the only later change made in
                # that transaction is the parent's own entry in our snapshot folder. So
                # every change the parent lacks carries a transid > otransid.
                self.parent_generation = otransid + 1
        self._stale_parent = parent  # destroyed once the walk no longer needs it
        self._reaper: threading.Thread | None = None
        self._changed: list[Path] | None = None

    @property
    def parent_root(self) -> Path | None:
        return None if self.parent is None else self.snapdir / self.parent / self.rel

    def open_file(self, walk_path: Path) -> BinaryIO:
        if self._closed:
            raise ValueError("session closed")
        return open_regular(walk_path)

    def is_stable(self, walk_path: Path) -> bool:
        return True

    def changed_paths(self) -> list[Path] | None:
        """Paths under ``root`` whose inode changed since the parent's transaction."""
        if self.parent_generation is None:
            return None
        if self._changed is None:
            try:
                self._changed = self._compute_changed(self.parent_generation)
            except OSError:
                return None  # e.g. EPERM in a user namespace: unknown, walk all
        return list(self._changed)

    def _compute_changed(self, since: int) -> list[Path]:
        fd = _open_dir(self.snapshot)
        try:
            tree = self.info.tree_id
            inos: set[int] = set()
            for _t, objectid, typ, _off, data in tree_search(
                fd, tree, min_type=INODE_ITEM_KEY, max_type=EXTENT_DATA_KEY, min_transid=since
            ):
                # INODE_ITEM: the inode's last transid; EXTENT_DATA: the extent's generation
                if (typ == INODE_ITEM_KEY and len(data) >= 16) or (
                    typ == EXTENT_DATA_KEY and len(data) >= 8
                ):
                    at = 8 if typ == INODE_ITEM_KEY else 0
                    if struct.unpack_from("=Q", data, at)[0] >= since:
                        inos.add(objectid)
            dirs: dict[int, str] = {}
            out: set[Path] = set()
            for ino in sorted(inos):
                for rel in _inode_paths(fd, tree, ino, dirs):
                    p = Path(rel)
                    if p == self.rel or p.is_relative_to(self.rel):
                        q = p.relative_to(self.rel)
                        if self.rel == Path() and q.parts[:1] == (SNAPDIR,):
                            continue
                        out.add(q)
            return sorted(out)
        finally:
            os.close(fd)

    def block_changes(self, walk_path: Path) -> list[Range] | None:
        from corestate.kernel import extents

        parent_root = self.parent_root
        if self.parent_generation is None or parent_root is None:
            return None
        try:
            parent_file = parent_root / walk_path.relative_to(self.root)
            if os.stat(parent_file).st_ino != os.stat(walk_path).st_ino:
                return None  # another file now has this name
        except (OSError, ValueError):
            return None
        return extents.changed_ranges(walk_path, self.parent_generation, parent_path=parent_file)

    def walked(self) -> None:
        """Destroy the previous parent in the background (see kernel/snapshot.py)."""
        if self._reaper is not None or self._stale_parent in (None, self.name):
            return
        self.parent = self.parent_generation = None
        self._changed = None
        self._reaper = threading.Thread(target=self._reap, name="btrfs-reaper", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        assert self._stale_parent is not None
        try:
            _destroy_quietly(self.snapdir, self._stale_parent)
        except OSError:
            pass  # close(keep_as_parent=True) tries again and reports it; else it stays the parent

    def close(self, keep_as_parent: bool) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._reaper is not None:
                self._reaper.join()
            if keep_as_parent:
                state.write_json(
                    self._state_file,
                    {
                        "parent": self.name,
                        "snapdir": str(self.snapdir),
                        "otransid": self.info.otransid,
                        "source_uuid": self.info.parent_uuid.hex(),
                    },
                )
                if self._stale_parent is not None and self._stale_parent != self.name:
                    _destroy_quietly(self.snapdir, self._stale_parent)  # gone already, after walked()
            else:
                _destroy_quietly(self.snapdir, self.name)
        except OSError as e:
            raise SnapshotError(f"cannot clean up snapshots in {self.snapdir}: {e}")
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def _inode_paths(fd: int, tree: int, ino: int, dirs: dict[int, str]) -> list[str]:
    """Every name (relative to the subvolume root) of inode ``ino``: one per hard link."""
    if ino == FIRST_FREE_OBJECTID:
        return [""]
    names: list[tuple[int, bytes]] = []
    for _t, _o, typ, off, data in tree_search(
        fd,
        tree,
        min_objectid=ino,
        max_objectid=ino,
        min_type=INODE_REF_KEY,
        max_type=INODE_EXTREF_KEY,
    ):
        pos = 0
        if typ == INODE_REF_KEY:  # key offset = parent folder; (index, name_len, name)*
            while pos + 10 <= len(data):
                (nlen,) = struct.unpack_from("=H", data, pos + 8)
                names.append((off, data[pos + 10 : pos + 10 + nlen]))
                pos += 10 + nlen
        elif typ == INODE_EXTREF_KEY:  # (parent, index, name_len, name)*
            while pos + 18 <= len(data):
                parent, _idx, nlen = struct.unpack_from("=QQH", data, pos)
                names.append((parent, data[pos + 18 : pos + 18 + nlen]))
                pos += 18 + nlen
    out = []
    for parent, name in names:
        if parent not in dirs:
            try:
                dirs[parent] = ino_lookup(fd, tree, parent)
            except OSError:
                continue  # the folder went away in this snapshot: its parent reports it
        base = dirs[parent]
        out.append(f"{base}/{os.fsdecode(name)}" if base else os.fsdecode(name))
    return out
