"""The retention core: keep-rules as the usual backup tools apply them, with reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from corestate.node.core.retention import Policy, PolicyError, Snap, apply_policy
from hypothesis import given
from hypothesis import strategies as st

SERIES = (b"/home/me",)


def snaps(times: list[datetime], series: tuple[bytes, ...] = SERIES) -> list[Snap]:
    return [Snap(bytes([i]) * 32, t, series) for i, t in enumerate(times)]


def kept(verdicts: list, all_snaps: list[Snap]) -> list[datetime]:
    when = {s.id: s.when for s in all_snaps}
    return sorted(when[v.id] for v in verdicts if v.keep)


def test_keep_last_and_daily_pick_the_newest_of_each_day() -> None:
    base = datetime(2026, 11, 20, tzinfo=UTC)
    times = [base + timedelta(days=d, hours=h) for d in range(5) for h in (1, 9, 17)]
    s = snaps(times)
    v = apply_policy(s, Policy(daily=3))
    assert kept(v, s) == [base + timedelta(days=d, hours=17) for d in (2, 3, 4)]
    v = apply_policy(s, Policy(last=2, daily=2))
    assert kept(v, s) == [base + timedelta(days=3, hours=17), base + timedelta(days=4, hours=9),
                          base + timedelta(days=4, hours=17)]
    newest = next(x for x in v if x.keep and x.id == s[-1].id)
    assert newest.reasons == ("last 2", "daily 2")  # every rule that keeps it is named
    assert all(not x.reasons for x in v if not x.keep)


def test_periods_without_a_snapshot_do_not_count_and_weeks_are_iso_weeks() -> None:
    s = snaps([datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC),
               datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)])
    # 2026-03-08 is a Sunday (ISO week 10), 2026-03-09 a Monday (week 11).
    assert kept(apply_policy(s, Policy(weekly=3)), s) == [s[0].when, s[2].when, s[3].when]
    assert kept(apply_policy(s, Policy(monthly=5)), s) == [s[0].when, s[3].when]
    assert kept(apply_policy(s, Policy(yearly=1)), s) == [s[3].when]


def test_within_keeps_what_is_recent_relative_to_the_newest() -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    s = snaps([base, base + timedelta(hours=20), base + timedelta(hours=30)])
    assert kept(apply_policy(s, Policy(within_s=86400)), s) == [s[1].when, s[2].when]


def test_series_are_judged_apart() -> None:
    t = datetime(2026, 6, 1, tzinfo=UTC)
    a = snaps([t, t + timedelta(hours=1)], (b"/a",))
    b = [Snap(b"\xff" * 32, t - timedelta(days=300), (b"/b",))]
    v = apply_policy(a + b, Policy(last=1))
    assert kept(v, a + b) == [b[0].when, a[1].when]


def test_empty_negative_and_naive_inputs_are_refused() -> None:
    s = snaps([datetime(2026, 1, 1, tzinfo=UTC)])
    with pytest.raises(PolicyError):
        apply_policy(s, Policy())
    with pytest.raises(PolicyError):
        apply_policy(s, Policy(daily=-1))
    with pytest.raises(ValueError):
        apply_policy(snaps([datetime(2026, 1, 1)]), Policy(last=1))


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=40),
       st.builds(Policy, last=st.integers(0, 5), hourly=st.integers(0, 5), daily=st.integers(0, 5),
                 weekly=st.integers(0, 3), monthly=st.integers(0, 3), yearly=st.integers(0, 2)))
def test_the_newest_is_always_kept_and_reasons_match_keep(seconds: list[int], policy: Policy) -> None:
    if policy.empty():
        policy = Policy(last=1)
    base = datetime(2020, 1, 1, tzinfo=UTC)
    s = snaps([base + timedelta(seconds=x) for x in seconds])
    v = apply_policy(s, policy)
    assert len(v) == len(s)
    assert all(x.keep == bool(x.reasons) for x in v)
    newest = max(s, key=lambda x: (x.when, x.id))
    assert next(x for x in v if x.id == newest.id).keep
    # keep-last N keeps at least min(N, count) snapshots
    assert sum(x.keep for x in v) >= min(policy.last, len(s))
