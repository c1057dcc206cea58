"""``python -m tests.fuzz``: every decoder fuzzed for a fixed budget each; non-zero on a crash.

    python -m tests.fuzz --seconds-each 60              # every target, a minute each
    python -m tests.fuzz --seconds-each 5 --targets frames,tree
    python -m tests.fuzz --engine random --seconds-each 10   # without atheris
    python -m tests.fuzz --replay tests/fuzz/crashes/tree-exception-0123abcd

Engines: ``atheris`` (coverage-guided libFuzzer; ``pip install -e '.[fuzz]'``), one child
process per target so a crash or a hang in one target cannot stop the others and every
target gets its own coverage map; ``random`` (the in-process seeded mutator of
``engine.py``, no coverage feedback, allocations traced); ``auto`` picks atheris when it
imports. Per target it prints the inputs tried, inputs per second, the coverage gained
beyond the seeds (atheris) and the crashes; each crash's input is written to
``--crash-dir`` (default ``tests/fuzz/crashes/``, git-ignored) and can be replayed with
``--replay FILE``. ``--json FILE`` writes the same numbers for a report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "fuzz"

from . import engine
from . import targets as t

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
CRASH_DIR = HERE / "crashes"
ATHERIS_TIMEOUT = 10  # seconds per input before libFuzzer calls it a hang
ATHERIS_MEMORY = 1 << 30  # address space a worker may add to what it holds at start


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# The atheris worker: one target, in its own process.


def _worker(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    # Instrument the product (not the harness, not the standard library) for coverage.
    with atheris.instrument_imports(include=["corestate"]):
        from corestate.erasure import share  # noqa: F401
        from corestate.node import anomalystate, group, home, peers  # noqa: F401
        from corestate.node.core import catalog, membership, records, sync  # noqa: F401
        from corestate.node.runtime import daemon  # noqa: F401
        from corestate.node.targets import registry  # noqa: F401
        from corestate.protocol import control, messages, objects, pack, streams, wire  # noqa: F401
    target = t.TARGETS[name]
    target.seeds()  # build the seeds' keys and samples before the clock starts
    # A bound on memory: beyond it allocations fail, MemoryError escapes, and that is a
    # crash (libFuzzer's own -rss_limit_mb checks only once a second).
    soft = _address_space() + ATHERIS_MEMORY + engine.MEM_EXTRA.get(name, 0)
    resource.setrlimit(resource.RLIMIT_AS, (soft, resource.RLIM_INFINITY))

    def one(data: bytes) -> None:
        target.run(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 4 << 30


_STAT = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+)")


def run_atheris(name: str, seconds: float, crash_dir: Path, corpus: Path | None) -> engine.Stats:
    stats = engine.Stats(name, engine="atheris")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        work = Path(tmp) / "corpus"
        work.mkdir()
        for i, s in enumerate(t.seeds_of(name)):
            (work / f"seed-{i}").write_bytes(s)
        dirs = [str(work)]
        if corpus is not None:
            keep = corpus / name
            keep.mkdir(parents=True, exist_ok=True)
            dirs = [str(keep), str(work)]  # new inputs go to the first: kept across runs
        artifacts = Path(tmp) / "artifacts"
        artifacts.mkdir()
        args = [f"-max_total_time={max(1, round(seconds))}", f"-timeout={ATHERIS_TIMEOUT}",
                "-rss_limit_mb=3072", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
                "-max_len=65536", "-len_control=50", *dirs]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fuzz", "--worker", name, "--", *args],
                              env=env, capture_output=True, text=True, errors="replace",
                              timeout=seconds + 600)
        stats.seconds = time.perf_counter() - t0
        log = proc.stderr + "\n" + proc.stdout  # atheris prints the Python error on stdout
        first_cov = last_cov = None
        for line in log.splitlines():
            m = _STAT.match(line)
            if m:
                stats.inputs = int(m.group(1))
                cov = int(m.group(3))
                if m.group(2) == "INITED":
                    first_cov = cov
                last_cov = cov
            elif line.startswith("stat::number_of_executed_units:"):
                stats.inputs = int(line.split(":")[-1])
            elif line.startswith("stat::average_exec_per_sec:"):
                stats.rate = float(line.split(":")[-1])
        if first_cov is not None and last_cov is not None:
            stats.new_coverage = last_cov - first_cov
        for art in sorted(artifacts.iterdir()):
            kind = art.name.split("-")[0]  # crash, timeout, oom, leak, slow-unit
            data = art.read_bytes()
            detail = _python_error(log) if kind == "crash" else kind
            saved = engine.save_crash(crash_dir, name, kind, data)
            stats.crashes.append(engine.Crash(name, kind, f"{detail} (input: {saved})", data))
        if proc.returncode != 0 and not stats.crashes:
            tail = "\n".join(log.splitlines()[-30:])
            stats.crashes.append(engine.Crash(name, "worker", f"exit {proc.returncode}: {tail}", b""))
    return stats


def _python_error(log: str) -> str:
    """The exception line atheris prints after "Uncaught Python exception"."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line and i + 1 < len(lines):
            return lines[i + 1].strip()[:300]
    return "crash"


