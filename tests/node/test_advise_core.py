"""The optimizer's pure core (node/core/advise.py): schedule, capacity, tiering."""

from __future__ import annotations

import random

from corestate.node.core import advise

HOUR = advise.HOUR_NS
DAY = advise.DAY_NS
MONDAY = 4 * DAY  # the epoch was a Thursday: day 4 is Monday 1970-01-05


def office_hours(weeks: int, every_h: int = 1, seed: int = 1) -> list[tuple[int, int]]:
    """Backups every ``every_h`` hours; files change 09:00-17:00 on weekdays only."""
    rng = random.Random(seed)
    out = []
    t = MONDAY
    for _ in range(weeks * 168 // every_h):
        t += every_h * HOUR
        changed = 0
        for h in range(every_h):
            hour_ns = t - (every_h - h) * HOUR
            day = ((hour_ns // DAY) + 3) % 7
            hour = (hour_ns // HOUR) % 24
            if day < 5 and 9 <= hour < 17:
                changed += rng.randint(80, 120) * 10**6
        out.append((t, changed))
    return out


def test_hour_of_week_counts_from_monday_midnight_local_time() -> None:
    assert advise.hour_of_week(MONDAY, 0) == 0
    assert advise.hour_of_week(MONDAY + 13 * HOUR, 0) == 13
    assert advise.hour_of_week(MONDAY - HOUR, 0) == 167  # Sunday 23:00
    assert advise.hour_of_week(MONDAY, 2 * 3600) == 2  # two hours east of UTC


def test_schedule_learns_office_hours_and_backs_up_at_their_end() -> None:
    hist = office_hours(weeks=4)
    a = advise.schedule(hist, 0, per_day=1)
    # One backup a day: right after the working day leaves changes waiting the least.
    assert a.numbers["suggested"] == "17:00", a.advice
    assert float(a.numbers["exposure_suggested_h"]) < float(a.numbers["exposure_even_h"])
    assert "17:00" in a.advice[0] and ("Sat" in a.advice[2] or "Sun" in a.advice[2])
    rows = {r[0]: r for r in a.rows}
    assert rows["03:00"][1] == "0.0 MB" and float(rows["12:00"][1].split()[0]) > 50
    two = advise.schedule(hist, 0, per_day=2)
    times = two.numbers["suggested"].split(",")
    assert len(times) == 2 and "17:00" in times and any(t in ("12:00", "13:00", "14:00") for t in times)


def test_schedule_from_sparse_backups_spreads_changes_over_the_gap() -> None:
    # Backups every 6 hours still show the working hours (spread over each 6-hour gap).
    a = advise.schedule(office_hours(weeks=4, every_h=6), 0, per_day=1)
    assert a.numbers["suggested"] in ("17:00", "18:00"), a.numbers


def test_schedule_needs_some_history() -> None:
    a = advise.schedule(office_hours(weeks=1)[:3], 0, per_day=1)
    assert "at least" in a.advice[0] and not a.rows


def test_capacity_is_robust_to_a_first_backup_jump_and_says_when_it_fills() -> None:
    t0 = MONDAY
    sizes = [(t0, 50 * 10**9)]  # the first backup
    sizes += [(t0 + d * DAY, 50 * 10**9 + d * 10**9) for d in range(1, 31)]  # +1 GB a day
    sizes.insert(10, (t0 + 9 * DAY + HOUR, 20 * 10**9))  # one odd point (a prune)
    a = advise.capacity(sizes, t0 + 30 * DAY, 100 * 10**9, "quota")
    assert abs(float(a.numbers["growth_bytes_per_day"]) - 1e9) < 0.05e9
    assert abs(float(a.numbers["days_until_full"]) - 20) < 1.5, a.numbers
    assert "fills in about 20 days" in a.advice[0] and "soon" in a.advice[0]
    full = advise.capacity(sizes, t0 + 30 * DAY, 60 * 10**9, "disk")
    assert "already full" in full.advice[0]
    flat = advise.capacity([(t0, 5), (t0 + DAY, 5), (t0 + 2 * DAY, 5)], t0 + 2 * DAY, 100, "quota")
    assert "does not grow" in flat.advice[0]


def test_theil_sen_takes_at_most_200_points() -> None:
    pts = [(float(i), 3.0 * i) for i in range(5000)]
    assert advise.theil_sen(pts) == 3.0


def test_tiering_finds_cold_data_and_a_cheaper_code_with_the_same_losses() -> None:
    packs = [advise.PackAge(size=16 << 20, age_ns=200 * DAY, k=2, n=4) for _ in range(10)]
    packs += [advise.PackAge(size=16 << 20, age_ns=3 * DAY, k=2, n=4) for _ in range(5)]
    packs += [advise.PackAge(size=16 << 20, age_ns=300 * DAY, k=0, n=0)]
    a = advise.tiering(packs, 90 * DAY, peers=8)
    assert a.numbers["cold_packs"] == "11"
    # k=2 n=4 tolerates 2 losses at 2x; on 8 peers k=6 n=8 tolerates 2 at 1.33x.
    assert advise.cheaper_code(2, 4, 8) == (6, 8)
    row = next(r for r in a.rows if r[0] == "k=2 n=4")
    assert row[3] == "k=6 n=8"
    saved = float(a.numbers["bytes_saved"])
    assert abs(saved - 10 * (16 << 20) * (2 - 8 / 6)) < 1
    assert advise.cheaper_code(2, 4, 4) == (2, 4)
    assert "no cheaper code" in advise.tiering(packs, 90 * DAY, peers=4).advice[1]
