"""Bulk GF(2^8) linear maps over whole shares, vectorised with numpy.

Role: the one hot loop of the codec. ``apply(coeffs, inputs, out)`` computes, for every byte
position ``c``, ``out[i][c] = sum_j coeffs[i][j] * inputs[j][c]`` in GF(2^8) (sum is XOR).
Encoding is this with the parity matrix; decoding is this with rows of an inverted
submatrix. Nothing here knows about shares, headers or reedsolo.

How (and why not table lookups): numpy's gather (``np.take`` with a 256-entry table) runs
at ~0.7 GB/s here, while XOR, add and compare run at 20-35 GB/s on arrays that stay in
cache. So we never look up products. Instead we slice the *coefficients* by bit and use
Horner's rule in the field, with ``alpha = 2``::

    out_i = sum_t alpha^t * S_{i,t},   S_{i,t} = XOR of the inputs j whose coeffs[i][j]
                                               has bit t set
          = (...((S_{i,7} * 2 + S_{i,6}) * 2 + S_{i,5}) ...) * 2 + S_{i,0}

Multiplying a whole array by 2 is four cheap element-wise operations (the top bit, as a
signed compare, selects the reduction byte ``0x1d``; then add to itself and XOR).
``S_{i,t}`` is a XOR of subsets of the inputs; the inputs are taken in groups of ``g`` and
every XOR combination within a group is computed once per block (the "four Russians"
trick), so each ``S_{i,t}`` costs one XOR per group instead of one per input.

Invariants:
- Pure function of its arguments; no global state other than a lazily started thread pool
  used to split large inputs by column ranges (numpy releases the GIL in these loops).
- Columns are independent, so any split into column blocks gives identical bytes; blocks
  keep the working set (combinations, accumulators) near the L2/L3 cache sizes while
  keeping numpy's per-call overhead (~1 us) small against the work of each call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

# Reduction byte: alpha^8 = x^8 mod 0x11d. Multiplying by 2 is (v << 1) ^ (0x1d if v >= 128).
_REDUCE = 0x1D

# Below this much work (columns x array operations per block) the thread hand-off costs
# more than it saves; memory-bound programs (a few XORs per column) never gain from it.
_THREAD_MIN_WORK = 64 << 20
_THREAD_MIN_OPS = 8
# Threads never split finer than this many columns (keeps blocks long for numpy).
_THREAD_MIN_COLUMNS = 1 << 16


def default_threads() -> int:
    """Threads used for large inputs unless the caller says otherwise (1 disables them)."""
    return max(1, min(4, os.cpu_count() or 1))


# Bounds on the columns per block: below the minimum numpy's per-call cost dominates;
# above the maximum nothing more is saved (measured on a 2 MiB-L2 Xeon: 4-of-6 encode is
# fastest at ~128 KiB columns, 10-of-16 at ~64 KiB, 20-of-30 at ~32 KiB; 512 KiB blocks
# cost 25-45% more, 16 KiB blocks 10-70% more).
_MIN_BLOCK = 32 << 10
_MAX_BLOCK = 512 << 10
_DEFAULT_CACHE = 2 << 20


@lru_cache(maxsize=1)
def _cache_bytes() -> int:
    """The L2 cache of one core (sysfs; 2 MiB when unknown): the budget of a block."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        size = int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return _DEFAULT_CACHE
    # A VM may report nonsense: keep the budget within what was measured to work.
    return max(256 << 10, min(8 << 20, size))


@dataclass(frozen=True, slots=True)
class _Program:
    """A coefficient matrix compiled into Horner steps over grouped input combinations."""

    rows: int
    group: int  # inputs per group
    groups: tuple[tuple[int, ...], ...]  # input indices of each group
    # steps[s] lists (row, group, mask) to XOR into the accumulator at Horner step s; the
    # accumulator is doubled before every step but the first.
    steps: tuple[tuple[tuple[int, int, int], ...], ...]
    masks: tuple[frozenset[int], ...]  # per group, the combinations some step uses
    block: int  # columns per block
    xor_rows: tuple[tuple[int, ...], ...] | None  # coefficients all 0/1: inputs to XOR per row
    ops: int  # whole-array operations per block, a measure of work per column


def _group_size(rows: int, width: int) -> int:
    # Building every combination of a group of g inputs costs (2^g - g - 1) / g array
    # operations per input; each (row, bit) then costs 1 / g per input. Counting only
    # operations favours g = 4 or 5 for many rows, but then the 2^g combinations of a block
    # spill out of L2 and the measured optimum on this hardware is 3. A single group for
    # up to five inputs makes every S_{i,t} a ready-made combination.
    return width if width <= 5 else 3


