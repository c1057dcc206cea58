"""The short fuzzing profile: every decoder, a few hundred inputs each, in the normal suite.

Each target gets its seeds (which must decode: a seed that fails would mean the target
tests nothing), then hypothesis-driven inputs: raw bytes, and the seeds mutated by the
same mutator the command uses (``engine.mutate``, its choices drawn through hypothesis so
a failure shrinks and replays). Every input runs under the engine's bounds: only the
allowed errors, bounded time, bounded Python allocations. Derandomized, so CI sees the
same inputs every run; the open-ended search is ``python -m tests.fuzz`` (README.md).

The command itself is tested end to end (marked slow): a clean target exits 0 with its
numbers, and a target with a planted bug is found, its input saved, the exit non-zero.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import engine, targets

# Inputs per target (the seeds come on top). Slow targets (a trio run, a file written and
# read, a TOML parse per input) get fewer; the whole profile stays near a minute on a
# quiet machine.
EXAMPLES = 250
FEWER = {"channel": 80, "control-handshake": 60, "config": 120, "targets-json": 120,
         "anomaly-state": 120, "pack-blob": 150, "pack-header": 150}

ROOT = Path(__file__).resolve().parents[2]


def _inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    mutated = st.builds(
        lambda seed, rnd, depth: _mutate_n(seed, rnd, seeds, depth),
        st.sampled_from(seeds), st.randoms(use_true_random=False), st.integers(1, 4))
    return st.one_of(st.binary(max_size=256), mutated, mutated, mutated)


def _mutate_n(seed: bytes, rnd: random.Random, seeds: list[bytes], depth: int) -> bytes:
    data = seed
    for _ in range(depth):
        data = engine.mutate(data, rnd, seeds)
    return data


@pytest.mark.fuzz
@pytest.mark.parametrize("name", targets.names())
def test_the_decoder_keeps_its_contract(name: str) -> None:
    target = targets.TARGETS[name]
    seeds = target.seeds()
    assert seeds
    for s in seeds:
        target.strict(s)  # every seed decodes: the mutations start from real structure

    @settings(max_examples=FEWER.get(name, EXAMPLES), deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    @given(_inputs(seeds))
    def check(data: bytes) -> None:
        engine.run_one(target, data)

    check()


def test_the_bounds_catch_what_they_are_for() -> None:
    """The engine's checks are not vacuous: an escaping error, an allocation driven by a
    length field and a hang are each reported as a crash of their kind."""
    def raise_key(data: bytes) -> None:
        raise KeyError("x")

    def allocate(data: bytes) -> None:
        _ = bytes(int.from_bytes(data[:4], "little"))

    def spin(data: bytes) -> None:
        while True:
            pass

    cases = [(raise_key, "exception", {}), (allocate, "memory", {}),
             (spin, "timeout", {"time_limit": 0.3})]
    for fn, kind, kw in cases:
        t = targets.Target(f"planted-{kind}", fn, lambda: [b""], lambda: (ValueError,), fn)
        with pytest.raises(engine.Crash) as info:
            engine.run_one(t, b"\x00\x00\x00\x08", **kw)  # 128 MiB asked for by 4 bytes
        assert info.value.kind == kind
    quiet = targets.Target("quiet", lambda d: None, lambda: [b""], targets._none, lambda d: None)
    assert engine.run_one(quiet, bytes(1000)) >= 0


def _command(tmp_path: Path, *args: str, selftest: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if selftest:
        env["CORESTATE_FUZZ_SELFTEST"] = "1"
    return subprocess.run([sys.executable, "-m", "tests.fuzz", "--crash-dir", str(tmp_path / "crashes"),
                           "--json", str(tmp_path / "fuzz.json"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_command_runs_each_target_for_its_budget_and_reports(tmp_path: Path) -> None:
    p = _command(tmp_path, "--engine", "random", "--seconds-each", "1", "--seed", "7",
                 "--targets", "frames,tree")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads((tmp_path / "fuzz.json").read_text())
    assert report["crashes"] == 0
    assert [t["target"] for t in report["targets"]] == ["frames", "tree"]
    assert all(t["inputs"] > 50 and t["seconds"] >= 1 for t in report["targets"])
    assert "frames" in p.stdout and "0 crashes" in p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["random", "atheris"])
def test_a_crash_is_saved_and_fails_the_command(tmp_path: Path, engine_name: str) -> None:
    if engine_name == "atheris":
        pytest.importorskip("atheris", reason="atheris is the fuzz extra: pip install -e '.[fuzz]'")
    p = _command(tmp_path, "--engine", engine_name, "--seconds-each", "20", "--seed", "1",
                 "--targets", "selftest", selftest=True)
    assert p.returncode == 1, p.stdout + p.stderr
    saved = sorted((tmp_path / "crashes").iterdir())
    assert saved and saved[0].name.startswith("selftest-")
    data = saved[0].read_bytes()
    assert data[0] == 0x2A and data[1] >= len(data) - 1  # the planted bug, nothing else
    assert "IndexError" in p.stdout
    # And the saved input replays as a crash.
    r = subprocess.run([sys.executable, "-m", "tests.fuzz", "--replay", str(saved[0])], cwd=ROOT,
                       env=dict(os.environ, CORESTATE_FUZZ_SELFTEST="1"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "still crashes" in r.stdout, r.stdout + r.stderr
