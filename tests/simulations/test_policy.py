"""The real policy in the simulator: the node's scheduler, repair planner and placement,
driven on a simulated clock (synchronous, seeded, milliseconds to seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from corestate.node.core.holders import HolderState
from corestate.simulations import scenario, world
from corestate.simulations.policy import RealPolicy, peer


def _doc(**policy: object) -> dict:
    return {"world": {"nodes": 20, "packs": 300, "days": 3, "sample_every": "1h"},
            "code": {"k": 2, "n": 4},
            "policy": {"repair_every": "12h", **policy}}


def test_a_holder_killed_for_good_is_rebuilt_by_the_owners_next_repairs() -> None:
    w = world.World(scenario.parse(_doc()), seed=3)
    w.kill_at(0.25, 7)
    held = {}

    def before_kill(_: float) -> None:
        if not held and w.engine.now < 0.25 and w.created:
            held["shares"] = int(w.used[7])
    w.progress = before_kill
    summary = w.run()
    assert held["shares"] > 0
    assert summary["packs_lost"] == 0 and summary["node_failures"] == 1
    assert summary["shares_rebuilt"] == held["shares"]  # exactly the lost ones, nothing else
    live = w.live[: w.created]
    assert (live == 4).all()  # every pack full again
    # Each owner repairs every 12 h: every pack is full within 12 h of the loss (plus the
    # job's transfer time).
    assert max(w.repair_times) <= 0.5 + 0.01
    # No pack has two shares on one node, and no owner holds its own shares.
    rows = w.loc[: w.created]
    assert all(len(set(r.tolist())) == 4 for r in rows)
    assert not (rows == w.owner[: w.created, None]).any()


def _away(tmp_path: Path, hla: str) -> tuple[dict, world.World]:
    trace = tmp_path / "trace.csv"
    trace.write_text("# node 5 is away from hour 1 to hour 40\n5,0,1\n5,40,1000\n")
    doc = _doc(holder_lost_after=hla)
    doc["churn"] = {"model": "trace", "file": str(trace)}
    w = world.World(scenario.parse(doc), seed=4)
    return w.run(), w


def test_a_holder_away_less_than_holder_lost_after_keeps_its_shares(tmp_path: Path) -> None:
    summary, w = _away(tmp_path, "2d")
    assert summary["shares_rebuilt"] == 0 and summary["repair_bytes"] == 0
    assert (w.loc[: w.created] == 5).sum() == w.used[5] > 0


def test_a_holder_away_longer_than_holder_lost_after_has_its_shares_rebuilt(tmp_path: Path) -> None:
    summary, w = _away(tmp_path, "1d")
    assert summary["shares_rebuilt"] > 0 and summary["packs_lost"] == 0
    assert (w.loc[: w.created] == 5).sum() == 0  # forgotten: its copies are surplus
    assert (w.live[: w.created] == 4).all()
    # Traffic: per rebuilt pack k shares down, one up per share.
    share = w.share_size
    assert summary["repair_bytes"] == share * (2 * summary["repairs"] + summary["shares_rebuilt"])


def test_the_scheduler_core_paces_the_jobs() -> None:
    w = world.World(scenario.parse(_doc()), seed=1)
    w.run()
    pol = w.policy
    assert isinstance(pol, RealPolicy)
    # 20 owners, a repair every 12 h for 3 days: 6 each (the last may still be running).
    assert 20 * 5 <= pol.jobs_run <= 20 * 6


def test_availability_of_the_real_policy_under_churn_is_the_binomial_one() -> None:
    doc = {"world": {"nodes": 300, "packs": 3000, "days": 10},
           "code": {"k": 4, "n": 8},
           "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8}}
    a = [world.run(scenario.parse(doc), s)[0]["availability"] for s in (1, 2, 3)]
    assert abs(float(np.mean(a)) - 0.9121) < 0.01, a


def test_the_health_cores_holder_book_and_the_vectorised_rule_give_the_same_run() -> None:
    # Churn with long absences (mean 20 h away, holder_lost_after 1 day) and disk losses:
    # holders turn lost, return, fail. The per-owner HolderBook (issue 15's core) and the
    # vectorised rule used at scale must decide the same rebuilds, hence the same run.
    base = {"world": {"nodes": 20, "packs": 300, "days": 10},
            "code": {"k": 3, "n": 6},
            "failures": {"model": "exponential", "node_mttf_days": 60},
            "churn": {"model": "exponential", "mean_online_hours": 30, "mean_offline_hours": 20},
            "policy": {"holder_lost_after": "1d", "repair_every": "6h"}}
    runs = []
    for book in (True, False):
        doc = {**base, "policy": {**base["policy"], "holder_book": book}}
        w = world.World(scenario.parse(doc), seed=9)
        summary = w.run()
        assert isinstance(w.policy, RealPolicy) and (w.policy.books is not None) == book
        runs.append((summary, w.loc[: w.created].copy()))
    (a, loc_a), (b, loc_b) = runs
    assert a["shares_rebuilt"] > 50  # the scenario does exercise lost holders
    for key in ("packs_lost", "shares_rebuilt", "repair_bytes", "availability"):
        assert a[key] == b[key], key
    assert (loc_a == loc_b).all()


def test_a_repair_jobs_shares_recorded_one_by_one_or_in_one_batch_give_the_same_run() -> None:
    # World.put_few (scalar steps, a repair job's few shares) against add_shares (the
    # vectorised batch): the same holders, counts, repair times, hence the same run.
    doc = {"world": {"nodes": 30, "packs": 400, "days": 12},
           "code": {"k": 3, "n": 6},
           "failures": {"model": "exponential", "node_mttf_days": 40},
           "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8},
           "policy": {"holder_lost_after": "1d", "repair_every": "6h", "holder_book": False}}
    runs = []
    for few in (64, 0):
        w = world.World(scenario.parse(doc), seed=4)
        w.few_shares = few
        runs.append((w.run(), w.loc[: w.created].copy(), list(w.repair_times), w.used.copy()))
    (a, loc_a, rt_a, used_a), (b, loc_b, rt_b, used_b) = runs
    assert a["shares_rebuilt"] > 100
    assert a == b
    assert (loc_a == loc_b).all() and rt_a == rt_b and (used_a == used_b).all()


def _run_rounds(doc: dict, idle_rounds: bool, seed: int) -> tuple:
    w = world.World(scenario.parse(doc), seed=seed)
    w.idle_rounds = idle_rounds
    summary = w.run()
    pol = w.policy
    assert isinstance(pol, RealPolicy)
    timers = [(s.now, s.running, {j: t.due for j, t in s._timers.items()}) for s in pol.scheds]
    return summary, w.loc[: w.created].copy(), list(w.repair_times), pol.jobs_run, timers, pol.idle_run


def test_idle_rounds_through_the_cores_run_idle_give_the_same_run_as_tick_by_tick() -> None:
    # Scheduler.run_idle (one call for a round whose repair finds nothing) against
    # handle(Tick) + RunJob + JobFinished: the same decisions, state and accounting,
    # down to every owner's timers, with churn, disk losses, lost holders and members
    # repairing for owners away; then with
    # audits on their own period and backups, whose rounds run_idle declines.
    base = {"world": {"nodes": 40, "packs": 500, "days": 15},
            "code": {"k": 3, "n": 6},
            "failures": {"model": "exponential", "node_mttf_days": 60},
            "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8},
            "policy": {"holder_lost_after": "1d", "repair_every": "6h", "holder_book": False,
                       "owner_away_after": "20h"}}
    other = {**base, "policy": {**base["policy"], "audit_every": "10h"},
             "backups": {"packs_per_day": 40, "backup_every": "12h"}}
    for doc in (base, other):
        fast, slow = (_run_rounds(doc, idle, seed=5) for idle in (True, False))
        # Repairs by owners and by members (owners away), and many rounds.
        assert slow[0]["shares_rebuilt"] > 50 and slow[0]["member_repairs"] > 5 and slow[3] > 1000
        assert fast[0] == slow[0]  # the summary: loss, availability, every byte, events
        assert (fast[1] == slow[1]).all()
        assert fast[2:5] == slow[2:5]
        # Many rounds did go through run_idle (not those with members' work to do, nor
        # beside backups and audits).
        assert slow[5] == 0 and fast[5] > 300


def _owner_away(tmp_path: Path, member_repair: bool) -> tuple[dict, world.World, dict]:
    # Owner 5 is away from hour 1 to hour 200; at day 1 node 7 loses its disk, with
    # shares of owner 5's packs among others'.
    trace = tmp_path / "trace.csv"
    trace.write_text("5,0,1\n5,200,1000\n")
    doc = _doc(member_repair=member_repair, holder_lost_after="1d", owner_away_after="3d")
    doc["world"]["days"] = 8
    doc["churn"] = {"model": "trace", "file": str(trace)}
    w = world.World(scenario.parse(doc), seed=6)
    w.kill_at(1.0, 7)
    seen: dict = {}

    def watch(_: float) -> None:
        mine = np.flatnonzero(w.owner[: w.created] == 5)
        if w.engine.now < 1.0:
            seen["on_7"] = int(np.count_nonzero((w.loc[mine] == 7).any(axis=1)))
        if w.engine.now <= 3.0:
            seen["full_at_3d"] = int(np.count_nonzero(w.live[mine] == 4))
        if w.engine.now <= 5.0:
            seen["full_at_5d"] = int(np.count_nonzero(w.live[mine] == 4))
        seen["mine"] = len(mine)
    w.progress = watch
    return w.run(), w, seen


def test_members_repair_the_packs_of_an_owner_away_once_each(tmp_path: Path) -> None:
    summary, w, seen = _owner_away(tmp_path, member_repair=True)
    pol = w.policy
    assert isinstance(pol, RealPolicy)
    assert seen["on_7"] > 0
    # Before owner_away_after nobody touches them; within a day (two rounds of 12 h)
    # after it, every one is full again, the owner still away.
    assert seen["full_at_3d"] == seen["mine"] - seen["on_7"]
    assert seen["full_at_5d"] == seen["mine"]
    # Each pack rebuilt by exactly one member (the lease rules): one repair and one
    # share per pack, no lease left behind.
    assert summary["member_repairs"] == pol.member_shares == seen["on_7"]
    assert not pol.leases and summary["packs_lost"] == 0


def test_without_member_repair_an_away_owners_packs_wait_for_it(tmp_path: Path) -> None:
    summary, _, seen = _owner_away(tmp_path, member_repair=False)
    assert summary["member_repairs"] == 0
    assert seen["full_at_5d"] == seen["mine"] - seen["on_7"]  # still degraded at day 5


def test_owners_audits_evict_hollow_holders_and_their_shares_are_rebuilt() -> None:
    # 4 of 40 nodes keep nothing of what they accept ([faults]); owners audit at each
    # repair survey (every 6 h) and feed the results to their HolderBook (issue 15's
    # reputation): four failed audits in a row evict, the planner rebuilds the evicted
    # holder's shares elsewhere, and placement gives it nothing new.
    doc = {"world": {"nodes": 40, "packs": 600, "days": 4, "sample_every": "6h"},
           "code": {"k": 3, "n": 6},
           "policy": {"repair_every": "6h"},
           "faults": {"bad_nodes": 0.1, "kept_fraction": 0.0}}
    w = world.World(scenario.parse(doc), seed=3)
    bad = set(np.flatnonzero(w.hollow).tolist())
    assert len(bad) == 4
    at_start: dict = {}

    def watch(_: float) -> None:
        if not at_start and w.created:
            at_start["on_bad"] = int(w.used[w.hollow].sum())
            at_start["full"] = int(np.count_nonzero(w.live[: w.created] == 6))
    w.progress = watch
    summary = w.run()
    pol = w.policy
    assert isinstance(pol, RealPolicy)
    assert at_start["on_bad"] > 200 and at_start["full"] < 600  # hollow shares at first
    assert summary["shares_on_bad_nodes"] == 0  # every one found and moved
    assert (w.live[: w.created] == 6).all() and summary["packs_lost"] == 0
    # Only hollow holders were evicted, by each owner that had shares on them.
    assert {y for ev in pol.evicted.values() for y in ev} == bad
    assert summary["evictions"] == sum(len(ev) for ev in pol.evicted.values()) > 30
    for x, book in pol.rep_books.items():
        assert all(book.state(peer(y)) is HolderState.EVICTED for y in pol.evicted[x])


def test_a_holder_keeping_most_blocks_is_caught_later_by_spot_checks() -> None:
    # kept_fraction 0.9: a spot check passes 9 times in 10, and the beta score forgives
    # single failures, so eviction takes longer than for a holder keeping nothing; but
    # it comes.
    base = {"world": {"nodes": 40, "packs": 300, "days": 6, "sample_every": "12h"},
            "code": {"k": 3, "n": 6}, "policy": {"repair_every": "6h"}}
    runs = {}
    for kept in (0.0, 0.9):
        doc = {**base, "faults": {"bad_nodes": 0.1, "kept_fraction": kept}}
        runs[kept] = world.run(scenario.parse(doc), 3)[0]
    assert runs[0.0]["shares_on_bad_nodes"] == 0
    assert runs[0.9]["evictions"] > 10
    assert runs[0.9]["shares_on_bad_nodes"] > 10 and runs[0.9]["evictions"] < runs[0.0]["evictions"]
