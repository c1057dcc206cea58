"""Parameter sweeps: a grid of scenarios, each run with several seeds, on a Dask cluster.

A grid file names a base scenario and the values to vary::

    [sweep]
    scenario = "group10.toml"   # relative to the grid file
    seeds = 5                   # repetitions per point
    first_seed = 1
    [grid]
    "code.k" = [2, 3, 4]
    "policy.holder_lost_after" = ["1d", "3d", "7d"]
    "repair" = [false]           # a table name with false removes that table

Every combination of the grid values is a point; each point runs ``seeds`` times (seeds
``first_seed``, ``first_seed + 1``, ...: the same seeds at every point, so differences
between points are not seed noise). The table gives, per point and metric, the mean and the
half-width of its 95% confidence interval (Student t over the repetitions).

Where it runs: ``dask.distributed`` (the ``sim`` extra) — a local cluster of worker
processes, one per core, by default; the scheduler at ``address`` when one is given (a
researcher's cluster). Each task is one (point, seed) run and returns only its summary, so
nothing large crosses the wire; workers import ``corestate`` themselves.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from corestate.simulations import scenario as scen
from corestate.simulations.errors import ExtraMissing, ScenarioError

METRICS = ("packs_lost", "loss_fraction", "availability", "repair_bytes_per_node_day",
           "mean_time_to_repair_days")

# Two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    best = max(d for d in _T95 if d <= df) if df <= 30 else None
    return _T95[best] if best is not None else 1.96


@dataclass(frozen=True)
class Grid:
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    seeds: int
    first_seed: int
    name: str

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.axes)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.axes.values())]


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), f"not TOML: {exc}") from None
    sw = doc.get("sweep", {})
    if "scenario" not in sw:
        raise ScenarioError("[sweep] scenario", "missing: the base scenario file")
    base_path = path.parent / sw["scenario"]
    try:
        base = tomllib.loads(base_path.read_text())
    except OSError as exc:
        raise ScenarioError("[sweep] scenario", f"{base_path}: {exc.strerror}") from None
    axes = doc.get("grid", {})
    if not axes or not all(isinstance(v, list) and v for v in axes.values()):
        raise ScenarioError("[grid]", 'each key lists its values, e.g. "code.k" = [2, 4]')
    grid = Grid(base, dict(axes), int(sw.get("seeds", 5)), int(sw.get("first_seed", 1)), path.stem)
    for point in grid.points():  # refuse a bad point now, not on a worker an hour later
        scen.parse(scen.with_values(grid.base, point))
    return grid


def run_point(doc: dict[str, Any], seed: int) -> dict[str, Any]:
    """One run, on a worker: the summary only."""
    from corestate.simulations.world import run
    return run(scen.parse(doc), seed)[0]


def client(address: str | None, workers: int | None) -> Any:
    """A Dask client: to ``address``, or to a new local cluster of worker processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ExtraMissing("dask[distributed]") from None
    if address:
        return Client(address)
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster)


def run_grid(grid: Grid, dask_client: Any, *, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every point's rows: the point's values, then per metric its mean and CI."""
    from dask.distributed import as_completed
    points = grid.points()
    futures = {}
    for pi, point in enumerate(points):
        doc = scen.with_values(grid.base, point)
        for r in range(grid.seeds):
            f = dask_client.submit(run_point, doc, grid.first_seed + r, pure=False)
            futures[f] = pi
    results: list[list[dict[str, Any]]] = [[] for _ in points]
    for done, f in enumerate(as_completed(list(futures)), 1):
        results[futures[f]].append(f.result())
        if progress is not None:
            progress(done, len(futures))
    rows = []
    for point, runs in zip(points, results, strict=True):
        row: dict[str, Any] = {k: (json.dumps(v) if isinstance(v, bool) else v) for k, v in point.items()}
        row["runs"] = len(runs)
        for m in METRICS:
            vals = np.array([r[m] for r in runs if r.get(m) is not None], dtype=float)
            row[m] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_ci95"] = (t95(len(vals) - 1) * float(vals.std(ddof=1)) / math.sqrt(len(vals))
                                if len(vals) > 1 else math.nan)
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], out: Path, *, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "sweep.csv"
    with open(table, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    paths = [table, out / "sweep.json"]
    if plots:
        paths += _plot(rows, out)
    return paths


def _plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from corestate.simulations.output import pyplot
    plt = pyplot()
    labels = [", ".join(f"{k}={v}" for k, v in r.items() if k not in _derived()) for r in rows]
    written = []
    for metric in ("loss_fraction", "availability", "repair_bytes_per_node_day"):
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
        y = np.arange(len(rows))
        ax.errorbar([r[metric] for r in rows], y, xerr=[r[f"{metric}_ci95"] for r in rows], fmt="o")
        ax.set_yticks(y, labels, fontsize=8)
        ax.set(xlabel=f"{metric} (mean, 95% CI)")
        fig.tight_layout()
        path = out / f"sweep_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _derived() -> set[str]:
    return {"runs", *METRICS, *(f"{m}_ci95" for m in METRICS)}


__all__ = ["Grid", "client", "load_grid", "run_grid", "run_point", "t95", "write_table"]
