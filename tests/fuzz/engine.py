"""Running one input, mutating seeds, and the in-process fuzzing loop.

A *crash* is anything a target's contract forbids: an exception other than the ones it
allows (``Target.run`` already swallowed those), an input that takes longer than the
time bound, or one whose Python allocations peak above the memory bound. The bounds are
generous on purpose (the machine is shared; a decoder that is merely slow is not a bug)
— what they catch is a hang, or an allocation driven by a length field instead of by the
bytes that came.

Two engines share the targets: atheris (coverage-guided libFuzzer, in ``__main__``, one
process per target) and :func:`fuzz_loop` here, a seeded in-process mutator without
coverage feedback used where atheris is not installed and by the pytest profile (through
hypothesis, see ``test_fuzz.py``). Both mutate the same seeds with the same idea.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TIME_LIMIT = 5.0  # seconds per input; a decoder here takes milliseconds
MEM_BASE = 48 << 20  # bytes any input may allocate, on top of ...
MEM_PER_BYTE = 64  # ... this many per input byte
# Targets whose declared limits allow more from a short input (a blob's raw length is up
# to 64 MiB; the pack-header target pads a blob area of up to 1 MiB).
MEM_EXTRA = {"pack-blob": 2 * (64 << 20) + (16 << 20), "pack-header": 4 << 20}

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


class Crash(Exception):
    """An input broke its target's contract."""

    def __init__(self, target: str, kind: str, detail: str, data: bytes) -> None:
        super().__init__(f"{target}: {kind}: {detail}")
        self.target = target
        self.kind = kind  # "exception", "timeout", "memory"
        self.detail = detail
        self.data = data


def mem_limit(name: str, data: bytes) -> int:
    return MEM_BASE + MEM_PER_BYTE * len(data) + MEM_EXTRA.get(name, 0)


class _Timeout(BaseException):
    """Raised by the alarm inside a target; a BaseException so no decoder swallows it."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_one(target: object, data: bytes, *, time_limit: float = TIME_LIMIT,
            check_memory: bool = True) -> float:
    """Run ``target`` (a ``targets.Target``) on ``data``; return the seconds it took, or raise
    :class:`Crash`. With ``check_memory`` the Python allocations are traced (slower)."""
    from .targets import Target

    assert isinstance(target, Target)
    started = tracing = False
    if check_memory:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        tracing = True
    t0 = time.perf_counter()
    try:
        with _alarm(time_limit):
            target.run(data)
    except _Timeout:
        raise Crash(target.name, "timeout", f"more than {time_limit:g} s on one input", data) from None
    except MemoryError:
        raise Crash(target.name, "memory", "MemoryError", data) from None
    except Exception as exc:
        raise Crash(target.name, "exception", f"{type(exc).__name__}: {exc}"[:500], data) from exc
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if tracing else 0
        if started:
            tracemalloc.stop()
    limit = mem_limit(target.name, data)
    if peak > limit:
        raise Crash(target.name, "memory",
                    f"{peak / 2**20:.1f} MiB allocated for a {len(data)}-byte input "
                    f"(bound {limit / 2**20:.1f} MiB)", data)
    return elapsed


def mutate(data: bytes, rnd: random.Random, seeds: list[bytes]) -> bytes:
    """One to four byte-level mutations of ``data``: bit flips, byte sets, interesting
    integers written over it (both byte orders), inserted/deleted/duplicated runs, and
    splices with another seed — the classic set, enough to walk length fields."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(9)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif op == 2:
            v = rnd.choice(INTERESTING)
            width = rnd.choice((1, 2, 4, 8))
            raw = (v & ((1 << (8 * width)) - 1)).to_bytes(width, rnd.choice(("big", "little")))
            b[pos : pos + width] = raw
        elif op == 3:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 4 and b:
            n = rnd.randint(1, max(1, min(64, len(b) // 4 or 1)))
            del b[pos : pos + n]
        elif op == 5 and b:
            start = rnd.randrange(len(b))
            run = b[start : start + rnd.randint(1, 64)]
            b[pos:pos] = run * rnd.randint(1, 4)
        elif op == 6 and seeds:
            other = rnd.choice(seeds)
            cut = rnd.randrange(len(other) + 1)
            b = b[:pos] + bytearray(other[cut:])
        elif op == 7 and b:
            b = b[: rnd.randrange(len(b))]  # truncation
        else:
            # A CBOR-ish head: the major types the decoders read, with a wild argument.
            major = rnd.randrange(8) << 5
            info = rnd.choice((0, 1, 23, 24, 25, 26, 27, 28, 31))
            b[pos:pos] = bytes([major | info]) + bytes(rnd.randrange(256) for _ in range(
                rnd.choice((0, 1, 2, 4, 8))))
    return bytes(b)


@dataclass
class Stats:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    new_coverage: int | None = None  # atheris only: coverage gained beyond the seeds
    engine: str = "random"
    rate: float | None = None  # inputs per second while fuzzing (atheris: libFuzzer's own)

    @property
    def per_second(self) -> float:
        if self.rate is not None:
            return self.rate
        return self.inputs / self.seconds if self.seconds else 0.0


def fuzz_loop(target: object, seconds: float, *, seed: int = 0, check_memory: bool = True,
              max_crashes: int = 1) -> Stats:
    """Mutate the target's seeds for ``seconds``; stop early after ``max_crashes``."""
    from .targets import Target

    assert isinstance(target, Target)
    rnd = random.Random(seed)
    seeds = target.seeds()
    stats = Stats(target.name)
    corpus = list(seeds)
    # Warm-up, outside the bounds and the budget: the first call imports the decoder's
    # modules (the daemon's pull in libp2p: seconds on a busy machine) and fills caches.
    target.run(seeds[0])
    t0 = time.perf_counter()
    deadline = t0 + seconds
    inputs = [*seeds]  # the seeds themselves first, under the bounds
    while time.perf_counter() < deadline and len(stats.crashes) < max_crashes:
        if inputs:
            data = inputs.pop(0)
            try:
                stats.slowest = max(stats.slowest, run_one(target, data, check_memory=check_memory))
            except Crash as crash:
                stats.crashes.append(crash)
            stats.inputs += 1
            continue
        parent = rnd.choice(corpus)
        data = mutate(parent, rnd, seeds) if rnd.random() < 0.9 else rnd.randbytes(
            rnd.randrange(64))
        try:
            took = run_one(target, data, check_memory=check_memory)
        except Crash as crash:
            stats.crashes.append(crash)
            continue
        finally:
            stats.inputs += 1
        stats.slowest = max(stats.slowest, took)
        # Without coverage, keep a few mutants at random so mutations can stack.
        if rnd.random() < 0.02 and len(data) < 1 << 16:
            corpus.append(data)
            if len(corpus) > 256:
                corpus.pop(len(seeds) + rnd.randrange(len(corpus) - len(seeds)))
    stats.seconds = time.perf_counter() - t0
    return stats


def save_crash(directory: Path, name: str, kind: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{kind}-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path
