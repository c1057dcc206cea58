"""The daemon's heap: memory of large freed buffers handed back to the system.

Shares and packs (8-16 MiB) pass through the daemon by the hundred. glibc serves blocks
that large from mmap at first, but raises its mmap threshold to the size of each such
block freed (up to 32 MiB), so from then on they come from the heap arenas, one per
thread that allocates; freed, their pages stay with the process, and a daemon that moved
a backup's packs through a few threads holds about a hundred MiB it no longer uses
(measured with bench_mesh: the owner's VmHWM).

A fixed low threshold (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``) keeps them out of the heap,
but also every ≥ 1 MiB buffer of the engine (file reads, chunks, pack buffers): a
standalone backup of 256 MiB then took 2.5x the page faults (330 k against 130 k) and
about 13% more CPU, enough to slow the daemon's other calls on a loaded machine. Instead
:func:`trim` gives the freed pages back (``malloc_trim``) once per pack uploaded: one call
per 16 MiB moved, the engine's allocations untouched. Elsewhere (musl, other systems)
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger("corestate.heap")

_lock = threading.Lock()
_trim: Any = None  # libc's malloc_trim, once looked up
_looked = False


def trim() -> bool:
    """Return the heap's free pages to the system now (glibc); False where unsupported."""
    global _trim, _looked
    with _lock:
        if not _looked:
            _looked = True
            name = ctypes.util.find_library("c")
            try:
                fn = ctypes.CDLL(name).malloc_trim if name else None
            except (OSError, AttributeError):
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
            _trim = fn
    if _trim is None:
        return False
    _trim(0)
    return True
