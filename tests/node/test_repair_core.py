"""The repair core decides alone (no I/O): what to rebuild, from where, what to forget."""

from __future__ import annotations

import pytest
from corestate.node.core.repair import PackHealth, ShareState, Verdict, plan_repair
from hypothesis import given
from hypothesis import strategies as st

A, B, C, D = "peer-a", "peer-b", "peer-c", "peer-d"


def health(shares: list[tuple[int, str, str]], *, k: int = 2, n: int = 4, local: bool = False,
           pack: bytes = b"\1" * 32) -> PackHealth:
    return PackHealth(pack, k, n, tuple(ShareState(i, p, Verdict(v)) for i, p, v in shares), local)


def test_a_full_pack_needs_nothing() -> None:
    plan = plan_repair([health([(0, A, "ok"), (1, B, "ok"), (2, C, "ok"), (3, D, "ok")])])
    assert plan.full == 1 and plan.rebuilds == () and plan.unrepairable == ()


def test_missing_and_unreachable_shares_are_rebuilt_from_the_mesh() -> None:
    plan = plan_repair([health([(0, A, "ok"), (1, B, "missing"), (2, C, "unreachable"), (3, D, "ok")])])
    (r,) = plan.rebuilds
    assert r.source == "mesh" and r.indexes == (1, 2)
    # A holder that lost its share is forgotten; one that did not answer is kept.
    assert r.forget == ((1, B),)
    assert r.holders == ((0, A), (3, D))
    assert any("missing" in why for why in r.reasons) and any("unreachable" in why for why in r.reasons)


def test_the_local_copy_is_preferred_and_saves_a_pack_below_k() -> None:
    below_k = [(0, A, "corrupt"), (1, B, "unreachable"), (2, C, "missing"), (3, D, "ok")]
    (r,) = plan_repair([health(below_k, local=True)]).rebuilds
    assert r.source == "local" and r.indexes == (0, 1, 2) and r.forget == ((0, A), (2, C))
    plan = plan_repair([health(below_k, local=False)])
    assert plan.rebuilds == ()
    (u,) = plan.unrepairable
    assert (u.good, u.k) == (1, 2) and "online" in u.reason


def test_a_share_never_placed_is_rebuilt_and_a_bad_copy_beside_a_good_one_is_forgotten() -> None:
    (r,) = plan_repair([health([(0, A, "ok"), (1, B, "ok"), (2, C, "ok")])]).rebuilds
    assert r.indexes == (3,) and r.reasons == ("share 3: never placed",)
    plan = plan_repair([health([(0, A, "ok"), (0, B, "corrupt"), (1, C, "ok"), (2, D, "ok"), (3, A, "ok")])])
    assert plan.full == 1
    (r,) = plan.rebuilds
    assert r.indexes == () and r.forget == ((0, B),)


def test_an_unknown_verdict_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_repair([health([(0, A, "fine")])])
    with pytest.raises(ValueError):  # a bare string is no verdict either
        plan_repair([PackHealth(b"\1" * 32, 1, 1, (ShareState(0, A, "ok"),), False)])  # type: ignore[arg-type]


verdicts = st.sampled_from(["ok", "missing", "corrupt", "unreachable"])


@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n),
    # One verdict per (index, holder), as the ledger has one row per pair.
    st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from([A, B, C, D]), verdicts),
             max_size=12, unique_by=lambda r: (r[0], r[1])))), st.booleans())
def test_every_plan_keeps_good_shares_and_rebuilds_exactly_the_rest(
        n_rows: tuple[int, list[tuple[int, str, str]]], local: bool) -> None:
    n, rows = n_rows
    k = max(1, n // 2)
    h = health(rows, k=k, n=n, local=local)
    plan = plan_repair([h])
    good = {i for i, _, v in rows if v == "ok"}
    assert plan.full + len([r for r in plan.rebuilds if r.indexes]) + len(plan.unrepairable) == 1
    for r in plan.rebuilds:
        assert set(r.indexes) == set(range(n)) - good  # never a good share, every other one
        assert set(r.holders) == {(i, p) for i, p, v in rows if v == "ok"}
        assert all(v in ("missing", "corrupt") for i, p, v in rows if (i, p) in set(r.forget))
        assert r.source in ("local", "mesh", "none")
        if r.source == "mesh":
            assert len(good) >= k
    if plan.unrepairable:
        assert not local and len(good) < k and plan.unrepairable[0].good == len(good)
