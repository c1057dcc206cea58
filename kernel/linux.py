"""Linux file-system calls the standard library lacks (syncfs, statfs, openat2, fanotify, ...).

This is kernel I/O: pure cores and the simulator never import it (import-linter).

Every wrapper raises ``OSError`` with the real errno, so callers can tell "not supported
here" (EOPNOTSUPP, ENOTTY, EINVAL, EXDEV) from "not allowed" (EPERM, EACCES) and fall back
to a weaker provider instead of failing. Struct layouts are the x86-64/aarch64 ones (LP64);
the sizes are encoded in the ioctl numbers, so a wrong layout fails with ENOTTY/EINVAL and
never silently misreads memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import struct
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

BTRFS_SUPER_MAGIC = 0x9123683E
XFS_SUPER_MAGIC = 0x58465342
EXT4_SUPER_MAGIC = 0xEF53
TMPFS_MAGIC = 0x01021994

# ioctl numbers (checked against <linux/fs.h> with a C compiler).
FICLONE = 0x40049409
FS_IOC_FIEMAP = 0xC020660B

#: errnos that mean "this file system / kernel cannot do that", as opposed to a real failure.
UNSUPPORTED = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EISDIR}
)


def _raise_errno(what: str = "") -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), what or None)


_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


def ioctl_buffer(fd: int, request: int, buf: bytearray) -> None:
    """ioctl(2) with an in/out argument buffer, the GIL released for the call.

    ``fcntl.ioctl`` holds the GIL for buffers over 1 KiB; a btrfs snapshot delete or create
    can wait for a transaction commit for a second, and every other thread of the process
    (the daemon's event loop, the backup's collector) would stop with it.
    """
    arg = (ctypes.c_char * len(buf)).from_buffer(buf)
    if _libc.ioctl(fd, request, arg) < 0:
        _raise_errno()


def syncfs(fd: int) -> None:
    """Flush every dirty page of the file system holding ``fd`` (one call, not one per file)."""
    if _libc.syncfs(fd) != 0:
        _raise_errno()


# --- openat2: open below a directory, never through a symlink ----------------------------

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
# New system calls share one number on every architecture (the asm-generic table).
_SYS_OPENAT2 = 437


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc.syscall.restype = ctypes.c_long
#: False once openat2 answered ENOSYS (a kernel before 5.6) or EPERM (a seccomp filter that
#: does not know it): the component walk is used from then on.
_have_openat2 = True


def openat2(dirfd: int, path: bytes, flags: int, resolve: int) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` under the ``RESOLVE_*`` rules."""
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        _raise_errno(os.fsdecode(path))
    return int(fd)


