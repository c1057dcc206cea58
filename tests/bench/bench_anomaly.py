"""What the anomaly model costs a backup: CPU seconds with the model on and off.

Runs the ``backup`` operation in this process (node/app/backup.py, the same code the CLI and
the daemon run) on a treegen tree, alternating "model on" (the cheap signs in the workers, the
observer and its probes, the judge, the state, the silent-corruption re-read) and "model
off" (the same backup with the anomaly hooks replaced by nothing), each on a fresh home:

1. first backup of the tree;
2. ``treegen.mutate`` (about 5% of the bytes), then an incremental backup.

CPU = user + system of this process and of its reaped children (the forked chunking
workers), from ``resource.getrusage``. Prints the median over the runs and the overhead.

The difference of two totals is noisy on a shared machine, so with the model on the script
also clocks the model's own work where it happens (thread CPU time around the probes in
the workers, shared through memory the workers inherit; around the observer, the judge, the
state file and the re-read in the parent) and prints it as a share of the rest of the
backup's CPU: the "measured" overhead.

    python tests/bench/bench_anomaly.py --size 256MiB --runs 3
    python tests/bench/bench_anomaly.py --size 256MiB --runs 3 --history 2000  # a node's full state

Numbers on a shared machine are noisy; the final ones need a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _treegen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("treegen", HERE / "treegen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["treegen"] = mod
    spec.loader.exec_module(mod)
    return mod


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


_CLOCK: Any = None  # multiprocessing.Value('d'): CPU seconds of the model's work in the workers
_LOCAL = [0.0, 0]  # this process's clocked seconds not yet added to _CLOCK, and the calls
_PARENT = [0.0]  # CPU seconds of the model's work in this (the parent) process


def _clocked(fn: Any, shared: bool) -> Any:
    """``fn`` with its thread CPU time added up. In the workers (``shared``) the sum goes to
    the shared value every 8 calls (a lock per call would cost more than the cheap
    per-file gate it clocks; a worker exits with at most 7 calls unsent, ~20 us); in the
    parent to a plain float. Each call also counts about one clock read (~0.4 us), a bias of under 1 ms per 2,000 files."""
    tt = time.thread_time

    def run(*a: Any, **k: Any) -> Any:
        t = tt()
        try:
            return fn(*a, **k)
        finally:
            d = tt() - t
            if not shared:
                _PARENT[0] += d
            else:
                _LOCAL[0] += d
                _LOCAL[1] += 1
                if _LOCAL[1] >= 8:
                    with _CLOCK.get_lock():
                        _CLOCK.value += _LOCAL[0]
                    _LOCAL[0], _LOCAL[1] = 0.0, 0
    return run


def _clock() -> float:
    return _CLOCK.value + _PARENT[0] + _LOCAL[0]


def _instrument() -> None:
    """Clock the model's work (before the workers fork: they inherit the wrappers)."""
    global _CLOCK
    import multiprocessing

    from corestate.node.app import anomaly
    from corestate.node.app import backup as app
    from corestate.node.engine import backup as engine
    _CLOCK = multiprocessing.get_context("fork").Value("d", 0.0)
    # The probes run in the parent, inside ``_observe`` (clocked below); the workers judge
    # only the cheap signs.
    engine._wants_probe = _clocked(engine._wants_probe, True)
    engine.Backup._observe = _clocked(engine.Backup._observe, False)
    anomaly.Watch.gone = _clocked(anomaly.Watch.gone, False)
    app._anomaly_begin = _clocked(app._anomaly_begin, False)
    app._anomaly_end = _clocked(app._anomaly_end, False)


def _backup(home: Path, src: Path, model: bool) -> tuple[float, float, str]:
    from corestate.node.app import Local
    from corestate.node.app import backup as app
    from corestate.node.home import Home
    from corestate.node.local import LocalNode
    from corestate.protocol import control as c
    saved = app._anomaly_begin, app._anomaly_end
    if not model:
        app._anomaly_begin = lambda *a: None  # type: ignore[assignment]
        app._anomaly_end = lambda *a: (None, [], 0)  # type: ignore[assignment]
    try:
        with LocalNode.open(Home(home), b"bench") as node:
            call = c.BackupCall(paths=(os.fsencode(src),), exclude=(), k=0, n=0, estimate=False, skipped=False)
            # Every run starts with the collector's counters at zero: a full collection of
            # what earlier runs left (tens of ms) falls in no timed backup by chance.
            gc.collect()
            t0, w0 = _cpu(), time.monotonic()
            m0 = _clock() if _CLOCK is not None else 0.0
            items = list(app.backup(node, call, Local()))
            cpu, wall = _cpu() - t0, time.monotonic() - w0
            if model and _CLOCK is not None:
                _MEASURED.append(_clock() - m0)
    finally:
        app._anomaly_begin, app._anomaly_end = saved
    s = items[-1]
    assert isinstance(s, c.BackupSummary)
    return cpu, wall, s.anomaly.verdict if s.anomaly else "-"