@lru_cache(maxsize=512)
def _compile(coeffs: tuple[tuple[int, ...], ...], width: int) -> _Program:
    rows = len(coeffs)
    g = _group_size(rows, width)
    groups = tuple(tuple(range(s, min(width, s + g))) for s in range(0, width, g))
    top = max((c.bit_length() for row in coeffs for c in row), default=0)
    steps: list[tuple[tuple[int, int, int], ...]] = []
    used: list[set[int]] = [set() for _ in groups]
    for bit in range(top - 1, -1, -1):
        step: list[tuple[int, int, int]] = []
        for i, row in enumerate(coeffs):
            for gi, members in enumerate(groups):
                mask = 0
                for a, j in enumerate(members):
                    if (row[j] >> bit) & 1:
                        mask |= 1 << a
                if mask:
                    step.append((i, gi, mask))
                    used[gi].add(mask)
        steps.append(tuple(step))
    # Columns per block: each numpy call costs ~1 us on top of its work, so blocks are
    # long; but every array a block touches (its slice of each input, the combinations,
    # the accumulators and the doubling scratch) should stay in the core's L2 cache, where
    # XOR runs several times faster than from L3 or memory. A block's working set is
    # (inputs + combinations + 2 * rows) columns; the budget is the L2 size.
    combos = sum(len(u) for u in used)
    block = _cache_bytes() // max(1, width + combos + 2 * rows)
    block = max(_MIN_BLOCK, min(_MAX_BLOCK, block))
    block -= block % 4096
    xor_rows = None
    if top <= 1:
        # Only 0/1 coefficients (m = 1 parity, or rebuilding from it): plain XORs straight
        # into the output, no combinations and no copies.
        xor_rows = tuple(tuple(j for j, c in enumerate(row) if c) for row in coeffs)
    ops = sum(len(st) for st in steps) + 4 * rows * max(0, len(steps) - 1) + combos
    return _Program(
        rows,
        g,
        groups,
        tuple(steps),
        tuple(frozenset(u) for u in used),
        block,
        xor_rows,
        ops,
    )


_local = threading.local()
# Scratch up to this size stays allocated per thread between calls (release_scratch()
# frees it). Fresh memory costs a page fault per 4 KiB on first touch (~2-3 us each on a
# VM: slower than the arithmetic); numpy asks for huge pages only from 4 MiB, and even
# those cost their zeroing again on every call.
_KEEP_BYTES = 64 << 20


def scratch(name: str, nbytes: int) -> U8:
    """A per-thread reusable uint8 buffer of ``nbytes``; valid until the next call by name."""
    pool: dict[str, U8] = _local.__dict__.setdefault("buffers", {})
    buf = pool.get(name)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= _KEEP_BYTES:
            pool[name] = buf
    return buf[:nbytes]


def release_scratch() -> None:
    """Free the calling thread's scratch buffers (they are rebuilt on demand)."""
    _local.__dict__.pop("buffers", None)


def output(rows: int, length: int) -> U8:
    """A ``(rows, length)`` result array from this thread's scratch: copy out before reuse."""
    return scratch("output", rows * length).reshape(rows, length)


def _run_xor(
    xor_rows: tuple[tuple[int, ...], ...], inputs: Sequence[U8], out: U8, lo: int, hi: int
) -> None:
    for i, members in enumerate(xor_rows):
        acc = out[i, lo:hi]
        if not members:
            acc[...] = 0
        elif len(members) == 1:
            np.copyto(acc, inputs[members[0]][lo:hi])
        else:
            np.bitwise_xor(inputs[members[0]][lo:hi], inputs[members[1]][lo:hi], out=acc)
            for j in members[2:]:
                np.bitwise_xor(acc, inputs[j][lo:hi], out=acc)


