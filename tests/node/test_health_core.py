"""The health cores, synchronously: events in, commands out (node/core/holders.py,
node/core/health.py, node/core/lease.py)."""

from __future__ import annotations

import random

import pytest
from corestate.node.core import health as h
from corestate.node.core import holders as hb
from corestate.node.core import lease as ls
from corestate.node.core import records

A, B, C, D = "12D3KooWAaaa", "12D3KooWBbbb", "12D3KooWCccc", "12D3KooWDddd"
DAY = 86400.0


# -- reputation -------------------------------------------------------------------------------


def test_one_failure_makes_a_holder_suspect_and_passes_bring_it_back() -> None:
    book = hb.HolderBook()
    book.handle(hb.Known(A), 0)
    assert book.state(A) is hb.HolderState.OK
    out = book.handle(hb.Audited(A, False, "share 1 of ab"), 1)
    assert [(c.old, c.new) for c in out if isinstance(c, hb.StateChanged)] == [
        (hb.HolderState.OK, hb.HolderState.SUSPECT)]
    assert "share 1 of ab" in out[0].reason and "0.950" in out[0].reason
    passes = 0
    while book.state(A) is hb.HolderState.SUSPECT:
        book.handle(hb.Audited(A, True), 2 + passes)
        passes += 1
        assert passes < 20
    assert 2 <= passes <= 6  # a doubt is settled by a few passes, not one
    rec = book.record(A)
    assert rec is not None and rec.failed == 1 and rec.passed == passes


def test_failures_in_a_row_evict_and_eviction_is_final() -> None:
    book = hb.HolderBook()
    book.handle(hb.Known(A), 0)
    states = []
    for i in range(4):
        out = book.handle(hb.Audited(A, False), i + 1)
        states.append(book.state(A))
    assert states == [hb.HolderState.SUSPECT] * 3 + [hb.HolderState.EVICTED]
    assert isinstance(out[0], hb.StateChanged) and out[0].new is hb.HolderState.EVICTED
    assert "below 0.85" in out[0].reason
    for i in range(50):  # good answers later do not bring it back
        book.handle(hb.Audited(A, True), 10 + i)
    assert book.state(A) is hb.HolderState.EVICTED
    # and an evicted holder never turns lost (it is out already)
    assert book.handle(hb.Tick(), 100 * DAY) == []


def test_failures_mixed_with_passes_take_longer_to_evict() -> None:
    book = hb.HolderBook()
    book.handle(hb.Known(A), 0)
    n = 0
    while book.state(A) is not hb.HolderState.EVICTED:
        book.handle(hb.Audited(A, n % 2 == 0), n)
        n += 1
        assert n < 200
    assert n >= 8  # failing half of its audits gets a holder out, later than four failures in a row


def test_unreachable_audits_move_no_score() -> None:
    book = hb.HolderBook()
    book.handle(hb.Known(A), 0)
    for i in range(10):
        assert book.handle(hb.Unanswered(A), i) == []
    assert book.state(A) is hb.HolderState.OK and book.record(A).score == 1.0


# -- lost holders -------------------------------------------------------------------------------


def test_a_holder_unreachable_longer_than_the_threshold_is_lost() -> None:
    book = hb.HolderBook(hb.HolderConfig(holder_lost_after=30))
    book.handle(hb.Known(A), 0)
    book.handle(hb.Known(B), 0)
    assert book.next_deadline() == 30
    book.handle(hb.Answered(B), 20)
    assert book.next_deadline() == 30  # A's
    assert book.handle(hb.Unanswered(A), 29.9) == []
    out = book.handle(hb.Tick(), 30)
    assert out == [hb.StateChanged(A, hb.HolderState.OK, hb.HolderState.LOST,
                                   "unreachable for 30s (holder_lost_after is 30s)")]
    assert book.next_deadline() == 50  # B's, A lost already
    assert book.handle(hb.Tick(), 40) == []  # said once


