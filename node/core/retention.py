"""Retention: which snapshots a keep-policy keeps, and why.

The rules (those of the usual backup tools, so a user's habits carry over):

- Snapshots are judged per *series*: the snapshots of one set of protected paths. A policy
  never lets one series' snapshots stand in for another's.
- ``last=N`` keeps the N newest snapshots of a series.
- ``hourly=N`` (``daily``, ``weekly``, ``monthly``, ``yearly``) keeps, for each of the N
  newest hours (days, ISO weeks, months, years) that have a snapshot, the newest snapshot
  of that period. Periods without a snapshot do not count.
- ``within=S`` keeps every snapshot at most S seconds older than the series' newest.
- A snapshot kept by any rule is kept; every rule that keeps it is named. A policy that
  keeps nothing is refused (``forget`` never empties a series by accident), and so is a
  policy with no rule at all.

Pure: the caller gives each snapshot's time as an aware ``datetime`` in the zone whose
days and weeks the user means (local time, usually); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within_s: float = 0.0

    def empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly or self.monthly
                    or self.yearly or self.within_s)


@dataclass(frozen=True, slots=True)
class Snap:
    id: bytes
    when: datetime  # aware
    series: tuple[bytes, ...]  # the protected paths, sorted


@dataclass(frozen=True, slots=True)
class Verdict:
    id: bytes
    keep: bool
    reasons: tuple[str, ...]  # the rules that keep it; empty when it goes


class PolicyError(ValueError):
    pass


_PERIODS: tuple[tuple[str, Callable[[datetime], tuple[int, ...]]], ...] = (
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: tuple(t.isocalendar()[:2])),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
)


def apply_policy(snaps: Iterable[Snap], policy: Policy) -> list[Verdict]:
    """One verdict per snapshot, newest first within each series (see the module rules)."""
    if policy.empty():
        raise PolicyError("a policy needs at least one rule (--keep-last, --keep-daily, ...)")
    for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        if getattr(policy, name) < 0:
            raise PolicyError(f"keep-{name} must not be negative")
    by_series: dict[tuple[bytes, ...], list[Snap]] = {}
    for s in snaps:
        if s.when.tzinfo is None:
            raise ValueError("snapshot times must be aware datetimes")
        by_series.setdefault(s.series, []).append(s)
    out: list[Verdict] = []
    for series in sorted(by_series):
        group = sorted(by_series[series], key=lambda s: (s.when, s.id), reverse=True)
        reasons: dict[bytes, list[str]] = {s.id: [] for s in group}
        for s in group[:policy.last]:
            reasons[s.id].append(f"last {policy.last}")
        for name, period in _PERIODS:
            n = getattr(policy, name)
            seen: list[tuple[int, ...]] = []
            for s in group:  # newest first: the first of each period is its newest
                p = period(s.when)
                if p in seen:
                    continue
                if len(seen) == n:
                    break
                seen.append(p)
                reasons[s.id].append(f"{name} {n}")
        if policy.within_s and group:
            newest = group[0].when
            for s in group:
                if (newest - s.when).total_seconds() <= policy.within_s:
                    reasons[s.id].append(f"within {_span(policy.within_s)} of the newest")
        if not any(reasons.values()):
            raise PolicyError("the policy would keep no snapshot of a series")
        out.extend(Verdict(s.id, bool(reasons[s.id]), tuple(reasons[s.id])) for s in group)
    return out


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