def run_random(name: str, seconds: float, crash_dir: Path, seed: int) -> engine.Stats:
    stats = engine.fuzz_loop(t.TARGETS[name], seconds, seed=seed, max_crashes=5)
    for c in stats.crashes:
        saved = engine.save_crash(crash_dir, name, c.kind, c.data)
        c.detail = f"{c.detail} (input: {saved})"
    return stats


def replay(path: Path, name: str | None) -> int:
    data = path.read_bytes()
    name = name or next((n for n in sorted(t.TARGETS, key=len, reverse=True)
                         if path.name.startswith(n + "-")), None)
    if name is None:
        print(f"cannot tell the target from {path.name}: give --targets NAME", file=sys.stderr)
        return 2
    try:
        took = engine.run_one(t.TARGETS[name], data)
    except engine.Crash as crash:
        print(f"{name}: still crashes: {crash.kind}: {crash.detail}")
        if crash.__cause__ is not None:
            import traceback

            traceback.print_exception(crash.__cause__)
        return 1
    print(f"{name}: no crash ({took * 1000:.1f} ms)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds-each", type=float, default=60.0,
                    help="budget per target in seconds (default 60)")
    ap.add_argument("--targets", default="", help="comma-separated names (default: all); "
                    "--list shows them")
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--seed", type=int, default=None, help="the random engine's seed "
                    "(default: from the clock, printed)")
    ap.add_argument("--crash-dir", type=Path, default=CRASH_DIR)
    ap.add_argument("--corpus", type=Path, default=None,
                    help="atheris: keep the inputs that found coverage here, per target, "
                    "and start from them next time")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--replay", type=Path, default=None,
                    help="run one saved input against its target (named by the file)")
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n] or t.names()
    unknown = [n for n in names if n not in t.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; --list shows them")
    if args.list:
        for n in t.names():
            print(f"{n:20s} {t.TARGETS[n].notes.splitlines()[0]}")
        return 0
    if args.replay is not None:
        return replay(args.replay, args.targets or None)
    eng = args.engine
    if eng == "auto":
        eng = "atheris" if have_atheris() else "random"
    elif eng == "atheris" and not have_atheris():
        ap.error("atheris is not installed: pip install -e '.[fuzz]' (or --engine random)")
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"fuzzing {len(names)} targets, {args.seconds_each:g} s each, engine {eng}"
          + (f", seed {seed}" if eng == "random" else ""), flush=True)
    print(f"{'target':20s} {'inputs':>10s} {'inputs/s':>9s} {'new cov':>8s} {'crashes':>8s}",
          flush=True)
    results: list[dict[str, object]] = []
    total_inputs = total_crashes = 0
    t0 = time.perf_counter()
    for name in names:
        if eng == "atheris":
            st = run_atheris(name, args.seconds_each, args.crash_dir, args.corpus)
        else:
            st = run_random(name, args.seconds_each, args.crash_dir, seed)
        total_crashes += len(st.crashes)
        total_inputs += st.inputs
        cov = "-" if st.new_coverage is None else str(st.new_coverage)
        print(f"{name:20s} {st.inputs:10d} {st.per_second:9.0f} {cov:>8s} {len(st.crashes):8d}",
              flush=True)
        for c in st.crashes:
            print(f"    {c.kind}: {c.detail}", flush=True)
        results.append({"target": name, "engine": st.engine, "inputs": st.inputs,
                        "seconds": round(st.seconds, 2), "inputs_per_second": round(st.per_second),
                        "new_coverage": st.new_coverage,
                        "crashes": [{"kind": c.kind, "detail": c.detail} for c in st.crashes]})
    took = time.perf_counter() - t0
    print(f"{len(names)} targets, {total_inputs} inputs in {took:.0f} s, "
          f"{total_crashes} crashes", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"engine": eng, "seconds_each": args.seconds_each,
                                         "seconds": round(took, 1), "crashes": total_crashes,
                                         "targets": results}, indent=2) + "\n")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