def test_a_lost_holder_that_answers_again_returns() -> None:
    book = hb.HolderBook(hb.HolderConfig(holder_lost_after=30))
    book.handle(hb.Known(A), 0)
    book.handle(hb.Tick(), 31)
    assert book.state(A) is hb.HolderState.LOST
    out = book.handle(hb.Answered(A), 100)
    assert isinstance(out[0], hb.StateChanged) and out[0].new is hb.HolderState.OK
    assert isinstance(out[1], hb.Returned) and out[1].away == 100
    assert book.state(A) is hb.HolderState.OK and book.next_deadline() == 130


def test_seen_by_other_means_times_absence_from_then() -> None:
    book = hb.HolderBook(hb.HolderConfig(holder_lost_after=30))
    book.handle(hb.Seen(A, 10), 50)  # first heard of now, last seen at 10
    assert book.next_deadline() == 40
    book.handle(hb.Seen(A, 5), 50)  # older news changes nothing
    assert book.next_deadline() == 40
    book.handle(hb.Seen(A, 45), 50)
    assert book.next_deadline() == 75
    book.handle(hb.Seen(A, 99), 60)  # never in the future
    assert book.next_deadline() == 90


def test_the_book_resumes_from_its_records() -> None:
    book = hb.HolderBook(hb.HolderConfig(holder_lost_after=30))
    book.handle(hb.Known(A), 0)
    book.handle(hb.Audited(A, False), 1)
    again = hb.HolderBook(hb.HolderConfig(holder_lost_after=30), book.records())
    assert again.state(A) is hb.HolderState.SUSPECT and again.next_deadline() == 31


def test_default_lost_after_is_three_days() -> None:
    assert hb.HolderConfig().holder_lost_after == 3 * DAY
    with pytest.raises(ValueError):
        hb.HolderConfig(holder_lost_after=0)


# -- the audit planner ----------------------------------------------------------------------------


def _shares(peers: list[str], packs: int, blocks: int = 8) -> list[hb.ShareRef]:
    return [hb.ShareRef(bytes([p]) * 32, i, peer, blocks) for p in range(packs) for i, peer in enumerate(peers)]


def test_a_round_is_repeatable_from_its_seed_and_draws_blocks_in_range() -> None:
    shares = _shares([A, B, C], 10)
    cfg = hb.AuditConfig(audit_every=60, spot_per_round=5, whole_cycle=DAY)
    one = hb.AuditPlanner(cfg).plan(shares, {}, random.Random(7))
    two = hb.AuditPlanner(cfg).plan(shares, {}, random.Random(7))
    assert one == two
    spots = [c for c in one if c.block is not None]
    assert len(spots) == 5 and all(0 <= c.block < 8 for c in spots)
    assert len({c.share.key for c in one}) == len(one)  # no share twice in a round


def test_the_whole_share_cycle_covers_every_share_once_per_cycle() -> None:
    shares = _shares([A, B, C, D], 25)  # 100 shares
    cfg = hb.AuditConfig(audit_every=3600, spot_per_round=0, whole_cycle=DAY)
    planner = hb.AuditPlanner(cfg)
    assert planner.whole_per_round(100) == 5  # 100 * 1h / 24h, rounded up
    seen: list[tuple[bytes, int, str]] = []
    for _ in range(20):  # 20 rounds of 5 = one full cycle in 20h < 24h
        seen += [c.share.key for c in planner.plan(shares, {}, random.Random(1)) if c.block is None]
    assert sorted(seen) == sorted(s.key for s in shares)


def test_evicted_and_lost_holders_are_not_audited_and_suspects_more_often() -> None:
    shares = _shares([A, B, C, D], 50)
    states = {A: hb.HolderState.EVICTED, B: hb.HolderState.LOST, C: hb.HolderState.SUSPECT}
    cfg = hb.AuditConfig(audit_every=60, spot_per_round=10, suspect_factor=4, whole_cycle=1e9)
    planner = hb.AuditPlanner(cfg)
    rng = random.Random(3)
    counts = {C: 0, D: 0}
    for _ in range(200):
        for ch in planner.plan(shares, states, rng):
            assert ch.share.peer in (C, D)
            if ch.block is not None:
                counts[ch.share.peer] += 1
    assert counts[C] > 2.5 * counts[D]  # weight 4 against 1, drawn without replacement


