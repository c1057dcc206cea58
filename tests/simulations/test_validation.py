"""The simulator against exact results (issue 16, "Validation").

Each test runs a validation-model scenario over several seeds and checks that the exact
answer lies inside the Monte Carlo confidence interval of the replicate means (shares of
one pack sit on nodes that also hold other packs, so packs within one run are correlated:
the interval is built from independent runs, not from packs). The intervals are narrow
enough that a wrong simulator fails: each test also bounds the interval's half-width.
Seeds are fixed and printed on failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.linalg
from corestate.simulations import exact, scenario, world

# Two-sided 99.9% Student t quantiles by degrees of freedom (replicates - 1).
T999 = {3: 12.92, 4: 8.61, 5: 6.87, 7: 5.41, 9: 4.78, 11: 4.44}


def _replicates(doc: dict, seeds: list[int], key: str,
                check: Callable[[int, dict], None] | None = None) -> tuple[float, float, list[float]]:
    sc = scenario.parse(doc)
    vals = []
    for s in seeds:
        summary = world.run(sc, s)[0]
        if check is not None:
            check(s, summary)
        vals.append(float(summary[key]))
    a = np.array(vals)
    half = T999[len(seeds) - 1] * a.std(ddof=1) / math.sqrt(len(a))
    return float(a.mean()), float(half), vals


def test_matrix_exponential_matches_scipy() -> None:
    q = exact.generator(4, 8, 0.003, 0.5, 6)
    for t in (0.1, 30.0, 365.0, 5000.0):
        assert np.allclose(exact.expm(q * t), scipy.linalg.expm(q * t), atol=1e-12)


def test_birth_death_closed_form_matches_the_chain() -> None:
    lam, mu = 0.1, 1.0
    # n=3, k=2, repair at 2: 3 -> 2 -> lost, 2 -> 3 at mu: a birth-death chain.
    assert exact.mttdl_birth_death([3 * lam, 2 * lam], [0.0, mu]) == pytest.approx((5 * lam + mu) / (6 * lam**2))
    assert exact.mttdl(2, 3, lam, mu, 2) == pytest.approx((5 * lam + mu) / (6 * lam**2))


@pytest.mark.parametrize("repair", ["exponential", "none"])
def test_packs_lost_match_the_absorbing_markov_chain(repair: str) -> None:
    k, n, mttf, days = 2, 4, 100.0, 365.0
    doc: dict = {"world": {"nodes": 2000, "packs": 3000, "days": days},
                 "code": {"k": k, "n": n},
                 "failures": {"model": "exponential", "node_mttf_days": mttf}}
    if repair == "exponential":
        doc["repair"] = {"model": "exponential", "repair_at": 3, "mean_days": 4.0}
        p = exact.loss_probability(k, n, 1 / mttf, 1 / 4.0, 3, days)
    else:
        doc["repair"] = {"model": "none"}
        p = exact.loss_probability(k, n, 1 / mttf, 0.0, None, days)
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    mean, half, vals = _replicates(doc, seeds, "loss_fraction")
    assert abs(mean - p) <= half, f"seeds {seeds}: loss {vals} mean {mean:.4f} ± {half:.4f}, exact {p:.4f}"
    assert half < 0.25 * p, f"seeds {seeds}: interval ±{half:.4f} too wide to tell (exact {p:.4f})"


@pytest.mark.parametrize("step", ["0s", "1m"])
def test_availability_matches_the_binomial_formula(step: str) -> None:
    k, n, on, off = 4, 8, 16.0, 8.0
    doc = {"world": {"nodes": 1000, "packs": 2000, "days": 20},
           "code": {"k": k, "n": n},
           "repair": {"model": "none"},
           "churn": {"model": "exponential", "mean_online_hours": on, "mean_offline_hours": off, "step": step}}
    a = exact.availability(k, n, on / (on + off))
    seeds = [21, 22, 23, 24, 25, 26]
    mean, half, vals = _replicates(doc, seeds, "availability")
    assert abs(mean - a) <= half, f"seeds {seeds}: availability {vals} mean {mean:.5f} ± {half:.5f}, exact {a:.5f}"
    assert half < 0.01, f"seeds {seeds}: interval ±{half:.5f} too wide"


def test_mean_time_to_data_loss_matches_the_birth_death_closed_form() -> None:
    lam, mu = 0.1, 1.0  # a node lives 10 days, a repair takes a day
    expect = exact.mttdl_birth_death([3 * lam, 2 * lam], [0.0, mu])  # 25 days
    doc = {"world": {"nodes": 1000, "packs": 600, "days": 600},
           "code": {"k": 2, "n": 3},
           "failures": {"model": "exponential", "node_mttf_days": 1 / lam},
           "repair": {"model": "exponential", "repair_at": 2, "mean_days": 1 / mu}}
    seeds = [31, 32, 33, 34, 35, 36, 37, 38]

    def all_lost(seed: int, summary: dict) -> None:  # a horizon long enough: no censoring
        assert summary["packs_lost"] == summary["packs"], f"seed {seed}: {summary['packs_lost']} lost"

    mean, half, vals = _replicates(doc, seeds, "mean_time_to_loss_days", all_lost)
    assert abs(mean - expect) <= half, f"seeds {seeds}: MTTDL {vals} mean {mean:.2f} ± {half:.2f}, exact {expect:.2f}"
    assert half < 0.1 * expect
