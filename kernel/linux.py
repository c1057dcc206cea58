"""Linux file-system calls the standard library lacks (syncfs, hole probing).

This is kernel I/O: pure cores and the simulator never import it (import-linter).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(fd: int) -> None:
    """Flush every dirty page of the file system holding ``fd`` (one call, not one per file)."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
