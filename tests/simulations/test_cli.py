"""``corestate sim run`` and ``sim sweep`` as a user runs them: a real process, real files,
and for the sweep a real local Dask cluster of worker processes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"


def corestate(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corestate.node.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_sim_run_writes_summary_series_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sc = tmp_path / "small.toml"
    sc.write_text((SCENARIOS / "group10.toml").read_text().replace("packs = 16000", "packs = 800")
                  .replace("days = 365", "days = 40"))
    out = tmp_path / "out"
    r = corestate("sim", "run", str(sc), "--seed", "5", "--out", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("packs", "packs_lost", "availability", "repair_bytes", "seed"):
        assert key in summary
    assert summary["seed"] == 5 and summary["packs"] == 800 and "seed 5" in r.stderr
    assert 0.5 < summary["availability"] < 1.0  # 3-of-6, nodes online 2/3 of the time: ~0.9
    assert json.loads((out / "summary.json").read_text())["availability"] == summary["availability"]
    rows = list(csv.DictReader((out / "series.csv").read_text().splitlines()))
    assert len(rows) == 41 and float(rows[-1]["day"]) == 40.0
    for png in ("availability", "repair_traffic", "packs_lost", "time_to_repair"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = corestate("sim", "run", str(sc), "--seed", "5", "--out", str(tmp_path / "o2"), "--json",
                      "--no-plots", cwd=tmp_path)
    s2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in s2.items() if "wall" not in k and "per_second" not in k} == \
           {k: v for k, v in summary.items() if "wall" not in k and "per_second" not in k}


def test_sim_run_refuses_a_typo_with_the_table_and_key(tmp_path: Path) -> None:
    sc = tmp_path / "bad.toml"
    sc.write_text("[world]\nnodes = 10\npacks = 10\ndays = 1\n[code]\nk = 2\nn = 4\n[failures]\nnode_mtf_days = 3\n")
    r = corestate("sim", "run", str(sc), cwd=tmp_path)
    assert r.returncode == 1
    assert "[failures] node_mtf_days: unknown key" in r.stderr


@pytest.mark.slow
def test_sim_sweep_runs_on_a_local_dask_cluster_of_worker_processes(tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    pytest.importorskip("matplotlib")
    (tmp_path / "base.toml").write_text((SCENARIOS / "validation-availability.toml").read_text()
                                        .replace("nodes = 1000", "nodes = 200").replace("days = 20", "days = 5"))
    (tmp_path / "grid.toml").write_text(
        '[sweep]\nscenario = "base.toml"\nseeds = 3\n[grid]\n"code.k" = [2, 6]\n')
    r = corestate("sim", "sweep", str(tmp_path / "grid.toml"), "--workers", "2", "--out", str(tmp_path / "sw"),
                  "--json", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "local cluster of 2 worker processes" in r.stderr
    table = json.loads(r.stdout.strip().splitlines()[-1])["points"]
    assert [p["code.k"] for p in table] == [2, 6] and all(p["runs"] == 3 for p in table)
    # 2-of-8 is far more available than 6-of-8 with nodes online two thirds of the time.
    assert table[0]["availability"] > 0.99 > 0.5 > table[1]["availability"] > 0.3
    assert all(p["availability_ci95"] > 0 for p in table)
    rows = list(csv.DictReader((tmp_path / "sw" / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 2 and (tmp_path / "sw" / "sweep_availability.png").exists()
