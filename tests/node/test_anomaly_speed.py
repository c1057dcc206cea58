"""The model's speed-ups change no number: the partition median equals ``np.median`` to the
bit, the baseline's cached statistics equal the formulas computed afresh (and follow a
``learn``), and judging a snapshot does not import ``numpy.ma`` (its ~50 ms a CLI would pay
on every backup)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from corestate.node.core import anomaly as an
from corestate.node.core.anomaly import model as M
from corestate.node.core.anomaly.baseline import median, percentile


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 11, 12, 13, 100, 1999, 2000])
def test_median_equals_numpy_to_the_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        for raw in (rng.normal(0, 1e3, n), rng.integers(0, 4, n), rng.exponential(0.01, n)):
            a: Any = raw.astype(dtype)
            assert median(a) == float(np.median(a)), (dtype, a[:10])


def test_median_of_nan_and_empty() -> None:
    a = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    assert np.isnan(median(a)) and np.isnan(float(np.median(a)))
    assert np.isnan(median(np.zeros(0, dtype=np.float32)))


def _reference(col: np.ndarray) -> tuple[float, float, float]:
    med = float(np.median(col))
    return med, float(np.median(np.abs(col - med))), float(np.percentile(col, 99))


def _features(rng: np.random.Generator) -> an.Features:
    return an.Features(**{name: float(rng.integers(0, 6)) if rng.random() < 0.7 else float(rng.exponential(40))
                          for name in an.FEATURE_NAMES})


@pytest.mark.parametrize("rows", [1, 3, 11, 12, 40, 2001])
def test_cached_statistics_equal_the_formulas(rows: int) -> None:
    rng = np.random.default_rng(rows)
    b = an.Baseline()
    for _ in range(rows):
        b.learn(_features(rng))
    probe = _features(rng)
    for _round in range(2):  # the second round reads the cache, after one more learn
        for name in an.FEATURE_NAMES:
            col = b.column(name)
            med, mad, p99 = _reference(col)
            assert b.centre(name) == med
            assert b.usual_high(name) == p99
            spread_ref = 1.4826 * float(np.median(np.abs(col - np.median(col))))
            prior = an.baseline.PRIOR_SPREAD.get(name, an.baseline.MIN_SPREAD)
            floor = an.baseline.MIN_SPREAD if name not in an.baseline.PRIOR_SPREAD else prior / 10
            if col.size < an.baseline.WARM:
                w = col.size / an.baseline.WARM
                spread_ref = max(floor, w * spread_ref + (1 - w) * prior)
            else:
                spread_ref = max(floor, spread_ref)
            assert b.spread(name) == spread_ref
            x = float(getattr(probe, name))
            assert M.excess(probe, b, name) == max(0.0, x - med - 2.0 * mad)
        col = b.column("suspicious")
        med, mad, _ = _reference(col)
        want = float(np.clip(col[-M.RECENT:] - med - 2.0 * mad, 0.0, None).sum()) if b.count > M.RECENT else 0.0
        assert M.history_excess(b) == want
        b.learn(_features(rng))  # the cache must follow the new ring


def test_the_cache_follows_a_replaced_ring() -> None:
    b = an.Baseline()
    for v in (1.0, 2.0, 3.0):
        b.learn(an.Features(suspicious=v))
    assert b.centre("suspicious") == 2.0
    b.ring = b.ring[:1]
    assert b.centre("suspicious") == 1.0
    again = an.Baseline.from_bytes(b.to_bytes())
    assert again.centre("suspicious") == 1.0 and np.array_equal(again.ring, b.ring)


def test_judging_does_not_import_numpy_ma() -> None:
    code = textwrap.dedent("""
        import sys
        from corestate.node.core import anomaly as an
        b = an.Baseline()
        for i in range(30):
            b.learn(an.Features(suspicious=float(i % 3), changed=10.0 + i))
        f = an.Features(suspicious=40.0, changed=50.0)
        an.judge(f, b)
        an.judge(f, b, use_shipped=False)
        an.StreamCheck(b).allowance
        print("numpy.ma" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12, 100, 101, 1999, 2000])
def test_percentile_equals_numpy_to_the_bit(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    for dtype in (np.float32, np.float64):
        for raw in (rng.normal(0, 1e3, n), rng.integers(0, 4, n), rng.exponential(0.01, n)):
            a: Any = raw.astype(dtype)
            for q in (99, 50, 90, 0, 100):
                assert percentile(a, q) == float(np.percentile(a, q)), (dtype, q, a[:10])
    assert np.isnan(percentile(np.array([1.0, np.nan, 3.0], dtype=np.float32), 99))


def _full_state() -> Any:
    from corestate.node import anomalystate as st
    s = st.AnomalyState()
    feat = {name: 1.5 for name in an.FEATURE_NAMES}
    for i in range(st.MAX_OK + 300):
        verdict = "alert" if i % 97 == 0 else "suspect" if i % 13 == 0 else "ok"
        s.add(st.Finding(
            snapshot=f"{i:064x}", time_ns=i, series=["/home/a", "/srv/b"], verdict=verdict, score=0.01 * (i % 100),
            reasons=[f"{i} files look encrypted"], files=[f"/home/a/f{i}"], protects=f"{i - 1:064x}" if i else None,
            silent=["/home/a/rot"] if i % 50 == 0 else [], silent_digests={"/home/a/rot": "ab" * 16} if i % 50 == 0 else {},
            details={"reasons": [{"code": "churn", "text": "x", "value": 1.0, "usual": None, "spread": 0.5}],
                     "features": feat, "baseline": {"snapshots": 100, "warm": True}, "model": "v1",
                     "contributions": [("suspicious_share", 0.25)] * 5, "files": []},
            features=feat))
    s.series["k"] = {"baseline": "QUJD" * 80_000, "exts": ["txt", "docx"]}
    return s


def test_the_state_file_is_the_same_json_through_a_save_and_a_load(tmp_path: Any) -> None:
    """A full state (MAX_OK ok findings and more): the shallow ``to_json`` writes what
    ``dataclasses.asdict`` wrote, and it survives a save and a load (its cost, ~50 ms of every
    backup with asdict, ~13 ms now, is bench_anomaly.py's to measure, not a test's)."""
    import dataclasses
    import json

    from corestate.node import anomalystate as st
    s = _full_state()
    s.compact()
    old = {"format": st.FORMAT, "series": s.series, "findings": [dataclasses.asdict(f) for f in s.findings]}
    assert json.dumps(s.to_json(), sort_keys=True) == json.dumps(old, sort_keys=True)
    st.save(tmp_path, s)
    loaded, problem = st.load(tmp_path)
    assert problem is None and len(loaded.findings) == len(s.findings)
    assert json.dumps(loaded.to_json(), sort_keys=True) == json.dumps(old, sort_keys=True)


def test_the_inlined_split_is_posixpath_split() -> None:
    import posixpath

    from corestate.node.core.anomaly.observe import _split
    for p in ("", "/", "//", "a", "/a", "a/b", "/a/b/c.txt", "//a//b", "a/b/", "/x/y/.hidden", "///a", "a//"):
        assert _split(p) == posixpath.split(p), p
