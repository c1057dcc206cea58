"""How fast ``corestate mount`` reads, against ``corestate restore`` of the same file.

Run by hand (root, /dev/fuse, pyfuse3): ``python tests/bench/bench_mount.py --size 256MiB``.

Two setups, each with real daemons on loopback (node/runtime/localmesh.py):

- ``local``: one node, no peers: every pack is in the local store;
- ``holders``: two nodes: the data packs live only on the holder, so the mount reads them
  through the owner's daemon (``pack-read``), which rebuilds each pack from its shares.

For each: the first sequential read of a file of ``--size`` random bytes (``cat`` to
/dev/null, page cache dropped), a second read (the mount's chunk cache and the kernel's page
cache), ``--random`` reads of 4 KiB at random offsets from a fresh mount (p50, p95), and a
``restore --path`` of the same file. Prints one table (and ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corestate.node.runtime.localmesh import LocalMesh
from meshutil import edit_config


def size_of(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if text.endswith(u):
            return int(float(text[: -len(u)]) * m)
    return int(text)


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def mount(lm: LocalMesh, where: Path) -> subprocess.Popen[str]:
    where.mkdir(exist_ok=True)
    p = subprocess.Popen([*lm.cmd(lm.nodes[0], "mount"), "--passphrase-file", str(lm.pw), str(where)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lm.env)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("mounted "), line
    return p


def unmount(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)


def run(setup: str, base: Path, size: int, reads: int) -> dict[str, float]:
    lm = LocalMesh(base / setup, 2 if setup == "holders" else 1)
    lm.create()
    for n in lm.nodes:
        edit_config(n.home, "pack_size = 16777216", f"pack_size = {16 << 20}")
    src = base / f"src-{setup}"
    src.mkdir()
    f = src / "big.bin"
    with open(f, "wb") as out:
        left = size
        while left:
            n = min(left, 64 << 20)
            out.write(os.urandom(n))
            left -= n
    res: dict[str, float] = {}
    try:
        lm.start()
        lm.run(lm.nodes[0], "backup", str(src))
        where = base / f"mnt-{setup}"
        inside = where / "latest" / str(f).lstrip("/")
        p = mount(lm, where)
        try:
            drop_caches()
            t = time.perf_counter()
            subprocess.run(["cat", str(inside)], stdout=subprocess.DEVNULL, check=True)
            res["first_read_s"] = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run(["cat", str(inside)], stdout=subprocess.DEVNULL, check=True)
            res["second_read_s"] = time.perf_counter() - t
        finally:
            unmount(p)
        p = mount(lm, where)
        try:
            rnd = random.Random(1)
            lat = []
            with open(inside, "rb", buffering=0) as fh:
                for _ in range(reads):
                    off = rnd.randrange(max(1, size - 4096))
                    t = time.perf_counter()
                    os.pread(fh.fileno(), 4096, off)
                    lat.append(time.perf_counter() - t)
            res["random_4k_p50_ms"] = statistics.median(lat) * 1e3
            res["random_4k_p95_ms"] = statistics.quantiles(lat, n=20)[-1] * 1e3
        finally:
            unmount(p)
        target = base / f"restore-{setup}"
        drop_caches()
        t = time.perf_counter()
        lm.run(lm.nodes[0], "restore", "latest", "--target", str(target), "--path", str(f))
        res["restore_s"] = time.perf_counter() - t
    finally:
        lm.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="64MiB")
    ap.add_argument("--random", type=int, default=200, help="random 4 KiB reads")
    ap.add_argument("--setups", default="local,holders")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    size = size_of(a.size)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-mount-") as tmp:
        for setup in a.setups.split(","):
            out[setup] = run(setup, Path(tmp), size, a.random)
    mib = size / (1 << 20)
    print(f"file of {a.size}; MiB/s = {mib:.0f} MiB / seconds")
    print(f"{'setup':8} {'1st read':>14} {'2nd read':>14} {'4K p50':>9} {'4K p95':>9} {'restore':>14}")
    for setup, r in out.items():
        print(f"{setup:8} {r['first_read_s']:6.2f}s {mib / r['first_read_s']:5.0f}MiB/s "
              f"{r['second_read_s']:6.2f}s {mib / r['second_read_s']:5.0f}MiB/s "
              f"{r['random_4k_p50_ms']:7.1f}ms {r['random_4k_p95_ms']:7.1f}ms "
              f"{r['restore_s']:6.2f}s {mib / r['restore_s']:5.0f}MiB/s")
    if a.json:
        Path(a.json).write_text(json.dumps({"size": size, "results": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