def test_a_holder_that_kept_a_few_blocks_is_caught_by_spot_checks() -> None:
    """The holder kept blocks 0..1 of 32 of every share; spot checks find it fast."""
    shares = _shares([A], 20, blocks=32)
    book = hb.HolderBook()
    book.handle(hb.Known(A), 0)
    planner = hb.AuditPlanner(hb.AuditConfig(audit_every=60, spot_per_round=4, whole_cycle=1e9))
    rng = random.Random(11)
    rounds = 0
    while book.state(A) is not hb.HolderState.EVICTED:
        rounds += 1
        for ch in planner.plan(shares, book.states(), rng):
            kept = ch.block is not None and ch.block < 2
            book.handle(hb.Audited(A, kept), rounds)
        assert rounds < 5
    assert rounds <= 2


# -- the health summary ---------------------------------------------------------------------------


def test_levels() -> None:
    assert h.level(4, 2, 4, local=False) is h.Level.FULL
    assert h.level(3, 2, 4, local=False) is h.Level.DEGRADED
    assert h.level(2, 2, 4, local=False) is h.Level.AT_RISK
    assert h.level(1, 2, 4, local=True) is h.Level.AT_RISK
    assert h.level(1, 2, 4, local=False) is h.Level.LOST
    assert h.level(1, 1, 1, local=False) is h.Level.FULL


def test_lost_and_evicted_holders_do_not_count_and_an_index_counts_once() -> None:
    p = h.PackView(b"p" * 32, 2, 4, 1000, ((0, A), (1, B), (2, C), (3, D), (3, A)))
    assert h.pack_level(p, {}) is h.Level.FULL
    states = {D: hb.HolderState.LOST}
    assert h.counted(p, states) == {0, 1, 2, 3}  # index 3 rebuilt on A
    states = {A: hb.HolderState.EVICTED}
    assert h.pack_level(p, states) is h.Level.DEGRADED  # 1, 2, 3 (on D)
    states = {A: hb.HolderState.EVICTED, D: hb.HolderState.LOST}
    assert h.pack_level(p, states) is h.Level.AT_RISK  # 1, 2: k, no margin
    states = {A: hb.HolderState.EVICTED, B: hb.HolderState.LOST, D: hb.HolderState.LOST}
    assert h.pack_level(p, states) is h.Level.LOST
    # D came back: its copy of 3 is surplus beside A's; A's copy of 0 is the only one
    assert h.surplus(p, {}, D) == [3] and h.surplus(p, {}, A) == [3]
    assert h.surplus(p, {D: hb.HolderState.LOST}, A) == []


def test_summary_per_snapshot_holders_and_repair_eta() -> None:
    full = h.PackView(b"f" * 32, 2, 4, 1000, ((0, A), (1, B), (2, C), (3, D)))
    deg = h.PackView(b"d" * 32, 2, 4, 1000, ((0, A), (1, B), (2, C), (3, D)))
    states = {D: hb.HolderState.LOST}
    recs = [hb.HolderRecord(A, 20, 0, passed=5, last_seen=9.0)]
    s = h.summarize([full, deg], recs, states, [("s1", [full.pack]), ("s2", [full.pack, deg.pack])], rate=1000)
    assert s.total == h.Tally(0, 2, 0, 0)
    assert dict(s.snapshots) == {"s1": h.Tally(0, 1, 0, 0), "s2": h.Tally(0, 2, 0, 0)}
    assert [(x.peer, x.state, x.shares, x.passed) for x in s.holders] == [
        (A, hb.HolderState.OK, 2, 5), (B, hb.HolderState.OK, 2, 0), (C, hb.HolderState.OK, 2, 0),
        (D, hb.HolderState.LOST, 2, 0)]
    # two packs, one share each: read 2 shares + write 1, per pack
    assert s.repair.shares == 2 and s.repair.bytes == 6000 and s.repair.eta == 6.0
    assert h.summarize([full], [], {}, rate=None).repair.eta == 0.0
    assert h.summarize([deg], [], states, rate=None).repair.eta is None


