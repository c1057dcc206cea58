"""The admission core: streams and bulk bytes per peer, for strangers together, in total."""

from __future__ import annotations

from corestate.node.core.admission import Admission, Limits


def small() -> Admission:
    return Admission(member=Limits(streams=4, bulk=100), stranger=Limits(streams=2, bulk=10),
                     strangers=Limits(streams=3, bulk=15), total=Limits(streams=6, bulk=150))


def test_a_stranger_gets_its_own_few_streams_and_strangers_together_a_few_more() -> None:
    a = small()
    assert a.try_enter("s1", True, streams=1) and a.try_enter("s1", True, streams=1)
    assert not a.try_enter("s1", True, streams=1)  # its own two
    assert a.try_enter("s2", True, streams=1)
    assert not a.try_enter("s3", True, streams=1)  # all strangers: three
    assert a.try_enter("m1", False, streams=1)  # members are not counted with strangers
    a.leave("s1", True, streams=1)
    assert a.try_enter("s3", True, streams=1)


def test_everyone_together_is_capped_and_leaving_frees_the_room() -> None:
    a = small()
    for i in range(6):
        assert a.try_enter(f"m{i % 2}", False, streams=1)
    assert not a.try_enter("m2", False, streams=1)
    a.leave("m0", False, streams=1)
    assert a.try_enter("m2", False, streams=1)


def test_bulk_bytes_in_flight_are_capped_but_one_big_request_still_passes_alone() -> None:
    a = small()
    assert a.try_enter("s1", True, bulk=8)
    assert not a.try_enter("s1", True, bulk=8)  # 16 > 10 while 8 are under way
    a.leave("s1", True, bulk=8)
    assert a.try_enter("s1", True, bulk=50)  # more than the whole limit, but alone
    assert not a.try_enter("s2", True, bulk=1)  # strangers together: 50 already in flight
    a.leave("s1", True, bulk=50)
    assert a.try_enter("s2", True, bulk=1)
    assert not a.streams.get("s1") and not a.bulk.get("s1")  # nothing left behind
