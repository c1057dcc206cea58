"""Where the test suite's time goes: a pytest JUnit report summed per group and per phase.

Run the suite with ``--junitxml=FILE`` (and ``--durations=0`` for the phases), then::

    python tests/bench/suite_cost.py FILE [--durations DURATIONS.txt] [--top 30]

It prints the wall time per group (a module, or the ``netns``/``loop-devices`` groups of
tests/conftest.py: the unit a parallel worker takes whole), most first, and from the
``--durations`` text how much of it is set-up and tear-down (fixtures: meshes, homes)
against the tests' own calls. Use it to keep ``HEAVIEST`` in tests/conftest.py current.
"""

from __future__ import annotations

import argparse
import collections
import re
import xml.etree.ElementTree as ET
from pathlib import Path

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S+)")


def group_of(nodeid: str) -> str:
    """The parallel group named in a node id (``...::test@group``), else its module."""
    return nodeid.rsplit("@", 1)[1] if "@" in nodeid.rsplit("]", 1)[-1] else nodeid.split("::")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("junit", type=Path)
    ap.add_argument("--durations", type=Path, help="pytest's output with --durations=0")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    total: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for case in ET.parse(args.junit).iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        nodeid = f"{module}::{case.get('name')}"
        total[group_of(nodeid)] += float(case.get("time") or 0)
        count[group_of(nodeid)] += 1
    phases: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    if args.durations:
        for line in args.durations.read_text().splitlines():
            m = LINE.match(line)
            if m:
                phases[group_of(m[3])][m[2]] += float(m[1])
    print(f"{sum(total.values()):.0f} s in {sum(count.values())} tests")
    print(f"{'seconds':>8} {'tests':>5} {'set-up':>7} {'tear-down':>9}  group")
    for group, seconds in total.most_common(args.top):
        p = phases.get(group, collections.Counter())
        print(f"{seconds:8.1f} {count[group]:5d} {p['setup']:7.1f} {p['teardown']:9.1f}  {group}")


if __name__ == "__main__":
    main()
