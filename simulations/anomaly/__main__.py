"""Generate the corpus, evaluate leave-one-family-out, train the shipped model, run the long
benign run, and print the report. One command (issue 14)::

    .venv/bin/python -m corestate.simulations.anomaly [--quick] [--write]

``--write`` stores the trained weights in ``node/core/anomaly/weights.json`` (the file the
package ships). ``--quick`` is a small run for a smoke test (minutes become seconds; its
numbers are not the evaluation). Progress goes to stderr, the report (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from corestate.node.core import anomaly as an

from . import evaluate as E
from .train import fit

WEIGHTS = Path(an.__file__).resolve().parent / "weights.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m corestate.simulations.anomaly",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=8, help="simulated nodes (default 8)")
    ap.add_argument("--hours", type=int, default=120,
                    help="benign hours of each node's history before the warm cases")
    ap.add_argument("--reps", type=int, default=4, help="cases per family and checkpoint")
    ap.add_argument("--long-hours", type=int, default=None,
                    help="hours of the long benign run (default: three years, 26,280; "
                    "0 skips it)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="a small run (smoke test)")
    ap.add_argument("--write", action="store_true", help=f"write the weights to {WEIGHTS}")
    a = ap.parse_args(argv)
    if a.quick:
        a.nodes, a.hours, a.reps = 2, 24, 1
    if a.long_hours is None:
        a.long_hours = 200 if a.quick else 26_280
    log = E._stderr
    t0 = time.monotonic()
    cases = E.generate(nodes=a.nodes, hours=a.hours, reps=a.reps, seed=a.seed, log=log)
    log(f"corpus: {len(cases)} cases, {time.monotonic() - t0:.0f}s")
    rows = E.leave_one_family_out(cases, l2=a.l2, log=log)
    x, y = E.dataset(cases)
    model = fit(x, y, l2=a.l2, version=f"corpus-seed{a.seed}-n{a.nodes}-h{a.hours}-r{a.reps}")
    if a.write:
        WEIGHTS.write_text(model.to_json() + "\n")
        log(f"wrote {WEIGHTS}")
    print("# Anomaly model: evaluation on the synthetic corpus\n")
    print(f"seed {a.seed}; {a.nodes} nodes; {a.hours} benign hours each; {a.reps} cases per "
          f"family, at a cold start ({E.COLD} snapshots of history) and warm; "
          f"{int(y.sum())} attack and {int(len(y) - y.sum())} benign snapshots.\n")
    print("## Leave-one-family-out (each family judged by a model trained without it)\n")
    print(E.table(rows))
    print()
    for line in E.targets(rows):
        print(f"- {line}")
    print("\n## Shipped model (trained on everything)\n")
    for name, w in sorted(zip(an.INPUT_NAMES, model.weights, strict=True),
                          key=lambda p: -abs(p[1])):
        print(f"- {name}: {w:+.3f}")
    if a.long_hours:
        run = E.long_benign_run(model, hours=a.long_hours, seed=a.seed + 1_000_003, log=log)
        print(f"\n## Long benign run: {run.hours} hourly snapshots of one node\n")
        print(f"- verdicts: {run.tiers} (target: no alert): "
              f"{'PASS' if not run.tiers['alert'] else 'FAIL'}")
        print(f"- hard cases on the schedule: {run.hard}")
        for line in run.alerts[:20]:
            print(f"- ALERT {line}")
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
