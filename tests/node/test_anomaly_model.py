"""The shipped global model (node/core/anomaly/weights.json) on the synthetic corpus of
simulations/anomaly: it loads, it alerts on each attack family by its score alone (the
streaming check left out), and it lets the benign hard cases and ordinary churn pass; the
one command runs end to end in its quick mode."""

from __future__ import annotations

import random

import pytest
from corestate.node.core import anomaly as an
from corestate.simulations.anomaly import corpus as C
from corestate.simulations.anomaly import evaluate as E


@pytest.fixture(scope="module")
def node() -> tuple[C.Tree, an.Baseline]:
    """A node of ~600 files after 14 ordinary hours (a cold-ish baseline)."""
    tree = C.make_tree(2026, 600)
    rng = random.Random(2026)
    base = an.Baseline()
    for h in range(14):
        r = C.Recorder(tree)
        C.ordinary_hour(r, rng, 8 + h, 2)
        base.learn(E.make_step(r.done(), base, 8 + h, 2)[1])
    return tree, base


def _judge(tree: C.Tree, base: an.Baseline, family: str, seed: int) -> an.Verdict:
    rng = random.Random(seed)
    r = C.Recorder(tree.fork(seed))
    C.ordinary_hour(r, rng, 15, 2)
    (C.ATTACKS.get(family) or C.BENIGN_HARD[family])(r, rng)
    snap = r.done()
    acc = an.Accumulator(snap.files_before, snap.known_exts)
    for o in snap.obs:
        acc.add(o)
    return an.judge(acc.features(hour=15, weekday=2), base, top=acc.top_files())


def test_the_shipped_weights_load() -> None:
    m = an.load_default()
    assert m is not None and m.version.startswith("corpus-")
    assert len(m.weights) == len(an.INPUT_NAMES)


@pytest.mark.parametrize("family", list(C.ATTACKS))
def test_the_shipped_model_alerts_on_each_attack(node: tuple[C.Tree, an.Baseline],
                                                 family: str) -> None:
    v = _judge(*node, family, seed=7)
    assert v.verdict == "alert" and v.score >= an.ALERT, (family, v.score, v.reasons)
    assert v.reasons and v.details["files"]


@pytest.mark.parametrize("family", list(C.BENIGN_HARD))
def test_the_shipped_model_passes_benign_hard_cases(node: tuple[C.Tree, an.Baseline],
                                                    family: str) -> None:
    v = _judge(*node, family, seed=8)
    assert v.verdict != "alert", (family, v.score, v.reasons)
    assert v.score < an.ALERT


def test_the_shipped_model_passes_a_day_of_ordinary_churn(node: tuple[C.Tree, an.Baseline]
                                                           ) -> None:
    tree, base = node
    tree = tree.fork(9)
    base = an.Baseline.from_bytes(base.to_bytes())
    rng = random.Random(9)
    for h in range(24):
        r = C.Recorder(tree)
        C.ordinary_hour(r, rng, h, 4)
        snap = r.done()
        acc = an.Accumulator(snap.files_before, snap.known_exts)
        check = an.StreamCheck(base)
        for o in snap.obs:
            assert not check.feed(acc.add(o))
        f = acc.features(hour=h, weekday=4)
        v = an.judge(f, base)
        assert v.verdict == "ok", (h, v)
        base.learn(f)


def test_the_one_command_runs_in_quick_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from corestate.simulations.anomaly.__main__ import main
    assert main(["--quick", "--long-hours", "48"]) == 0
    out = capsys.readouterr().out
    for fam in (*E.FAMILIES_ATTACK, *E.FAMILIES_BENIGN):
        assert f"| {fam} | cold (12) |" in out and f"| {fam} | warm |" in out
    assert "median affected files before the alert" in out
    assert "Long benign run: 48 hourly snapshots" in out