_MEASURED: list[float] = []


def _home(base: Path) -> Path:
    from corestate.node.home import Home
    from corestate.node.local import init_home
    home = base / "home"
    init_home(Home(home), os.urandom(32), b"bench", kdf_cost=(1, 8 << 20))  # a throwaway home
    return home


def _seed_history(home: Path, n: int, src: Path) -> None:
    """Give the home the anomaly state of a node that has judged ``n`` backups of ``src``
    before: ok findings, each with the numbers the node keeps, and the series' baseline of
    ``min(n, WINDOW)`` snapshots (a long-running node reads and writes it on every backup).
    No effect on the "model off" runs (they never read it)."""
    import base64

    import numpy as np
    from corestate.node import anomalystate as st
    from corestate.node.core import anomaly as an
    state = st.AnomalyState()
    feats = {name: 1.0 for name in an.FEATURE_NAMES}
    for i in range(n):
        state.add(st.Finding(
            snapshot=f"{i:064x}", time_ns=i, series=["/elsewhere"], verdict="ok", score=0.01,
            reasons=["nothing unusual: 12 changed files, none of them suspicious"],
            details={"reasons": [], "features": feats, "baseline": {"snapshots": 100, "warm": True},
                     "model": "bench", "contributions": [("suspicious_share", -0.5)] * 5, "files": []},
            features=feats))
    rng = np.random.default_rng(n)
    base = an.Baseline()
    rows = min(n, an.baseline.WINDOW)
    base.ring = rng.poisson(3.0, (rows, len(an.FEATURE_NAMES))).astype(np.float32)
    base.learnt = n
    state.series[st.key_of(st.series_key([os.fsencode(os.path.abspath(src))]))] = {
        "baseline": base64.b64encode(base.to_bytes()).decode(), "exts": ["txt", "bin", "jpg"]}
    st.save(home, state)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128MiB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--history", type=int, default=0,
                    help="judged backups in the home's anomaly state, and snapshots in its "
                         "baseline, before the first (e.g. 2000)")
    args = ap.parse_args()
    tg = _treegen()
    _instrument()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-anomaly-"))
    results: dict[tuple[str, Any], list[float]] = {}
    walls: dict[tuple[str, bool], list[float]] = {}
    try:
        for run in range(args.runs):
            for model in ((True, False) if run % 2 == 0 else (False, True)):
                base = work / f"r{run}-{int(model)}"
                shutil.rmtree(base, ignore_errors=True)
                base.mkdir(parents=True)
                src = base / "tree"
                tg.generate(src, args.size, seed=args.seed)
                home = _home(base)
                if args.history:
                    _seed_history(home, args.history, src)
                time.sleep(2.1)  # past the racy window: the incremental reads only what changed
                cpu, wall, verdict = _backup(home, src, model)
                results.setdefault(("first", model), []).append(cpu)
                if model:
                    results.setdefault(("first", "measured"), []).append(_MEASURED[-1] / (cpu - _MEASURED[-1]))
                walls.setdefault(("first", model), []).append(wall)
                tg.mutate(src, 5.0, seed=args.seed + run)
                time.sleep(2.1)
                cpu2, wall2, verdict2 = _backup(home, src, model)
                results.setdefault(("incremental", model), []).append(cpu2)
                if model:
                    results.setdefault(("incremental", "measured"), []).append(
                        _MEASURED[-1] / (cpu2 - _MEASURED[-1]))
                walls.setdefault(("incremental", model), []).append(wall2)
                print(f"run {run} model={'on ' if model else 'off'} first {cpu:.2f}s cpu ({wall:.2f}s) "
                      f"[{verdict}]  incremental {cpu2:.2f}s cpu ({wall2:.2f}s) [{verdict2}]", flush=True)
                shutil.rmtree(base, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntree {args.size}, {args.runs} run(s), median CPU seconds (process + workers):")
    for phase in ("first", "incremental"):
        on, off = statistics.median(results[(phase, True)]), statistics.median(results[(phase, False)])
        print(f"  {phase:<12} model on {on:7.2f}s   off {off:7.2f}s   overhead {100 * (on - off) / off:+.1f}%"
              f"   (wall {statistics.median(walls[(phase, True)]):.2f}s / {statistics.median(walls[(phase, False)]):.2f}s)"
              f"   measured: the model's own CPU = {100 * statistics.median(results[(phase, 'measured')]):.1f}% "
              "of the rest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
