"""Hybrid logical clock (HLC): wall-clock-like timestamps that never go backwards.

Role: the catalog stamps every batch it writes with an HLC, used for display and for
retention windows only, never to order writes (the per-author sequence numbers do that).
Pure: the wall clock is a parameter (``now_ms``, milliseconds since the Unix epoch).

Format: one non-negative int, ``physical_ms << 16 | counter``: 48 bits of milliseconds
(enough until the year 10889) and a 16-bit logical counter. Comparing the ints compares
the timestamps.

Invariants:
- ``tick(last, now)`` > ``last``, and ``receive(last, remote, now, d)`` > both ``last`` and
  the (clamped) ``remote``: the clock is strictly monotonic and respects causality.
- The physical part never runs ahead of ``max(now, last's physical part, clamped remote)``
  except by counter overflow (65,536 events in one millisecond borrow the next millisecond).
- A remote timestamp more than ``max_drift_ms`` ahead of ``now`` is clamped to
  ``now + max_drift_ms`` before it is merged, and the clamp is reported, never hidden: one
  peer with a wrong clock cannot drag every clock in the group into the future.
"""

from __future__ import annotations

from typing import NewType

HLC = NewType("HLC", int)

COUNTER_BITS = 16
PHYSICAL_BITS = 48
COUNTER_MAX = (1 << COUNTER_BITS) - 1
PHYSICAL_MAX = (1 << PHYSICAL_BITS) - 1
HLC_MAX = HLC((1 << (PHYSICAL_BITS + COUNTER_BITS)) - 1)
ZERO = HLC(0)

# Five minutes: laptops that wake from sleep or run without NTP drift that far.
DEFAULT_MAX_DRIFT_MS = 5 * 60 * 1000


def pack(physical_ms: int, counter: int = 0) -> HLC:
    """The HLC of ``physical_ms`` and ``counter``; raises ValueError out of range."""
    if not 0 <= physical_ms <= PHYSICAL_MAX:
        raise ValueError(f"physical time {physical_ms} ms is outside 0..{PHYSICAL_MAX}")
    if not 0 <= counter <= COUNTER_MAX:
        raise ValueError(f"HLC counter {counter} is outside 0..{COUNTER_MAX}")
    return HLC(physical_ms << COUNTER_BITS | counter)


def physical(h: int) -> int:
    """Milliseconds since the Unix epoch."""
    return h >> COUNTER_BITS


def counter(h: int) -> int:
    return h & COUNTER_MAX


def _wall(now_ms: int) -> int:
    return min(max(now_ms, 0), PHYSICAL_MAX)


def _after(pt: int, base: int) -> HLC:
    """The smallest HLC with physical part >= ``pt`` that is strictly after ``base``."""
    if pt > physical(base):
        return pack(pt, 0)
    if counter(base) < COUNTER_MAX:
        return HLC(base + 1)
    # Counter exhausted: borrow the next millisecond rather than wrap (never go back).
    return pack(min(physical(base) + 1, PHYSICAL_MAX), 0)


def tick(last: int, now_ms: int) -> HLC:
    """The timestamp of a local event (a batch written) after ``last``."""
    if last >= HLC_MAX:
        raise ValueError("the HLC is exhausted (year 10889)")
    return _after(_wall(now_ms), last)


def clamp(remote: int, now_ms: int, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS) -> HLC:
    """``remote``, or the last HLC of ``now + max_drift_ms`` when it is further ahead."""
    ceiling = pack(_wall(_wall(now_ms) + max(max_drift_ms, 0)), COUNTER_MAX)
    return HLC(min(max(remote, 0), ceiling))


def receive(
    last: int, remote: int, now_ms: int, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS
) -> tuple[HLC, bool]:
    """Merge a timestamp seen in a message; return (new clock, whether ``remote`` was clamped).

    A remote timestamp too far ahead is clamped, not refused: the message still counts, and
    the caller alerts about the peer's clock.
    """
    bounded = clamp(remote, now_ms, max_drift_ms)
    clamped = bounded != remote
    base = max(last, bounded)
    if base >= HLC_MAX:
        raise ValueError("the HLC is exhausted (year 10889)")
    return _after(_wall(now_ms), base), clamped
