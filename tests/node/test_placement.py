"""Placement core: weighted rendezvous hashing over failure domains (plain synchronous tests).

The statistical checks run over fixed pack ids, so they are deterministic: the bounds are
tolerant so that a change of hash or formula that keeps the properties still passes, and a
change that breaks them does not.
"""

from __future__ import annotations

import math
from collections import Counter

import blake3
import pytest
from corestate.node.core.placement import Candidate, Placement, place, rank, replace, replace_all
from hypothesis import given, settings
from hypothesis import strategies as st


def pack_id(i: int) -> bytes:
    return blake3.blake3(b"pack %d" % i).digest()


PACKS = [pack_id(i) for i in range(2000)]


def peers(count: int, capacity: int = 100) -> list[Candidate]:
    return [Candidate(f"peer-{i:02d}", capacity) for i in range(count)]


def grid(sites: int, hosts: int, per_host: int) -> list[Candidate]:
    return [
        Candidate(f"p-{s}-{h}-{k}", 100, (f"site-{s}", f"host-{s}-{h}"))
        for s in range(sites)
        for h in range(hosts)
        for k in range(per_host)
    ]


# -- hypothesis strategies -------------------------------------------------------------

labels = st.one_of(
    st.just(()),
    st.tuples(st.sampled_from(["site-a", "site-b", "site-c"])),
    st.tuples(st.sampled_from(["site-a", "site-b", "site-c"]), st.sampled_from(["h1", "h2"])),
)
candidate_lists = st.lists(
    st.builds(
        Candidate,
        peer=st.text(min_size=1, max_size=6),
        capacity=st.integers(min_value=0, max_value=10**12),
        domains=labels,
    ),
    max_size=12,
)
packs = st.binary(min_size=32, max_size=32)


# -- the hash itself --------------------------------------------------------------------


def reference_rank(pack: bytes, cands: list[Candidate]) -> list[str]:
    """The documented formula, written out independently: a change here breaks restores
    that rely on rank() when placement records are lost."""

    def score(c: Candidate) -> float:
        h = int.from_bytes(blake3.blake3(pack + c.peer.encode()).digest()[:8], "big")
        u = (h + 1) / (2**64 + 1)
        return -c.capacity / math.log(u)

    return [c.peer for c in sorted(cands, key=score, reverse=True)]


def test_rank_follows_the_documented_formula() -> None:
    cands = [Candidate(f"12D3KooW{i}", cap) for i, cap in enumerate([5, 1, 3, 8, 2, 2, 9])]
    for pack in PACKS[:50]:
        assert rank(pack, cands) == reference_rank(pack, cands)
        assert place(pack, 7, cands).peers == tuple(reference_rank(pack, cands))


def test_rank_keeps_full_peers_last() -> None:
    cands = [*peers(4), Candidate("full-1", 0), Candidate("full-2", 0)]
    for pack in PACKS[:20]:
        order = rank(pack, cands)
        assert set(order[-2:]) == {"full-1", "full-2"}
        assert order[0] == place(pack, 1, cands).peers[0]


# -- properties ---------------------------------------------------------------------------


@given(pack=packs, n=st.integers(0, 14), cands=candidate_lists, data=st.data())
@settings(max_examples=300, deadline=None)
def test_placement_invariants(pack: bytes, n: int, cands: list[Candidate], data: st.DataObject) -> None:
    exclude = data.draw(st.sets(st.sampled_from([c.peer for c in cands])) if cands else st.just(set()))
    p = place(pack, n, cands, exclude=exclude)
    # Deterministic, and the order of the candidate list does not matter.
    assert p == place(pack, n, cands, exclude=exclude)
    first: dict[str, Candidate] = {}
    for c in cands:
        first.setdefault(c.peer, c)
    assert p.peers == place(pack, n, list(reversed(list(first.values()))), exclude=exclude).peers
    eligible = {c.peer for c in first.values() if c.capacity > 0 and c.peer not in exclude}
    assert len(set(p.peers)) == len(p.peers)
    assert set(p.peers) <= eligible
    assert p.short == max(0, n - len(eligible))
    assert len(p.peers) == n - p.short
    assert p.pack == pack
    assert bool(p.short) == any(r.startswith("only ") and "for n=" in r for r in p.reasons)


