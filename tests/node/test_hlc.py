"""The hybrid logical clock: monotonic, causal, bounded drift, clamps reported."""

from __future__ import annotations

import pytest
from corestate.node.core import hlc
from hypothesis import given
from hypothesis import strategies as st

NOW = 1_764_000_000_000  # 2025-11-24, in ms
ms = st.integers(min_value=0, max_value=hlc.PHYSICAL_MAX - 10**9)
stamps = st.builds(hlc.pack, ms, st.integers(0, hlc.COUNTER_MAX))
DRIFT = 60_000


def test_pack_layout() -> None:
    h = hlc.pack(NOW, 7)
    assert h == NOW << 16 | 7
    assert hlc.physical(h) == NOW and hlc.counter(h) == 7
    with pytest.raises(ValueError):
        hlc.pack(-1)
    with pytest.raises(ValueError):
        hlc.pack(0, hlc.COUNTER_MAX + 1)


def test_tick_follows_the_wall_clock_and_counts_within_a_millisecond() -> None:
    a = hlc.tick(hlc.ZERO, NOW)
    assert a == hlc.pack(NOW, 0)
    b = hlc.tick(a, NOW)
    assert b == hlc.pack(NOW, 1)
    c = hlc.tick(b, NOW - 5000)  # the wall clock stepped back: the HLC does not
    assert c == hlc.pack(NOW, 2)
    assert hlc.tick(c, NOW + 1) == hlc.pack(NOW + 1, 0)


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    full = hlc.pack(NOW, hlc.COUNTER_MAX)
    assert hlc.tick(full, NOW) == hlc.pack(NOW + 1, 0)


@given(last=stamps, now=ms)
def test_tick_is_strictly_monotonic(last: int, now: int) -> None:
    t = hlc.tick(last, now)
    assert t > last
    assert hlc.physical(t) <= max(now, hlc.physical(last) + 1)


@given(st.lists(ms, min_size=1, max_size=50))
def test_a_sequence_of_ticks_never_goes_back(nows: list[int]) -> None:
    clock = hlc.ZERO
    for now in nows:
        nxt = hlc.tick(clock, now)
        assert nxt > clock
        clock = nxt


@given(last=stamps, remote=stamps, now=ms)
def test_receive_is_after_both_the_local_clock_and_the_message(
    last: int, remote: int, now: int
) -> None:
    new, clamped = hlc.receive(last, remote, now, DRIFT)
    assert new > last
    if not clamped:
        assert new > remote  # causality: the receive happens after the send
    else:
        assert remote > hlc.pack(now + DRIFT, hlc.COUNTER_MAX)
        assert hlc.physical(new) <= now + DRIFT + 1 or hlc.physical(new) <= hlc.physical(last) + 1


@given(send=ms, delays=st.lists(st.integers(0, 5000), min_size=1, max_size=10))
def test_causal_chains_keep_their_order(send: int, delays: list[int]) -> None:
    # A message passed along a chain of nodes whose wall clocks all read the same old time.
    stamp = hlc.tick(hlc.ZERO, send)
    for d in delays:
        nxt, clamped = hlc.receive(hlc.ZERO, stamp, send + d, DRIFT)
        assert not clamped
        assert nxt > stamp
        stamp = hlc.tick(nxt, send)
        assert stamp > nxt


def test_a_remote_far_in_the_future_is_clamped_and_reported() -> None:
    future = hlc.pack(NOW + 10 * 365 * 86_400_000, 3)
    new, clamped = hlc.receive(hlc.pack(NOW, 0), future, NOW, DRIFT)
    assert clamped
    assert hlc.physical(new) <= NOW + DRIFT + 1
    assert hlc.clamp(future, NOW, DRIFT) == hlc.pack(NOW + DRIFT, hlc.COUNTER_MAX)
    # Within the drift allowance nothing is clamped.
    near = hlc.pack(NOW + DRIFT - 1, 0)
    new, clamped = hlc.receive(hlc.ZERO, near, NOW, DRIFT)
    assert not clamped and new > near
