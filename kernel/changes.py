"""Change sets: what a change source (kernel.journal, kernel.fake) answers. Pure data.

``ChangeSet.paths`` is the set of changed paths since a token, or ``None`` when the source
cannot vouch for the interval and the caller must walk everything (``reason`` says why).
``token`` is the source's position at the time of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Changed paths since a token, or ``paths=None``: walk everything (``reason`` says why)."""

    paths: frozenset[Path] | None
    token: str
    reason: str = ""

    @property
    def full_walk_required(self) -> bool:
        return self.paths is None


@dataclass(frozen=True, slots=True)
class Event:
    """One change reported by a source: a changed path, or a gap (overflow, lost events)."""

    path: Path | None
    gap: str = ""
