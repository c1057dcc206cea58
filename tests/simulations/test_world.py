"""The world's processes: sites, backups over time, Weibull lives, traces, scenario errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from corestate.simulations import scenario, world
from corestate.simulations.errors import ScenarioError


def test_a_site_lost_at_once_costs_each_pack_one_share_when_placement_spreads_over_sites() -> None:
    doc = {"world": {"nodes": 40, "packs": 400, "days": 2, "sites": 8, "sample_every": "1h"},
           "code": {"k": 7, "n": 8}, "policy": {"repair_every": "1d"}}
    w = world.World(scenario.parse(doc), seed=2)
    w.kill_site_at(0.5, 3)
    live_after: list[np.ndarray] = []
    w.progress = lambda _: live_after.append(w.live[: w.created].copy()) if 0.5 < w.engine.now < 1 else None
    summary = w.run()
    assert summary["node_failures"] == 5 and summary["site_failures"] == 1
    # 7-of-8 survives one loss: one share per site means no pack lost two.
    assert summary["packs_lost"] == 0
    assert live_after and live_after[0].min() == 7
    assert (w.live[: w.created] == 8).all()  # and the owners' repairs made them full again
    sites = w.site[w.loc[: w.created]]
    assert all(len(set(r.tolist())) == 8 for r in sites)  # still one share per site


def test_backups_add_packs_through_the_scheduler_and_placement() -> None:
    doc = {"world": {"nodes": 12, "packs": 100, "days": 10},
           "code": {"k": 2, "n": 4},
           "backups": {"packs_per_day": 60, "backup_every": "1d"}}
    summary, w = world.run(scenario.parse(doc), 5)
    # 10 daily backups of 5 packs per node each (60 a day over 12 nodes); the last one may
    # fall on the horizon.
    assert 100 + 540 <= summary["packs"] <= 100 + 600
    assert summary["backup_bytes"] == (summary["packs"] - 100) * 4 * w.share_size
    assert (w.live[: w.created] == 4).all()
    assert not (w.loc[: w.created] == w.owner[: w.created, None]).any()


def test_weibull_lives_have_the_configured_mean() -> None:
    doc = {"world": {"nodes": 10, "packs": 0, "days": 1}, "code": {"k": 1, "n": 2},
           "failures": {"model": "weibull", "node_mttf_days": 300, "shape": 0.7}}
    w = world.World(scenario.parse(doc), seed=1)
    lives = np.array([w._life() for _ in range(20000)])
    assert lives.mean() == pytest.approx(300, rel=0.05)
    # shape < 1: more early failures than an exponential of the same mean
    assert np.mean(lives < 30) > 1 - math.exp(-30 / 300)


def test_scenario_errors_name_the_table_and_key() -> None:
    good = {"world": {"nodes": 10, "packs": 1, "days": 1}, "code": {"k": 2, "n": 4}}
    with pytest.raises(ScenarioError, match=r"\[repair\] repair_at"):
        scenario.parse({**good, "repair": {"model": "exponential", "repair_at": 5, "mean_days": 1}})
    with pytest.raises(ScenarioError, match=r"\[churn\] model"):
        scenario.parse({**good, "churn": {"model": "poisson"}})
    with pytest.raises(ScenarioError, match=r"\[policy\] holder_lost_after"):
        scenario.parse({**good, "policy": {"holder_lost_after": "three days"}})
    with pytest.raises(ScenarioError, match=r"\[code\] n"):
        scenario.parse({"world": {"nodes": 4, "packs": 1, "days": 1}, "code": {"k": 2, "n": 4}})


def test_backups_need_the_real_policy() -> None:
    doc = {"world": {"nodes": 10, "packs": 1, "days": 1}, "code": {"k": 2, "n": 4},
           "repair": {"model": "none"}, "backups": {"packs_per_day": 5}}
    with pytest.raises(ScenarioError, match=r"\[backups\]"):
        scenario.parse(doc)


def test_a_churn_steps_switches_applied_in_one_pass_or_node_by_node_give_the_same_run() -> None:
    # World._switch_batch (one pass over all the switching nodes' packs) against
    # _switch_each: the same online counts, availability and series. With 1,000 nodes
    # holding 18 shares each and 5-minute steps, many steps switch a pack's shares on
    # two nodes at once (their deltas summed first).
    doc = {"world": {"nodes": 1000, "packs": 3000, "days": 3},
           "code": {"k": 3, "n": 6},
           "failures": {"model": "exponential", "node_mttf_days": 50},
           "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8,
                     "step": "5m"}}
    runs = []
    for batch in (True, False):
        w = world.World(scenario.parse(doc), seed=2)
        w.churn_batch = batch
        calls = {"batched": 0, "shared": 0}
        one = w._switch_batch

        def counted_batch(due: np.ndarray, up: np.ndarray, w=w, one=one, calls=calls) -> bool:
            p = np.concatenate([w.packs_of(x) for x in due.tolist()]) if len(due) else np.zeros(0)
            calls["shared"] += len(np.unique(p)) < len(p)
            done = one(due, up)
            calls["batched"] += done
            return done
        w._switch_batch = counted_batch  # type: ignore[method-assign]
        runs.append((w.run(), w.onl.copy(), w.series.rows, calls))
    (a, onl_a, rows_a, calls_a), (b, onl_b, rows_b, calls_b) = runs
    assert calls_a["batched"] > 500 and calls_a["shared"] > 50  # both kinds of steps ran
    assert calls_b["batched"] == 0
    assert a == b and rows_a == rows_b and (onl_a == onl_b).all()
