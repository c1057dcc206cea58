"""Block-level increments on btrfs: a large image with 1% rewritten in 16 regions.

Run as root (loop device, btrfs): ``python tests/bench/bench_blocks.py [--size-gib 4]``.

One btrfs image holds a disk image of random bytes. CoreState and restic each back it up
once; then every round rewrites 1% of it in 16 contiguous regions (new places each round)
and both back it up again, in alternating order. CoreState's backup runs as a plain
command in even rounds and through a running daemon (already unsealed and open, what a
home lab's scheduled backups use) in odd rounds. At the end CoreState re-chunks the whole
file once more with its caches dropped, which must find no new chunk (the block-level cuts
are the ones a full read makes). Prints bytes read and the median seconds of each, and the
bytes of the chunks that really changed. Targets (issue 6): bytes read <= 1.2x the changed
chunks, and >= 10x faster than restic. Not a test: nothing here runs under pytest.

The page cache is warmed with the image before each timed backup (it is evicted after a
minute idle here), and CoreState runs from compiled bytecode, as an installed package does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def sh(*cmd: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def preread(p: Path) -> None:
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass


def rewrite(disk: Path, size: int, percent: float, regions: int, round_: int, rng: np.random.Generator) -> None:
    """Rewrite ``percent`` of the image in ``regions`` contiguous regions spread over it."""
    region = int(size * percent / 100 / regions)
    step = size // regions
    with open(disk, "r+b") as f:
        for i in range(regions):
            # A different place in each slice every round, clear of the slice's end.
            at = i * step + (round_ * 7919 * 4096) % max(1, step - region)
            f.seek(at)
            f.write(rng.integers(0, 256, region, dtype=np.uint8).tobytes())
    os.sync()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument("--percent", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=6, help="rewrite-and-backup rounds (half via the daemon)")
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "blocks")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts a btrfs image on a loop device")
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True)
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    size = int(args.size_gib * (1 << 30))
    image = work / "fs.img"
    with open(image, "wb") as f:
        f.truncate(size + (1 << 30))
    loop = sh("losetup", "--find", "--show", str(image)).strip()
    mnt = work / "mnt"
    mnt.mkdir()
    daemon: subprocess.Popen[bytes] | None = None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CORESTATE_PASSPHRASE="bench", RESTIC_PASSWORD="bench",
               RESTIC_CACHE_DIR=str(work / "restic-cache"), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    try:
        sh("mkfs.btrfs", "-q", "-f", loop)
        sh("mount", loop, str(mnt))
        sh("btrfs", "subvolume", "create", str(mnt / "vm"))
        disk = mnt / "vm" / "disk.img"
        rng = np.random.default_rng(7)
        with open(disk, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                left -= n
        os.sync()
        home = work / "home"
        # The console script next to this interpreter: what `pip install` gives a user (a
        # version manager's shim in front of it would add its own start-up time).
        script = shutil.which("corestate", path=str(Path(sys.executable).parent)) or "corestate"
        cs = [script, "--home", str(home)]
        repo = ["restic", "-r", str(work / "restic")]
        sh(*cs, "init", "--json", env=env)  # also compiles CoreState's bytecode
        sh(*repo, "init", env=env)

        def corestate() -> tuple[float, dict]:
            preread(disk)
            t0 = time.perf_counter()
            out = sh(*cs, "backup", str(disk.parent), "--json", env=env)
            return time.perf_counter() - t0, json.loads(out.strip().splitlines()[-1])

        def restic() -> float:
            preread(disk)
            t0 = time.perf_counter()
            # Not CoreState's own snapshot folder inside the subvolume: restic would read
            # (and dedup) the kept parent's copy of the image as well.
            sh(*repo, "backup", "--exclude", ".corestate-snapshots", str(disk.parent), env=env)
            return time.perf_counter() - t0

        first_cs, _ = corestate()
        first_restic = restic()
        print(f"first backups: corestate {first_cs:.1f} s, restic {first_restic:.1f} s", flush=True)

        times: dict[str, list[float]] = {"cli": [], "daemon": [], "restic": []}
        read: dict[str, list[int]] = {"cli": [], "daemon": []}
        changed: list[int] = []
        ratios: list[float] = []
        for r in range(args.rounds):
            mode = "cli" if r % 2 == 0 else "daemon"
            if mode == "daemon" and daemon is None:
                daemon = subprocess.Popen([*cs, "node", "run", "--listen", "/ip4/127.0.0.1/tcp/0"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                sock = home / "control.sock"
                deadline = time.monotonic() + 60
                while not sock.exists():
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise SystemExit("the daemon did not start")
                    time.sleep(0.1)
            if mode == "cli" and daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
                daemon = None
            rewrite(disk, size, args.percent, args.regions, r + 1, rng)
            order = ["cs", "restic"] if r % 4 < 2 else ["restic", "cs"]
            for tool in order:
                if tool == "restic":
                    times["restic"].append(restic())
                else:
                    s, res = corestate()
                    times[mode].append(s)
                    read[mode].append(res["bytes_read"])
                    changed.append(res["bytes_new"])
                    ratios.append(res["bytes_read"] / max(1, res["bytes_new"]))
            print(f"round {r + 1}: corestate ({mode}) {times[mode][-1]:.2f} s, "
                  f"{read[mode][-1] / 2**20:.1f} MiB read; restic {times['restic'][-1]:.2f} s", flush=True)
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            daemon = None

        # The same state re-chunked whole: forget what the caches know.
        db = sqlite3.connect(home / "index.db")
        db.execute("DELETE FROM files_cache")
        db.execute("DELETE FROM dir_cache")
        db.commit()
        db.close()
        full_s, full = corestate()

        med = statistics.median
        region = int(size * args.percent / 100 / args.regions)
        print(f"\nBlock-level increments: {size / 2**30:.1f} GiB image on btrfs, "
              f"{args.percent}% rewritten in {args.regions} regions of {region / 2**20:.1f} MiB; "
              f"medians of {args.rounds} rounds (CLI and daemon: {len(times['cli'])} and "
              f"{len(times['daemon'])})\n")
        print(f"{'':36}{'bytes read':>14}{'seconds':>10}{'restic / this':>15}")
        rs = med(times["restic"])
        rows = [("corestate, block-level (command)", med(read["cli"]), med(times["cli"]))]
        if times["daemon"]:
            rows.append(("corestate, block-level (daemon)", med(read["daemon"]), med(times["daemon"])))
        rows += [("corestate, full re-chunk", full["bytes_read"], full_s), ("restic", size, rs)]
        for name, b, s in rows:
            print(f"{name:36}{b / 2**20:>11.1f} MiB{s:>10.2f}{rs / s:>14.1f}x")
        ch = med(changed)
        print(f"\nbytes of the chunks that changed: {ch / 2**20:.1f} MiB per round "
              f"(full re-chunk found {full['chunks_new']} new chunks: must be 0)")
        ratio = max(ratios)
        speed = rs / med(times["cli"])
        print(f"bytes read / changed chunks, worst round: {ratio:.2f}x  "
              f"(target <= 1.2x: {'PASS' if ratio <= 1.2 else 'SHORT'})")
        print(f"restic time / block-level time, as a command: {speed:.1f}x  "
              f"(target >= 10x: {'PASS' if speed >= 10 else 'SHORT'})")
        if full["chunks_new"]:
            print("FAIL: the block-level chunks differ from a full read's")
            return 1
    finally:
        if daemon is not None:
            daemon.kill()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