def open_beneath(dirfd: int, path: bytes, flags: int) -> int:
    """Open ``path`` (relative; ``b""`` is ``dirfd`` itself) strictly below ``dirfd``, following
    no symlink in any component and no ``..``: a symlink fails with ELOOP (or ENOTDIR), an
    escape with EXDEV. ``O_NOFOLLOW | O_CLOEXEC`` are always added to ``flags``; no O_CREAT.

    openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS does it in one call. Where the kernel
    lacks it, each component is opened with O_NOFOLLOW relative to the one before, which
    gives the same guarantee with one call per component.
    """
    global _have_openat2
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    path = path or b"."
    if _have_openat2:
        for _ in range(8):
            try:
                return openat2(dirfd, path, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue  # the kernel saw a concurrent rename and could not prove safety
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
                _have_openat2 = False
                break
        else:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(path))
    comps = [c for c in path.split(b"/") if c and c != b"."]
    if path.startswith(b"/") or b".." in comps:
        raise OSError(errno.EXDEV, "an absolute path or '..' would leave the directory", os.fsdecode(path))
    if not comps:
        return os.open(".", flags, dir_fd=dirfd)
    fd = dirfd
    try:
        for c in comps[:-1]:
            # O_PATH: only search permission is needed on the way down; O_DIRECTORY makes an
            # O_PATH|O_NOFOLLOW open of a symlink fail instead of returning the link itself.
            nxt = os.open(c, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            if fd != dirfd:
                os.close(fd)
            fd = nxt
        return os.open(comps[-1], flags, dir_fd=fd)
    finally:
        if fd != dirfd:
            os.close(fd)


def statfs_type(path: Path | str) -> int:
    """The file-system magic (``f_type`` of statfs(2)) of the file system holding ``path``."""
    buf = ctypes.create_string_buffer(120)  # sizeof(struct statfs) on LP64
    if _libc.statfs(os.fsencode(path), buf) != 0:
        _raise_errno(str(path))
    (ftype,) = struct.unpack_from("=q", buf.raw, 0)
    return int(ftype) & 0xFFFFFFFF


def statfs_fsid(path: Path | str) -> bytes:
    """The 8 bytes of ``f_fsid`` (as fanotify reports it in events) of ``path``'s file system."""
    buf = ctypes.create_string_buffer(120)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        _raise_errno(str(path))
    return buf.raw[56:64]


def ficlone(dst_fd: int, src_fd: int) -> None:
    """Make ``dst_fd`` share all of ``src_fd``'s extents (FICLONE): O(extents), no data copy.

    The kernel takes both inodes' locks and flushes the source first, so the clone is one
    instant of the source file: a concurrent write(2) lands wholly before or after it.
    """
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


# --- FIEMAP -----------------------------------------------------------------------------

FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_SHARED = 0x2000

_FIEMAP_HDR = struct.Struct("=QQIIII")  # fm_start, fm_length, flags, mapped, count, reserved
_FIEMAP_EXT = struct.Struct("=QQQQQI12x")  # logical, physical, length, reserved64[2], flags


def fiemap(fd: int, *, sync: bool = True, batch: int = 256) -> list[tuple[int, int, int, int]]:
    """All extents of ``fd`` as (logical, physical, length, flags), in file order."""
    out: list[tuple[int, int, int, int]] = []
    start = 0
    while True:
        buf = bytearray(_FIEMAP_HDR.size + batch * _FIEMAP_EXT.size)
        _FIEMAP_HDR.pack_into(
            buf, 0, start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC if sync else 0, 0, batch, 0
        )
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _FIEMAP_HDR.unpack_from(buf, 0)[3]
        if mapped == 0:
            return out
        last = False
        for i in range(mapped):
            logical, physical, length, _r0, _r1, flags = _FIEMAP_EXT.unpack_from(
                buf, _FIEMAP_HDR.size + i * _FIEMAP_EXT.size
            )
            out.append((logical, physical, length, flags))
            last = bool(flags & FIEMAP_EXTENT_LAST)
            start = logical + length
        if last:
            return out


# --- fanotify / inotify -------------------------------------------------------------------

_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.open_by_handle_at.restype = ctypes.c_int

AT_FDCWD = -100


def fanotify_init(flags: int, event_f_flags: int) -> int:
    fd = _libc.fanotify_init(flags, event_f_flags)
    if fd < 0:
        _raise_errno("fanotify_init")
    return int(fd)


def fanotify_mark(fd: int, flags: int, mask: int, path: Path | str) -> None:
    if _libc.fanotify_mark(fd, flags, mask, AT_FDCWD, os.fsencode(path)) != 0:
        _raise_errno(f"fanotify_mark {path}")


def inotify_init1(flags: int) -> int:
    fd = _libc.inotify_init1(flags)
    if fd < 0:
        _raise_errno("inotify_init1")
    return int(fd)


def inotify_add_watch(fd: int, path: Path | str, mask: int) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        _raise_errno(f"inotify_add_watch {path}")
    return int(wd)


def open_by_handle_at(mount_fd: int, handle: bytes, flags: int) -> int:
    """Open the object a ``struct file_handle`` (as fanotify reports it) names."""
    fd = _libc.open_by_handle_at(mount_fd, handle, flags)
    if fd < 0:
        _raise_errno("open_by_handle_at")
    return int(fd)