@given(pack=packs, n=st.integers(1, 14), cands=candidate_lists)
@settings(max_examples=300, deadline=None)
def test_domains_spread_before_repeating(pack: bytes, n: int, cands: list[Candidate]) -> None:
    p = place(pack, n, cands)
    by_peer: dict[str, Candidate] = {}
    for c in cands:
        by_peer.setdefault(c.peer, c)
    pool = [c for c in by_peer.values() if c.capacity > 0]

    def domain(c: Candidate, level: int) -> tuple[str, ...]:
        return c.domains[: level + 1] if len(c.domains) > level else ("peer", c.peer)

    for level in (0, 1):
        available = {domain(c, level) for c in pool}
        used = {domain(by_peer[x], level) for x in p.peers}
        assert len(used) == min(len(p.peers), len(available)), level


# -- stability and weights (statistical, over 2000 fixed packs) -----------------------------


def test_adding_a_peer_moves_about_one_in_n_first_choices() -> None:
    before = peers(20)
    after = [*before, Candidate("newcomer", 100)]
    moved = 0
    for pack in PACKS:
        a = place(pack, 1, before).peers[0]
        b = place(pack, 1, after).peers[0]
        if a != b:
            assert b == "newcomer"  # a first choice only ever moves to the new peer
            moved += 1
    expected = len(PACKS) / 21
    assert 0.5 * expected < moved < 1.5 * expected


def test_removing_a_peer_moves_only_its_packs() -> None:
    full = peers(10)
    less = full[1:]
    for pack in PACKS[:500]:
        a = place(pack, 4, full).peers
        b = place(pack, 4, less).peers
        if "peer-00" not in a:
            assert a == b
        else:
            assert [x for x in a if x != "peer-00"] == list(b[: len(a) - 1])


def test_first_shares_follow_capacity() -> None:
    cands = [Candidate("big", 300), *peers(3, capacity=100)]
    firsts = Counter(place(pack, 3, cands).peers[0] for pack in PACKS)
    small = sum(firsts[f"peer-{i:02d}"] for i in range(3)) / 3
    assert 2.5 < firsts["big"] / small < 3.5
    assert 0.45 < firsts["big"] / len(PACKS) < 0.55


def test_capacity_zero_is_never_chosen() -> None:
    cands = [*peers(3), Candidate("full", 0)]
    for pack in PACKS[:200]:
        p = place(pack, 4, cands)
        assert "full" not in p.peers
        assert p.short == 1
        assert p.reasons == ("only 3 candidates for n=4", "1 candidate without capacity")


# -- failure domains ----------------------------------------------------------------------


def test_distinct_sites_then_hosts() -> None:
    cands = grid(sites=3, hosts=3, per_host=2)
    for pack in PACKS[:200]:
        three = place(pack, 3, cands)
        assert len({c.domains[0] for c in cands if c.peer in three.peers}) == 3
        assert three.reasons == ()
        nine = place(pack, 9, cands)
        hosts = [next(c.domains for c in cands if c.peer == x) for x in nine.peers]
        assert len(set(hosts)) == 9
        assert Counter(h[0] for h in hosts) == {"site-0": 3, "site-1": 3, "site-2": 3}
        # The first three shares already cover the three sites.
        assert len({h[0] for h in hosts[:3]}) == 3


def test_new_host_beats_a_less_loaded_site() -> None:
    # site-a has three hosts, site-b one host with many peers: the fourth share goes to a
    # fresh host in site-a, not a second share on site-b's only host.
    cands = [Candidate(f"a{i}", 100, ("site-a", f"host-a{i}")) for i in range(3)]
    cands += [Candidate(f"b{i}", 100, ("site-b", "host-b")) for i in range(5)]
    for pack in PACKS[:100]:
        p = place(pack, 4, cands)
        assert sorted(x for x in p.peers if x.startswith("a")) == ["a0", "a1", "a2"]
        assert "domain site-a repeated: only 2 sites" in p.reasons
        p5 = place(pack, 5, cands)
        assert "domain site-b/host-b repeated: only 4 hosts" in p5.reasons


def test_reasons_name_the_repeated_domain() -> None:
    cands = [Candidate(f"x{i}", 100, ("site-a", f"h{i}")) for i in range(3)]
    cands.append(Candidate("y", 100, ("site-b", "h9")))
    p = place(PACKS[0], 3, cands)
    assert p.short == 0
    assert p.reasons == ("domain site-a repeated: only 2 sites",)


def test_unlabelled_peers_are_their_own_domains() -> None:
    cands = [Candidate(f"x{i}", 100, ("site-a",)) for i in range(4)] + peers(2)
    for pack in PACKS[:100]:
        p = place(pack, 3, cands)
        assert {"peer-00", "peer-01"} <= set(p.peers)


