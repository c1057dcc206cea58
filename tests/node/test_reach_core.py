"""node/core/reach.py: reachability from dial-backs, and which relays to try."""

from __future__ import annotations

from corestate.node.core.reach import judge, relays_to_try


def test_no_answer_is_unknown_never_a_guess() -> None:
    assert judge({}).state == "unknown"
    v = judge({"m1": None, "m2": None})
    assert v.state == "unknown" and "2 member" in v.reason


def test_one_member_that_reached_us_makes_us_public() -> None:
    v = judge({"m1": [], "m2": ["/ip4/198.51.100.10/tcp/4101"], "m3": None})
    assert v.state == "public" and v.public_addrs == ("/ip4/198.51.100.10/tcp/4101",)
    assert "198.51.100.10" in v.reason


def test_members_that_tried_and_failed_make_us_private() -> None:
    v = judge({"m1": [], "m2": None})
    assert v.state == "private" and v.public_addrs == () and "1 member" in v.reason


def test_relays_to_try_skips_ourselves_held_ones_and_recent_failures() -> None:
    members = ["c", "a", "me", "b", "d"]
    assert relays_to_try(members, "me", ["a"], {"b": 100.0}, now=130.0, want=2, retry_after=60) == ["c", "d"]
    assert relays_to_try(members, "me", ["a"], {"b": 100.0}, now=161.0, want=2, retry_after=60) == ["b", "c", "d"]
    assert relays_to_try(members, "me", ["a", "c"], {}, now=0.0, want=2) == []
