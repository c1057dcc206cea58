"""``corestate sim run`` and ``corestate sim sweep``: the simulator (simulations/).

The simulator needs no node, no home and no daemon: it runs here, in this process (a sweep
in the processes of a Dask cluster), so these commands call ``corestate.simulations``
directly instead of sending a typed call through ``invoke``. Text by default; with
``--json`` the last line on stdout is the summary (run) or the table (sweep).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from corestate.node.cli.output import EXIT_OK, Out, progress_bar


def _seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")


def cmd_sim_run(args: argparse.Namespace, out: Out) -> int:
    from corestate.simulations import output, scenario, world
    sc = scenario.load(args.scenario)
    seed = _seed(args)
    out.error(f"seed {seed}")  # on stderr: rerun with --seed to repeat this run exactly
    t0 = time.perf_counter()
    w = world.World(sc, seed)
    if out.tty:
        with progress_bar() as update:
            w.progress = lambda f: update("simulating", int(f * 1000), 1000, f"day {f * sc.world.days:.0f}")
            summary = w.run()
    else:
        summary = w.run()
    wall = time.perf_counter() - t0
    summary["wall_seconds"] = round(wall, 3)
    summary["events_per_second"] = round(summary["events"] / wall) if wall > 0 else None
    outdir = Path(args.out) if args.out else Path(f"sim-{sc.name}-{seed}")
    paths = output.write_run(w, summary, outdir, plots=not args.no_plots)
    if out.json:
        out.obj(summary)
        return EXIT_OK
    out.say(f"{sc.name}: {summary['packs']} packs on {summary['nodes']} nodes, {sc.world.days:g} days, "
            f"k={summary['k']} n={summary['n']}, {summary['policy']} policy, seed {seed}")
    out.say(f"  packs lost     {summary['packs_lost']} ({summary['loss_fraction']:.3g})")
    out.say(f"  availability   {summary['availability']:.6f}")
    out.say(f"  repair traffic {summary['repair_bytes'] / 2**30:.1f} GiB "
            f"({summary['repair_bytes_per_node_day'] / 2**20:.1f} MiB per node per day)")
    ttr = summary["mean_time_to_repair_days"]
    if ttr is not None:
        out.say(f"  time to repair {ttr * 24:.1f} h on average")
    out.say(f"  {summary['events']} events in {wall:.1f} s ({summary['events_per_second']} per second)")
    out.say("  wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


def cmd_sim_sweep(args: argparse.Namespace, out: Out) -> int:
    from corestate.simulations import sweep
    grid = sweep.load_grid(args.grid)
    points = grid.points()
    out.error(f"{len(points)} points x {grid.seeds} seeds (seeds {grid.first_seed}.."
              f"{grid.first_seed + grid.seeds - 1}) on "
              + (args.address or f"a local cluster of {args.workers or os.cpu_count()} worker processes"))
    client = sweep.client(args.address, args.workers)
    try:
        if out.tty:
            with progress_bar() as update:
                rows = sweep.run_grid(grid, client, progress=lambda d, t: update("runs", d, t, ""))
        else:
            rows = sweep.run_grid(grid, client)
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and not args.address:
            cluster.close()
    outdir = Path(args.out) if args.out else Path(f"sweep-{grid.name}")
    paths = sweep.write_table(rows, outdir, plots=not args.no_plots)
    if out.json:
        out.obj({"points": rows, "files": [str(p) for p in paths]})
        return EXIT_OK
    keys = list(grid.axes)
    out.say("  ".join(f"{k:>24}" for k in keys) + f"  {'loss (95% CI)':>24}  {'availability':>22}  "
            f"{'repair MiB/node/day':>20}")
    for r in rows:
        out.say("  ".join(f"{r[k]!s:>24}" for k in keys)
                + f"  {r['loss_fraction']:>12.3g} ± {r['loss_fraction_ci95']:<9.2g}"
                + f"  {r['availability']:>10.6f} ± {r['availability_ci95']:<9.2g}"
                + f"  {r['repair_bytes_per_node_day'] / 2**20:>20.1f}")
    out.say("wrote " + ", ".join(str(p) for p in paths))
    sys.stdout.flush()
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``sim`` command group (one block in parser.py calls this)."""
    simp = sub.add_parser(
        "sim", help="the simulator: durability, availability and repair traffic of a group, "
                    "with the node's own policy code",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Simulate a world of nodes (churn, disk losses, sites) holding erasure-coded packs, "
                    "with the validation models or the node's real repair policy.",
        epilog="""\
examples:
  corestate sim run simulations/scenarios/validation-markov.toml --seed 7
                                 one run; writes summary.json, series.csv and plots to sim-<name>-<seed>/
  corestate sim run group10.toml --out /tmp/g10 --json
                                 the summary on the last line of stdout
  corestate sim sweep simulations/scenarios/group10-sweep.toml
                                 a grid with repetitions and 95% confidence intervals, on every local core
  corestate sim sweep grid.toml --address tcp://10.0.0.5:8786
                                 the same on a Dask cluster (workers need corestate installed)

Scenario keys: simulations/README.md. Plots and sweeps need the extra: pip install 'corestate[sim]'.""")
    ssub = simp.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    r = ssub.add_parser("run", help="run one scenario", description="run one scenario (a TOML file)")
    r.add_argument("scenario", type=Path, help="the scenario file (TOML)")
    r.add_argument("--seed", type=int, help="the random seed (default: a fresh one, printed on stderr)")
    r.add_argument("--out", type=Path, help="the output folder (default: sim-<name>-<seed>)")
    r.add_argument("--no-plots", action="store_true", help="write no PNGs (no matplotlib needed)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    r.set_defaults(fn=cmd_sim_run)
    s = ssub.add_parser("sweep", help="run a parameter grid with repetitions",
                        description="run a parameter grid (TOML: [sweep] scenario, seeds; [grid] values)")
    s.add_argument("grid", type=Path, help="the grid file (TOML)")
    s.add_argument("--address", help="a Dask scheduler's address (default: a local cluster)")
    s.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    s.add_argument("--out", type=Path, help="the output folder (default: sweep-<name>)")
    s.add_argument("--no-plots", action="store_true", help="write no PNGs")
    s.add_argument("--json", action="store_true", help="print the table as JSON on the last line")
    s.set_defaults(fn=cmd_sim_sweep)