def _run(prog: _Program, inputs: Sequence[U8], out: U8, lo: int, hi: int, block: int) -> None:
    rows = prog.rows
    block = min(block, hi - lo)
    if prog.xor_rows is not None:
        for s in range(lo, hi, block):
            _run_xor(prog.xor_rows, inputs, out, s, min(hi, s + block))
        return
    tmp = scratch("tmp", rows * block).reshape(rows, block)
    # Scratch for the combinations that are not plain inputs, per group.
    needs: list[list[int]] = []
    for masks in prog.masks:
        # Every multi-input combination used, plus those needed to build them (peel the
        # lowest bit each time); ascending order builds each one's parts first.
        need: set[int] = set()
        for m in masks:
            while m & (m - 1):
                need.add(m)
                m &= m - 1
        needs.append(sorted(need))
    combo_buf = scratch("combos", max(1, sum(map(len, needs))) * block)
    scratch_views: list[dict[int, U8]] = []
    slot = 0
    for need_list in needs:
        views: dict[int, U8] = {}
        for m in need_list:
            views[m] = combo_buf[slot * block : (slot + 1) * block]
            slot += 1
        scratch_views.append(views)

    for s in range(lo, hi, block):
        e = min(hi, s + block)
        width = e - s
        combos: list[dict[int, U8]] = []
        for gi, members in enumerate(prog.groups):
            table: dict[int, U8] = {1 << a: inputs[j][s:e] for a, j in enumerate(members)}
            # Ascending order: every mask's (mask minus lowest bit) is built before it.
            for m, buf in scratch_views[gi].items():
                low = m & -m
                dst = buf[:width]
                np.bitwise_xor(table[m ^ low], table[low], out=dst)
                table[m] = dst
            combos.append(table)

        acc = out[:, s:e]
        # One view per row for the block (not one per step: a view costs a fair share of
        # a small block's XOR).
        acc_rows = list(acc)
        t = tmp[:, :width]
        tb = t.view(np.bool_)
        written = [False] * rows
        for n, step in enumerate(prog.steps):
            if n:
                # acc *= 2 in GF(2^8), on every row at once.
                np.less(acc.view(np.int8), 0, out=tb)
                np.multiply(t, _REDUCE, out=t)
                np.add(acc, acc, out=acc)
                np.bitwise_xor(acc, t, out=acc)
            for i, gi, mask in step:
                src = combos[gi][mask]
                row = acc_rows[i]
                if written[i]:
                    np.bitwise_xor(row, src, out=row)
                else:
                    np.copyto(row, src)
                    written[i] = True
            if n == 0:
                # Rows with a zero top bit start from zero (later doublings keep it so).
                for i in range(rows):
                    if not written[i]:
                        acc_rows[i][...] = 0
                        written[i] = True
        if not prog.steps:
            acc[...] = 0


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    # One pool for the process, grown when a caller asks for more threads; the old one
    # finishes its queued work and its threads exit.
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < threads:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="erasure")
            _pool_size = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def apply(
    coeffs: Sequence[Sequence[int]],
    inputs: Sequence[U8],
    out: U8,
    *,
    threads: int | None = None,
    block: int | None = None,
) -> None:
    """``out[i] = sum_j coeffs[i][j] * inputs[j]`` over GF(2^8), column by column.

    ``inputs`` are 1-D uint8 arrays of one length ``L`` (read-only is fine); ``out`` is a
    writable ``(len(coeffs), L)`` uint8 array whose rows are contiguous. ``threads`` caps
    the threads used for large inputs (default :func:`default_threads`); ``block`` overrides
    the columns per block (for tests and tuning; the result never depends on it).
    """
    rows = len(coeffs)
    if rows == 0:
        return
    length = out.shape[1]
    if any(len(r) != len(inputs) for r in coeffs):
        raise ValueError("coefficient rows must have one entry per input")
    if out.shape[0] != rows or any(x.shape != (length,) for x in inputs):
        raise ValueError("inputs and output must have matching shapes")
    if length == 0:
        return
    if any(not 0 <= c <= 255 for r in coeffs for c in r):
        raise ValueError("coefficients must be bytes (0..255)")
    prog = _compile(tuple(tuple(int(c) for c in r) for r in coeffs), len(inputs))
    block = prog.block if block is None else max(1, block)
    threads = default_threads() if threads is None else max(1, threads)
    parts = 1
    if prog.ops >= _THREAD_MIN_OPS and length * prog.ops >= _THREAD_MIN_WORK:
        parts = min(threads, length // _THREAD_MIN_COLUMNS)
    if parts <= 1:
        _run(prog, inputs, out, 0, length, block)
        return
    step = -(-length // parts)
    step += -step % 4096
    bounds = [(lo, min(length, lo + step)) for lo in range(0, length, step)]
    pool = _executor(threads)
    futures = [pool.submit(_run, prog, inputs, out, lo, hi, block) for lo, hi in bounds[1:]]
    # The calling thread does the first range itself instead of idling.
    _run(prog, inputs, out, bounds[0][0], bounds[0][1], block)
    for f in futures:
        f.result()