def test_a_pack_never_placed_is_at_risk_but_not_repairs_to_rebuild() -> None:
    """A standalone node's packs (or ones not uploaded yet) live on this disk alone: at risk,
    but the next backup's upload places them, not repair; a placed pack with a local copy and
    too few shares is repair's."""
    never = h.PackView(b"n" * 32, 1, 1, 0, (), True)
    s = h.summarize([never], [], {}, rate=1000)
    assert s.total == h.Tally(0, 0, 1, 0)
    assert (s.repair.packs, s.repair.shares, s.repair.unrepairable, s.repair.eta) == (0, 0, 0, 0.0)
    assert s.repair.reason == "nothing to repair"
    placed = h.PackView(b"p" * 32, 2, 4, 1000, ((0, A),), True)
    assert h.summarize([never, placed], [], {}, rate=1000).repair.shares == 3


def test_alerts_once_per_fall() -> None:
    pk = b"x" * 32
    out = h.alerts({pk: h.Level.FULL}, {pk: h.Level.AT_RISK})
    assert [(a.name, a.severity) for a in out] == [("redundancy-low", "warning")]
    assert h.alerts({pk: h.Level.AT_RISK}, {pk: h.Level.AT_RISK}) == []
    assert h.alerts({pk: h.Level.FULL}, {pk: h.Level.DEGRADED}) == []
    out = h.alerts({pk: h.Level.DEGRADED}, {pk: h.Level.LOST})
    assert [(a.name, a.severity) for a in out] == [("pack-lost", "critical")]
    assert h.alerts({pk: h.Level.FULL}, {pk: h.Level.DEGRADED}, low=h.Level.DEGRADED)[0].name == "redundancy-low"
    ev = h.holder_alert(hb.StateChanged(A, hb.HolderState.SUSPECT, hb.HolderState.EVICTED, "why"))
    assert ev is not None and ev.name == "holder-evicted"
    assert h.holder_alert(hb.StateChanged(A, hb.HolderState.OK, hb.HolderState.LOST, "x")).name == "holder-lost"
    assert h.holder_alert(hb.StateChanged(A, hb.HolderState.OK, hb.HolderState.SUSPECT, "x")) is None


# -- owner away and repair leases -----------------------------------------------------------------


def test_many_packs_falling_at_once_make_one_alert() -> None:
    falls = h.alerts({bytes([i]) * 32: h.Level.FULL for i in range(10)},
                     {bytes([i]) * 32: h.Level.AT_RISK if i < 7 else h.Level.LOST for i in range(10)})
    out = h.batch(falls, 4)
    assert [(a.name, dict(a.details).get("packs")) for a in out] == [("pack-lost", None)] * 3 + [
        ("redundancy-low", "7")]
    low = dict(out[-1].details)
    assert low["pack0"] == (bytes([0]) * 32).hex() and "pack7" not in low and out[-1].severity == "warning"
    assert h.batch(falls[:2], 4) == falls[:2]


def test_owner_away() -> None:
    assert ls.owner_away(0.0, 19.0, 20.0)[0] is False
    away, why = ls.owner_away(0.0, 20.0, 20.0)
    assert away and "20s" in why


def test_members_race_to_one_winner_whatever_the_order() -> None:
    pk = b"q" * 32
    now = 1_000_000
    members = [B, C, D]
    leases = [ls.Lease(pk, A, m, now + 60_000) for m in members]
    winners = set()
    for me in members:
        for perm in (leases, leases[::-1]):
            d = ls.decide(pk, A, me, perm, now, away=True)
            if d.action is ls.Action.REPAIR:
                winners.add(me)
            else:
                assert d.action is ls.Action.YIELD and d.winner == ls.order(pk, members)[0]
    assert winners == {ls.order(pk, members)[0]}


