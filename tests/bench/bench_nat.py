#!/usr/bin/env python3
"""NAT benchmark (issue 17): time to a direct connection (DCUtR) and throughput direct
against relayed, in the NAT lab of ``tests/natlab.py`` (root; namespaces, iptables).

One run builds the lab (cone-like or ``--random-fully`` NATs), starts the public relay,
member A behind site A's router (reserves a slot on the relay) and member B behind site
B's (``tests/natpeer.py``), then B: dials A through its circuit address (``connected``:
seconds to the relayed connection and the first stream), sends ``--size`` bytes on that
stream (``relayed MB/s``: MB = 10^6 bytes, verified by SHA-256 at A), waits for the
connection to turn direct (``direct after``: seconds from the relayed connection to the
direct one), and sends ``--size`` bytes on a new stream (``2nd MB/s``: over the direct
connection when there is one). The relayed transfer runs while DCUtR works, as it would
for a real backup.

    sudo .venv/bin/python tests/bench/bench_nat.py --runs 5 --size 8MiB [--random] [--json out.json]

On a shared 2-core machine the rates are low and noisy; final numbers need a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import natlab


def parse_size(text: str) -> int:
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", default="8MiB")
    ap.add_argument("--random", action="store_true", help="--random-fully NATs (symmetric-like)")
    ap.add_argument("--wait", type=float, default=20.0, help="seconds to wait for DCUtR")
    ap.add_argument("--json", help="write the runs here")
    args = ap.parse_args()
    reason = natlab.unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    size = parse_size(args.size)
    runs = []
    kind = "symmetric-like (--random-fully)" if args.random else "cone-like (port-preserving)"
    print(f"NAT lab, {kind}, {args.size} per transfer, {args.runs} runs")
    print("| run | connected s | relayed MB/s | direct after s | 2nd stream | 2nd MB/s |")
    print("|---|---|---|---|---|---|")
    for i in range(args.runs):
        with natlab.NatLab(random=args.random) as lab:
            out = natlab.relay_and_punch(lab, sys.executable, size=size, wait=args.wait)
        runs.append(out)
        direct = "-" if out["direct_after_s"] is None else f"{out['direct_after_s']:.2f}"
        print(f"| {i + 1} | {out['connected_s']:.2f} | {out['relayed_mb_s']:.1f} | {direct} "
              f"| {out['second']} | {out['second_mb_s']:.1f} |", flush=True)
    directs = [r["direct_after_s"] for r in runs if r["direct_after_s"] is not None]
    print(f"\ndirect in {len(directs)} of {len(runs)} runs"
          + (f"; median {statistics.median(directs):.2f} s after the relayed connection" if directs else ""))
    print(f"median relayed {statistics.median(r['relayed_mb_s'] for r in runs):.1f} MB/s, "
          f"second stream {statistics.median(r['second_mb_s'] for r in runs):.1f} MB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"random": args.random, "size": size, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
