"""The optimizer: advice from a node's own history, with the numbers behind it.

Three questions, each a pure function of facts the caller gathers (node/app/advise.py):

- ``schedule``: when do this node's files change, and at which times of day would backups
  leave the least change waiting unprotected? Each backup's changed bytes are spread evenly
  over the hours since the backup before it; the profile is the mean bytes per hour of the
  week. *Exposure* is the bytes changed times the hours they wait for the next backup; the
  advice is the set of K daily times (K = the backups a day the schedule runs now) with the
  least exposure on the daily profile, found exhaustively (24 choose K, K <= 4).
- ``capacity``: how fast does the store grow, and when is the quota or disk full? Growth is
  the Theil–Sen slope (the median of pairwise slopes, robust to the one-off jump of a first
  backup or a prune) of the store size over time.
- ``tiering``: which data is cold (written long ago, still needed, not rewritten since), and
  what a code with the same number of tolerated losses but more data shares would save on it.

Pure: facts and the present moment in (times in ns; local offsets as parameters), advice
out, each line in words. No clock, no I/O.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
WEEK_HOURS = 168
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIN_BACKUPS = 6  # fewer than this: too little history to say anything


@dataclass(frozen=True, slots=True)
class Advice:
    advice: tuple[str, ...]  # in words, most useful first
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    numbers: dict[str, str] = field(default_factory=dict)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _human(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


# -- schedule ---------------------------------------------------------------------------------


def hour_of_week(time_ns: int, utc_offset_s: int) -> int:
    """0 = Monday 00:00-01:00 local time (the epoch was a Thursday)."""
    hours = (time_ns + utc_offset_s * 10**9) // HOUR_NS
    return int((hours + 3 * 24) % WEEK_HOURS)


def change_profile(backups: Sequence[tuple[int, int]], utc_offset_s: int) -> tuple[list[float], int]:
    """Mean bytes changed per hour of the week, and the hours of history it rests on.

    ``backups``: (time_ns, bytes changed since the backup before), in any order. A gap
    longer than a week is spread over its last week only (older hours are not known)."""
    pts = sorted(backups)
    total = [0.0] * WEEK_HOURS
    seen = [0] * WEEK_HOURS
    hours_known = 0
    for (t0, _), (t1, changed) in itertools.pairwise(pts):
        span = max(1, min(WEEK_HOURS, round((t1 - t0) / HOUR_NS)))
        start = t1 - span * HOUR_NS
        for i in range(span):
            h = hour_of_week(start + i * HOUR_NS, utc_offset_s)
            total[h] += changed / span
            seen[h] += 1
        hours_known += span
    return [total[h] / seen[h] if seen[h] else 0.0 for h in range(WEEK_HOURS)], hours_known


def exposure(daily: Sequence[float], times: Sequence[int]) -> float:
    """Bytes x hours that changes wait for the next of the daily backup ``times`` (hours)."""
    if not times:
        return float("inf")
    ts = sorted(set(times))
    out = 0.0
    for h in range(24):
        # A change during hour h waits until the next backup time after it (at h+1 or later).
        wait = min((t - (h + 1)) % 24 for t in ts) + 0.5
        out += daily[h] * wait
    return out


def schedule(backups: Sequence[tuple[int, int]], utc_offset_s: int, per_day: int) -> Advice:
    if len(backups) < MIN_BACKUPS:
        return Advice((f"only {len(backups)} backup(s) in the history: at least {MIN_BACKUPS} are "
                       "needed to see when files change; ask again after a few days of backups",),
                      numbers={"backups": str(len(backups))})
    profile, hours = change_profile(backups, utc_offset_s)
    daily = [sum(profile[d * 24 + h] for d in range(7)) / 7 for h in range(24)]
    weekday = [sum(profile[d * 24:(d + 1) * 24]) for d in range(7)]
    total_day = sum(daily)
    k = max(1, min(4, per_day))
    best = min(itertools.combinations(range(24), k), key=lambda ts: (exposure(daily, ts), ts))
    best_exp = exposure(daily, best)
    evenly = tuple(sorted({(i * 24 // k) % 24 for i in range(k)}))
    even_exp = exposure(daily, evenly)
    busiest = sorted(range(24), key=lambda h: -daily[h])[:3]
    lines = []
    if total_day <= 0:
        lines.append("no change was seen in the history: any time will do")
    else:
        at = ", ".join(f"{h:02d}:00" for h in best)
        lines.append(f"back up at {at} (local time): changes would wait {best_exp / total_day:.1f} h on "
                     f"average for a backup, against {even_exp / total_day:.1f} h with {k} backup(s) spread "
                     f"evenly ({', '.join(f'{h:02d}:00' for h in evenly)})")
        share = sum(daily[h] for h in busiest) / total_day
        lines.append("most changes happen at " + ", ".join(f"{h:02d}:00" for h in sorted(busiest))
                     + f" ({share:.0%} of a day's volume)")
        quiet = min(range(7), key=lambda d: weekday[d])
        lines.append(f"the quietest day is {DAYS[quiet]} ({_human(weekday[quiet])} changed on average)")
    rows = tuple((f"{h:02d}:00", _mb(daily[h]), *(_mb(profile[d * 24 + h]) for d in range(7)))
                 for h in range(24))
    return Advice(tuple(lines), ("hour", "mean/day", *DAYS), rows, {
        "backups": str(len(backups)), "hours_of_history": str(hours),
        "bytes_changed_per_day": f"{total_day:.0f}", "suggested": ",".join(f"{h:02d}:00" for h in best),
        "exposure_suggested_h": f"{best_exp / total_day:.2f}" if total_day else "0",
        "exposure_even_h": f"{even_exp / total_day:.2f}" if total_day else "0"})


# -- capacity ---------------------------------------------------------------------------------


def theil_sen(points: Sequence[tuple[float, float]]) -> float:
    """The median slope over all pairs (at most 200 points are used, evenly spaced)."""
    pts = sorted(points)
    if len(pts) > 200:
        step = len(pts) / 200
        pts = [pts[int(i * step)] for i in range(200)]
    slopes = [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in itertools.combinations(pts, 2) if x1 != x0]
    return statistics.median(slopes) if slopes else 0.0


def capacity(sizes: Sequence[tuple[int, int]], now_ns: int, capacity_bytes: int, what: str) -> Advice:
    """``sizes``: (time_ns, store bytes) after each backup; ``what``: the quota or disk."""
    if len(sizes) < 2:
        return Advice((f"{len(sizes)} measurement(s) of the store: at least 2 backups are needed "
                       "to see it grow",), numbers={"points": str(len(sizes))})
    pts = [(t / DAY_NS, float(b)) for t, b in sizes]
    slope = theil_sen(pts)  # bytes per day
    current = sorted(sizes)[-1][1]
    days_span = (max(t for t, _ in sizes) - min(t for t, _ in sizes)) / DAY_NS
    numbers = {"points": str(len(sizes)), "days_of_history": f"{days_span:.1f}",
               "store_bytes": str(current), "growth_bytes_per_day": f"{slope:.0f}",
               "capacity_bytes": str(capacity_bytes)}
    rows = tuple((f"+{d} d", _human(current + slope * d)) for d in (7, 30, 90, 365))
    lines = [f"the store grows by {_human(slope)} a day (median over {len(sizes)} backups, "
             f"{days_span:.1f} days); it holds {_human(current)} of {_human(capacity_bytes)} ({what})"]
    if current >= capacity_bytes:
        lines.insert(0, f"the {what} is already full: prune (`corestate forget ... --prune`) or make room")
    elif slope <= 0:
        lines.insert(0, f"the store does not grow: the {what} does not fill at this rate")
    else:
        days = (capacity_bytes - current) / slope
        numbers["days_until_full"] = f"{days:.1f}"
        when = now_ns + int(days * DAY_NS)
        numbers["full_at_ns"] = str(when)
        urgency = "soon: " if days < 30 else ""
        lines.insert(0, f"{urgency}the {what} fills in about {days:.0f} days at this rate")
        if days < 30:
            lines.append("free space with a keep-policy (`corestate forget --keep-daily 7 --keep-weekly 4 "
                         "--prune --dry-run` shows what it frees) or raise the quota")
    return Advice(tuple(lines), ("horizon", "store size"), rows, numbers)


# -- tiering ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackAge:
    size: int
    age_ns: int  # since it was written (or placed)
    k: int  # its code; 0, 0: kept only on this machine
    n: int


def cheaper_code(k: int, n: int, peers: int) -> tuple[int, int]:
    """A code that tolerates the same losses (n - k) with more data shares, within the
    peers there are: less storage per byte. Returns (k, n) itself when none is cheaper."""
    losses = n - k
    best_n = min(255, max(n, peers))
    best_k = best_n - losses
    if best_k <= k or best_k < 1:
        return k, n
    return best_k, best_n


def tiering(packs: Sequence[PackAge], cold_after_ns: int, peers: int) -> Advice:
    cold = [p for p in packs if p.age_ns >= cold_after_ns]
    total = sum(p.size for p in packs)
    cold_bytes = sum(p.size for p in cold)
    days = cold_after_ns / DAY_NS
    numbers = {"packs": str(len(packs)), "bytes": str(total), "cold_packs": str(len(cold)),
               "cold_bytes": str(cold_bytes), "cold_after_days": f"{days:g}", "peers": str(peers)}
    if not packs:
        return Advice(("no data packs yet: nothing to tier",), numbers=numbers)
    by_code: dict[tuple[int, int], list[PackAge]] = {}
    for p in cold:
        by_code.setdefault((p.k, p.n), []).append(p)
    rows = []
    lines = [f"{_human(cold_bytes)} of {_human(total)} ({cold_bytes / total:.0%}) has not been rewritten "
             f"for {days:g} days or more"]
    saved_total = 0.0
    for (k, n), group in sorted(by_code.items()):
        size = sum(p.size for p in group)
        if k == 0:
            rows.append(("local only", str(len(group)), _human(size), "-", "-"))
            continue
        k2, n2 = cheaper_code(k, n, peers)
        saved = size * (n / k - n2 / k2)
        saved_total += saved
        rows.append((f"k={k} n={n}", str(len(group)), _human(size), f"k={k2} n={n2}", _human(saved)))
        if (k2, n2) != (k, n):
            lines.append(f"cold data coded k={k} n={n} ({n / k:.2f}x stored) could use k={k2} n={n2} "
                         f"({n2 / k2:.2f}x; the same {n - k} loss(es) tolerated): {_human(saved)} "
                         "less on the peers")
        else:
            lines.append(f"cold data coded k={k} n={n}: no cheaper code with {n - k} loss(es) tolerated "
                         f"on {peers} peer(s); more peers would allow one")
    numbers["bytes_saved"] = f"{saved_total:.0f}"
    if not cold:
        lines.append("nothing is cold yet")
    return Advice(tuple(lines), ("code", "cold packs", "cold bytes", "cheaper code", "saved on peers"),
                  tuple(rows), numbers)


__all__ = ["Advice", "PackAge", "capacity", "change_profile", "cheaper_code", "exposure",
           "hour_of_week", "schedule", "theil_sen", "tiering"]
