"""The daemon's heap: large buffers go back to the system when freed.

glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so
after the first freed share or pack, the next ones of that size come from the heap
arenas, whose freed space a process keeps. A daemon that moves 8-16 MiB shares and packs
through several threads then grows by about a hundred MiB it never gives back (measured
with the mesh benchmark: owner VmHWM 374 -> 274 MiB over a backup and a restore). A fixed
threshold of 1 MiB keeps such buffers in mmap, returned on free. Elsewhere (musl, other
systems) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("corestate.heap")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 1 << 20


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 1 MiB; True if it took."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    if not ok:
        log.info("mallopt(M_MMAP_THRESHOLD) refused: large buffers may stay in the heap")
    return ok
