"""The simulator's scale benchmark (issue 16): wall time, events per second and peak memory
of the scale scenario and of a tenth of its packs, each run in its own process.

    python tests/bench/bench_sim.py                 # the tenth and the full scenario
    python tests/bench/bench_sim.py --only tenth    # a quick look
    python tests/bench/bench_sim.py --json bench_sim.json

Targets: full (10,000 nodes, 1,000,000 packs, 365 days) <= 10 min, tenth <= 2 min, each
<= 4 GiB. Run on a quiet machine: the targets are wall-clock. CPU seconds (and events per
CPU second) are printed too: on a loaded machine they are what a quiet core would take.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"
RUNS = {"tenth": ("scale-tenth.toml", 120.0), "full": ("scale.toml", 600.0)}


def run(name: str, seed: int) -> dict:
    file, budget = RUNS[name]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, "-m", "corestate.node.cli", "sim", "run", str(SCENARIOS / file),
                            "--seed", str(seed), "--out", out, "--no-plots", "--json"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name}: {r.stderr}")
    s = json.loads(r.stdout.strip().splitlines()[-1])
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)  # wall on a quiet machine
    rss = c1.ru_maxrss / 2**20  # KiB -> GiB
    return {"run": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "budget_s": budget, "events": s["events"],
            "events_per_s": s["events_per_second"], "events_per_cpu_s": round(s["events"] / max(cpu, 1e-9)),
            "peak_rss_gib": round(rss, 2),
            "packs": s["packs"], "packs_lost": s["packs_lost"], "availability": round(s["availability"], 6),
            "repair_mib_per_node_day": round(s["repair_bytes_per_node_day"] / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(RUNS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [run(n, args.seed) for n in RUNS if args.only in (None, n)]
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
