"""The discrete-event engine: a heap of (time, sequence, kind, a, b), and a seeded RNG.

Invariants:
- No wall clock: time is a float (days) that only moves forward as events pop. Events at
  one time run in the order they were pushed (the sequence number breaks ties), so a run
  is a pure function of the scenario and the seed.
- Events are plain tuples of numbers (``kind`` an int, ``a``/``b`` ints: a node, a pack,
  a token) so that millions of them stay cheap; the world dispatches on ``kind``.
- Randomness comes only from :class:`Draws` built from the seed; exponential and uniform
  draws are taken from buffered numpy batches (one Python call per draw, not per batch
  element), which keeps per-event cost low without changing the stream's determinism.
"""

from __future__ import annotations

import heapq

import numpy as np

_BATCH = 1 << 16


class Draws:
    """Buffered random draws from one seeded numpy Generator."""

    def __init__(self, seed: int) -> None:
        self.gen = np.random.Generator(np.random.PCG64(seed))
        self._exp: list[float] = []
        self._uni: list[float] = []

    def exp(self, mean: float) -> float:
        """An exponential time of the given mean."""
        if not self._exp:
            self._exp = self.gen.standard_exponential(_BATCH).tolist()
        return self._exp.pop() * mean

    def uniform(self) -> float:
        """A uniform fraction in [0, 1)."""
        if not self._uni:
            self._uni = self.gen.random(_BATCH).tolist()
        return self._uni.pop()

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)


class Engine:
    """The event heap. ``push`` schedules; ``pop`` returns the next event, or None when the
    next event lies beyond ``until`` (the heap keeps it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0

    def push(self, t: float, kind: int, a: int = 0, b: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b))

    def pop(self, until: float) -> tuple[float, int, int, int] | None:
        if not self._heap or self._heap[0][0] > until:
            return None
        t, _, kind, a, b = heapq.heappop(self._heap)
        self.now = t
        self.events += 1
        return t, kind, a, b

    def __len__(self) -> int:
        return len(self._heap)
