"""How safe a pack is: the one classification every report uses (check, status, repair).

A pack coded k-of-n with ``good`` distinct share indexes on holders is

- ``FULL`` when ``good >= n``;
- ``DEGRADED`` when ``k <= good < n``: still recoverable from the mesh, one loss closer;
- ``AT_RISK`` when ``good < k`` and no whole local copy exists: the data may be gone;
- ``LOCAL_ONLY`` when ``good < k`` but the owner still has the pack in its store (not yet
  placed, or no peers): safe against the mesh's failures, not against this disk's.

``good`` means what the caller knows: shares that just passed a survey (``check``), or
shares acknowledged at upload (``status``, which asks nobody). Pure: no I/O.
"""

from __future__ import annotations

import enum


class Redundancy(enum.Enum):
    FULL = "full"
    DEGRADED = "degraded"
    AT_RISK = "at-risk"
    LOCAL_ONLY = "local-only"


def classify(good: int, k: int, n: int, *, local: bool) -> Redundancy:
    if good >= n:
        return Redundancy.FULL
    if good >= k:
        return Redundancy.DEGRADED
    return Redundancy.LOCAL_ONLY if local else Redundancy.AT_RISK


__all__ = ["Redundancy", "classify"]