# -- replace, exclude, edge cases --------------------------------------------------------------


def test_replace_picks_the_next_ranked_unused_peer() -> None:
    cands = peers(8)
    for pack in PACKS[:200]:
        p = place(pack, 4, cands)
        order = rank(pack, cands)
        assert list(p.peers) == order[:4]
        for index in range(4):
            assert replace(pack, p.peers, index, cands) == order[4]
        # The holder of share 2 is gone from the candidates.
        gone = p.peers[2]
        live = [c for c in cands if c.peer != gone]
        assert replace(pack, p.peers, 2, live) == order[4]
        assert replace(pack, p.peers, 2, live, exclude={order[4]}) == order[5]
        # Share 0 has no holder any more (None): its former peer is free again.
        holders: list[str | None] = [None, *p.peers[1:]]
        assert replace(pack, holders, 2, live) == order[0]
        assert replace(pack, holders, 2, live, exclude={order[0]}) == order[4]


def test_replace_spreads_over_domains() -> None:
    cands = grid(sites=2, hosts=2, per_host=2)
    site = {c.peer: c.domains[0] for c in cands}
    for pack in PACKS[:100]:
        p = place(pack, 2, cands)
        assert site[p.peers[0]] != site[p.peers[1]]
        new = replace(pack, p.peers, 1, cands)
        assert new is not None and new not in p.peers
        assert site[new] == site[p.peers[1]]  # the site left without a share


def test_replace_returns_none_when_nobody_is_left() -> None:
    cands = peers(3)
    p = place(PACKS[0], 3, cands)
    assert replace(PACKS[0], p.peers, 0, cands) is None
    with pytest.raises(ValueError):
        replace(PACKS[0], p.peers, 3, cands)


def test_exclude_is_respected() -> None:
    cands = peers(6)
    for pack in PACKS[:100]:
        top = rank(pack, cands)[:2]
        p = place(pack, 4, cands, exclude=top)
        assert not set(top) & set(p.peers)
        assert p.peers == tuple(rank(pack, cands)[2:6])
        assert p.reasons == ()


def test_empty_and_short_candidate_lists() -> None:
    assert place(PACKS[0], 3, []) == Placement(PACKS[0], (), ("only 0 candidates for n=3",), 3)
    assert place(PACKS[0], 0, []) == Placement(PACKS[0], (), (), 0)
    p = place(PACKS[0], 4, peers(3))
    assert p.short == 1 and len(p.peers) == 3
    assert p.reasons == ("only 3 candidates for n=4",)
    dup = place(PACKS[0], 2, [Candidate("a", 5), Candidate("a", 7)])
    assert dup.peers == ("a",) and dup.short == 1
    with pytest.raises(ValueError):
        place(PACKS[0], -1, peers(3))


_names = st.sampled_from([f"peer-{i:02d}" for i in range(12)])


@settings(max_examples=300, deadline=None)
@given(
    pack=st.binary(min_size=1, max_size=8),
    cands=st.lists(st.tuples(_names, st.integers(-5, 100), st.sampled_from([(), ("a",), ("b",), ("a", "h1")])),
                   max_size=14),
    labels=st.booleans(),
    holders=st.lists(st.one_of(st.none(), _names), min_size=1, max_size=8),
    data=st.data(),
)
def test_replace_all_is_replace_share_by_share(pack: bytes, cands: list, labels: bool, holders: list,
                                                data: st.DataObject) -> None:
    candidates = [Candidate(p, c, d if labels else ()) for p, c, d in cands]
    indexes = data.draw(st.lists(st.integers(0, len(holders) - 1), unique=True, min_size=1))
    exclude = data.draw(st.sets(_names, max_size=3))
    peers_now: list[str | None] = list(holders)
    expected: list[str | None] = []
    for i in indexes:
        chosen = replace(pack, peers_now, i, candidates, exclude=exclude)
        expected.append(chosen)
        if chosen is not None:
            peers_now[i] = chosen
    assert replace_all(pack, holders, indexes, candidates, exclude=exclude) == expected


def test_replace_all_ranks_a_pack_once_for_all_its_shares_without_labels() -> None:
    pool = peers(20)
    got = replace_all(PACKS[0], ["peer-00", None, "peer-01", None], [1, 3], pool)
    order = [p for p in rank(PACKS[0], pool) if p not in ("peer-00", "peer-01")]
    assert got == order[:2]
    with pytest.raises(ValueError):
        replace_all(PACKS[0], [None], [1], pool)
