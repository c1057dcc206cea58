"""The numbers and plots of simulations/VALIDATION.md, regenerated (seeded).

    python tests/bench/sim_validation.py --out simulations/validation

Prints markdown tables; writes PNGs to --out. Small worlds: a few minutes on one core.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from corestate.simulations import exact, output, scenario, world

T95 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 7: 2.365, 9: 2.262}


def ci(vals: list[float]) -> tuple[float, float]:
    a = np.array(vals, dtype=float)
    return float(a.mean()), T95[len(a) - 1] * float(a.std(ddof=1)) / math.sqrt(len(a))


def markov(out: Path) -> None:
    plt = output.pyplot()
    print("\n### Packs lost over a year vs the absorbing Markov chain\n")
    print("| repair | k | n | MTTF d | repair_at | mean repair d | exact P(loss) | simulated (8 seeds, 95% CI) |")
    print("|---|---|---|---|---|---|---|---|")
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rep, mu in (("exponential", {"model": "exponential", "repair_at": 3, "mean_days": 4.0}, 0.25),
                           ("none", {"model": "none"}, 0.0)):
        doc = {"world": {"nodes": 2000, "packs": 3000, "days": 365, "sample_every": "5d"},
               "code": {"k": 2, "n": 4}, "failures": {"model": "exponential", "node_mttf_days": 100.0},
               "repair": rep}
        fr, curves = [], []
        for s in range(11, 19):
            summary, w = world.run(scenario.parse(doc), s)
            fr.append(summary["loss_fraction"])
            curves.append([r["packs_lost"] / r["packs"] for r in w.series.rows])
            days = [r["day"] for r in w.series.rows]
        p = exact.loss_probability(2, 4, 0.01, mu, 3 if mu else None, 365)
        m, h = ci(fr)
        print(f"| {label} | 2 | 4 | 100 | {3 if mu else '-'} | {4 if mu else '-'} | {p:.5f} | {m:.5f} ± {h:.5f} |")
        ax.plot(days, np.mean(curves, axis=0), label=f"simulated, repair {label}")
        ax.plot(days, [exact.loss_probability(2, 4, 0.01, mu, 3 if mu else None, t) for t in days], "k--",
                label=f"exact, repair {label}")
    ax.set(xlabel="day", ylabel="fraction of packs lost", yscale="log", title="k=2 n=4, disk MTTF 100 d")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "markov.png", dpi=90)


def availability(out: Path) -> None:
    plt = output.pyplot()
    print("\n### Availability vs the binomial k-of-n formula (n = 8, online 16 h / offline 8 h)\n")
    print("| k | exact | simulated, step 0s (5 seeds) | simulated, step 1m (5 seeds) |")
    print("|---|---|---|---|")
    ks, ex, sim = [], [], []
    for k in range(1, 9):
        row = []
        for step in ("0s", "1m"):
            doc = {"world": {"nodes": 1000, "packs": 2000, "days": 20}, "code": {"k": k, "n": 8},
                   "repair": {"model": "none"},
                   "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8, "step": step}}
            row.append(ci([world.run(scenario.parse(doc), s)[0]["availability"] for s in range(21, 26)]))
        a = exact.availability(k, 8, 2 / 3)
        print(f"| {k} | {a:.5f} | {row[0][0]:.5f} ± {row[0][1]:.5f} | {row[1][0]:.5f} ± {row[1][1]:.5f} |")
        ks.append(k)
        ex.append(a)
        sim.append(row[1][0])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, ex, "k--", label="binomial")
    ax.plot(ks, sim, "o", label="simulated")
    ax.set(xlabel="k (n = 8)", ylabel="availability", title="Availability, nodes online 2/3 of the time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "availability.png", dpi=90)


def mttdl() -> None:
    print("\n### Mean time to data loss vs the birth–death closed form (k=2, n=3, repaired at 2)\n")
    print("| node MTTF d | mean repair d | closed form d | simulated (5 seeds, 95% CI) |")
    print("|---|---|---|---|")
    for mttf, rep in ((10.0, 1.0), (10.0, 0.5), (20.0, 2.0)):
        lam, mu = 1 / mttf, 1 / rep
        expect = exact.mttdl_birth_death([3 * lam, 2 * lam], [0.0, mu])
        doc = {"world": {"nodes": 1000, "packs": 600, "days": 40 * expect}, "code": {"k": 2, "n": 3},
               "failures": {"model": "exponential", "node_mttf_days": mttf},
               "repair": {"model": "exponential", "repair_at": 2, "mean_days": rep}}
        m, h = ci([world.run(scenario.parse(doc), s)[0]["mean_time_to_loss_days"] for s in range(31, 36)])
        print(f"| {mttf:g} | {rep:g} | {expect:.2f} | {m:.2f} ± {h:.2f} |")


def candidates() -> None:
    print("\n### Placement candidate sample vs all nodes (real policy)\n")
    print("| candidates | packs lost | availability | repair MiB/node/day | mean time to repair h |")
    print("|---|---|---|---|---|")
    for c in (8, 32, 0):
        doc = {"world": {"nodes": 200, "packs": 5000, "days": 30, "sites": 20},
               "code": {"k": 4, "n": 8}, "failures": {"model": "exponential", "node_mttf_days": 100},
               "churn": {"model": "exponential", "mean_online_hours": 16, "mean_offline_hours": 8},
               "policy": {"candidates": c}}
        runs = [world.run(scenario.parse(doc), s)[0] for s in range(41, 44)]
        lost = ci([r["packs_lost"] for r in runs])
        av = ci([r["availability"] for r in runs])
        rb = ci([r["repair_bytes_per_node_day"] / 2**20 for r in runs])
        tr = ci([r["mean_time_to_repair_days"] * 24 for r in runs])
        print(f"| {c or 'all 200'} | {lost[0]:.1f} ± {lost[1]:.1f} | {av[0]:.5f} ± {av[1]:.5f} | "
              f"{rb[0]:.1f} ± {rb[1]:.1f} | {tr[0]:.2f} ± {tr[1]:.2f} |")


def findings(sweep_json: Path, mttf: float = 1000.0) -> None:
    """The group-of-10 table: per (k, n, holder_lost_after) the simulated availability,
    repair traffic and mean time to repair (real policy, the ``points`` of ``corestate sim
    sweep --json``), and the yearly loss of the exact chain at that measured repair time
    (repair at n-1)."""
    import json
    doc = json.loads(sweep_json.read_text().strip().splitlines()[-1])
    rows = doc["points"] if isinstance(doc, dict) else doc
    print("| k | n | holder_lost_after | packs lost | availability | repair MiB/node/day "
          "| mean time to repair h | P(loss)/pack-year, chain at that repair time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        k, n = int(r["code.k"]), int(r["code.n"])
        ttr = r["mean_time_to_repair_days"]
        ok = ttr is not None and ttr == ttr and ttr > 0
        p = exact.loss_probability(k, n, 1 / mttf, 1 / ttr, n - 1, 365.0) if ok else float("nan")
        rb, rbc = r["repair_bytes_per_node_day"] / 2**20, r["repair_bytes_per_node_day_ci95"] / 2**20
        print(f"| {k} | {n} | {r['policy.holder_lost_after']} | {r['packs_lost']:.1f} | "
              f"{r['availability']:.4f} ± {r['availability_ci95']:.4f} | {rb:.0f} ± {rbc:.0f} | "
              f"{ttr * 24 if ok else float('nan'):.1f} | {p:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("simulations/validation"))
    ap.add_argument("--only", choices=["markov", "availability", "mttdl", "candidates", "findings"])
    ap.add_argument("--sweep", type=Path, help="with --only findings: the sweep.json of group10-sweep.toml")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "markov"):
        markov(args.out)
    if args.only in (None, "availability"):
        availability(args.out)
    if args.only in (None, "mttdl"):
        mttdl()
    if args.only in (None, "candidates"):
        candidates()
    if args.only == "findings" and args.sweep:
        findings(args.sweep)


if __name__ == "__main__":
    main()
