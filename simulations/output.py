"""What a run leaves in its output folder: ``summary.json``, ``series.csv``, and plots.

Plots (PNG, matplotlib, from the ``sim`` extra; imported only here and only when asked):
availability over time, repair traffic per node per day, cumulative packs lost, and the
distribution of times to repair (from a pack's first lost share to full again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from corestate.simulations.errors import ExtraMissing
from corestate.simulations.world import World, write_series


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, or :class:`ExtraMissing`."""
    try:
        import matplotlib
    except ImportError:
        raise ExtraMissing("matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_run(world: World, summary: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """Write the summary, the series and (``plots``) the PNGs; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.json", out / "series.csv"]
    paths[0].write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_series(world, paths[1])
    if plots:
        paths += plot_run(world, out)
    return paths


def plot_run(world: World, out: Path) -> list[Path]:
    plt = pyplot()
    rows = world.series.rows
    day = np.array([r["day"] for r in rows])
    title = f"{world.sc.name} (k={world.k}, n={world.n}, seed {world.seed})"
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(day, [r["available"] for r in rows])
    ax.set(xlabel="day", ylabel="fraction of packs available", title=f"Availability: {title}")
    save(fig, "availability.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    rb = np.array([r["repair_bytes"] for r in rows])
    if len(day) > 1:
        per = np.diff(rb) / np.maximum(np.diff(day), 1e-12) / world.N
        ax.step(day[1:], per / 2**20, where="pre")
    ax.set(xlabel="day", ylabel="MiB per node per day", title=f"Repair traffic: {title}")
    save(fig, "repair_traffic.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(day, [r["packs_lost"] for r in rows])
    ax.set(xlabel="day", ylabel="packs lost (cumulative)", title=f"Packs lost: {title}")
    save(fig, "packs_lost.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    if world.repair_times:
        ax.hist(np.array(world.repair_times) * 24, bins=50)
    ax.set(xlabel="hours from the first lost share to full redundancy", ylabel="repairs",
           title=f"Time to repair: {title}")
    save(fig, "time_to_repair.png")
    return written


__all__ = ["plot_run", "pyplot", "write_run"]