def test_lease_decisions() -> None:
    pk = b"q" * 32
    now = 5_000
    assert ls.decide(pk, A, B, [], now, away=False).action is ls.Action.NONE
    assert ls.decide(pk, A, A, [], now, away=True).action is ls.Action.NONE
    assert ls.decide(pk, A, B, [], now, away=True).action is ls.Action.CLAIM
    mine = ls.Lease(pk, A, B, now + 10)
    assert ls.decide(pk, A, B, [mine], now, away=True).action is ls.Action.REPAIR
    theirs = ls.Lease(pk, A, C, now + 10)
    assert ls.decide(pk, A, D, [theirs], now, away=True).action is ls.Action.DEFER
    expired = ls.Lease(pk, A, C, now)
    assert ls.decide(pk, A, D, [expired], now, away=True).action is ls.Action.CLAIM
    other_pack = ls.Lease(b"o" * 32, A, C, now + 10)
    assert ls.decide(pk, A, D, [other_pack], now, away=True).action is ls.Action.CLAIM
    assert ls.renew_due(mine, now, 30) and not ls.renew_due(ls.Lease(pk, A, B, now + 20), now, 30)


def test_turns_are_staggered_by_rank() -> None:
    pk = b"t" * 32
    first = ls.order(pk, [B, C, D])
    assert [ls.claim_delay(pk, m, [B, C, D], 5.0) for m in first] == [0.0, 5.0, 10.0]


def test_lease_record_round_trip_and_rejects() -> None:
    rec = records.RepairLease(b"z" * 32, A, 123456)
    assert records.kind(rec.key) is records.Kind.LEASE
    assert records.RepairLease.decode(rec.key, rec.value()) == rec
    import cbor2
    for bad in (cbor2.dumps([A]), cbor2.dumps([A, -1]), cbor2.dumps(["", 5]), b"\xff"):
        with pytest.raises(records.CorruptRecord):
            records.RepairLease.decode(rec.key, bad)
    with pytest.raises(records.CorruptRecord):
        records.RepairLease.decode(b"k" + b"z" * 32, rec.value())


# -- the [health] config ------------------------------------------------------------------------


def test_health_config(tmp_path: object) -> None:
    from pathlib import Path

    from corestate.node.errors import ConfigError
    from corestate.node.home import DEFAULT_CONFIG, Config, HealthConfig
    assert isinstance(tmp_path, Path)
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(DEFAULT_CONFIG)
    cfg = Config.load(cfg_path)
    assert cfg.audit_every == 3600 and cfg.health == HealthConfig(3 * DAY, 3 * DAY, 30 * DAY, 0)
    text = DEFAULT_CONFIG.replace('holder_lost_after = "3d"', 'holder_lost_after = "30s"').replace(
        "repair_bandwidth = 0", 'repair_bandwidth = "10 MiB/s"').replace('audit_every = "1h"', 'audit_every = "5s"')
    cfg_path.write_text(text)
    cfg = Config.load(cfg_path)
    assert cfg.audit_every == 5 and cfg.health.holder_lost_after == 30
    assert cfg.health.repair_bandwidth == 10 << 20
    for bad in ('holder_lost_after = "0s"', 'repair_bandwidth = -1', 'holder_lost_afer = "3d"'):
        cfg_path.write_text(DEFAULT_CONFIG.replace('holder_lost_after = "3d"', bad))
        with pytest.raises(ConfigError):
            Config.load(cfg_path)
    # A home from before this section: the defaults.
    cfg_path.write_text("[backup]\npaths = []\n")
    assert Config.load(cfg_path).health == HealthConfig() and Config.load(cfg_path).audit_every == 0
