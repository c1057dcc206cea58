"""Block-level increments on btrfs: a large image with 1% rewritten in 16 regions.

Run as root (loop device, btrfs): ``python tests/bench/bench_blocks.py [--size-gib 4]``.
Side by side in one run on one image: CoreState with block-level increments (the btrfs
provider's changed ranges), CoreState re-chunking the whole file (files cache dropped), and
restic. Prints bytes read and seconds for the backup after the rewrite, and the bytes of
the chunks that really changed. Targets (issue 6): bytes read <= 1.2x the changed chunks,
and >= 10x faster than restic. Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np


def sh(*cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=cwd).stdout


def preread(p: Path) -> None:
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument("--percent", type=float, default=1.0)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "blocks")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark mounts a btrfs image on a loop device")
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    size = int(args.size_gib * (1 << 30))
    image = work / "fs.img"
    with open(image, "wb") as f:
        f.truncate(size + (1 << 30))
    loop = sh("losetup", "--find", "--show", str(image)).strip()
    mnt = work / "mnt"
    mnt.mkdir()
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
        time.sleep(2.5)  # past CoreState's racy window, so the files cache takes the image
        env = {**os.environ, "CORESTATE_PASSPHRASE": "bench", "RESTIC_PASSWORD": "bench",
               "RESTIC_CACHE_DIR": str(work / "restic-cache")}
        home = work / "home"
        cs = ["corestate", "--home", str(home)]
        sh(*cs, "init", "--json", env=env)
        sh("restic", "-r", str(work / "restic"), "init", env=env)
        preread(disk)
        t = time.perf_counter()
        sh(*cs, "backup", str(disk.parent), "--json", env=env)
        first_cs = time.perf_counter() - t
        preread(disk)
        t = time.perf_counter()
        sh("restic", "-r", str(work / "restic"), "backup", str(disk.parent), env=env)
        first_restic = time.perf_counter() - t

        # Rewrite 1% of the image in contiguous regions spread over it.
        region = int(size * args.percent / 100 / args.regions)
        with open(disk, "r+b") as f:
            for i in range(args.regions):
                f.seek(int((i + 0.5) * size / args.regions))
                f.write(rng.integers(0, 256, region, dtype=np.uint8).tobytes())
        os.sync()

        def cs_backup() -> tuple[float, dict]:
            preread(disk)
            t0 = time.perf_counter()
            out = sh(*cs, "backup", str(disk.parent), "--json", env=env)
            return time.perf_counter() - t0, json.loads(out.strip().splitlines()[-1])

        block_s, block = cs_backup()
        # The same backup again, re-chunking the whole file: forget what the caches know.
        db = sqlite3.connect(home / "index.db")
        db.execute("DELETE FROM files_cache")
        db.execute("DELETE FROM dir_cache")
        db.commit()
        db.close()
        full_s, full = cs_backup()
        preread(disk)
        t = time.perf_counter()
        sh("restic", "-r", str(work / "restic"), "backup", str(disk.parent), env=env)
        restic_s = time.perf_counter() - t

        changed = block["bytes_new"]
        print(f"\nBlock-level increments: {size / 2**30:.1f} GiB image on btrfs, "
              f"{args.percent}% rewritten in {args.regions} regions of {region / 2**20:.1f} MiB")
        print(f"(first backups: corestate {first_cs:.1f} s, restic {first_restic:.1f} s)\n")
        print(f"{'':34}{'bytes read':>14}{'seconds':>10}")
        print(f"{'corestate, block-level':34}{block['bytes_read'] / 2**20:>11.1f} MiB{block_s:>10.2f}")
        print(f"{'corestate, full re-chunk':34}{full['bytes_read'] / 2**20:>11.1f} MiB{full_s:>10.2f}")
        print(f"{'restic':34}{size / 2**20:>11.1f} MiB{restic_s:>10.2f}")
        print(f"\nbytes of the chunks that changed: {changed / 2**20:.1f} MiB "
              f"(full re-chunk found {full['chunks_new']} new chunks: must be 0)")
        ratio = block["bytes_read"] / max(1, changed)
        speed = restic_s / block_s
        print(f"bytes read / changed chunks: {ratio:.2f}x  (target <= 1.2x: {'PASS' if ratio <= 1.2 else 'SHORT'})")
        print(f"restic time / block-level time: {speed:.1f}x  (target >= 10x: {'PASS' if speed >= 10 else 'SHORT'})")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
