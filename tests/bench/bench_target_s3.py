"""The S3 backend against a local ``rclone serve s3``: share-sized puts, whole and ranged gets.

``python tests/bench/bench_target_s3.py [--size 32MiB] [--count 8] [--runs 3] [--threads 4]``

What it times, each round on fresh keys (medians over ``--runs``):
- put: ``--count`` objects of ``--size`` through ``S3Store.put`` (one PUT below the
  multipart threshold, 16 MiB parts above it), ``--threads`` at once, as the holder layer
  uploads shares;
- get: the same objects read whole;
- ranged: 256 ranged reads of 4 KiB at random offsets (an audit's block reads);
- the same on a ``FolderStore`` on the same disk, as the floor that S3 adds its HTTP to.
The server runs on loopback over a temporary folder: this measures the client and the
protocol, not a network or a provider. Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corestate.node.targets.folder import FolderStore
from corestate.node.targets.s3 import S3Store
from corestate.node.targets.store import ObjectStore
from s3server import S3Server


def size_arg(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    t = text.strip().lower()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * m)
    return int(t)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_round(store: ObjectStore, data: bytes, count: int, threads: int, rnd: random.Random) -> dict[str, float]:
    keys = [f"shares/{secrets.token_hex(8)}/{i}" for i in range(count)]
    with ThreadPoolExecutor(threads) as pool:
        put = timed(lambda: list(pool.map(lambda k: store.put(k, data, len(data)), keys)))
        got: list[bytes] = []
        get = timed(lambda: got.extend(pool.map(store.get, keys)))
        assert all(g == data for g in got)
        offsets = [(rnd.choice(keys), rnd.randrange(0, len(data) - 4096)) for _ in range(256)]
        ranged = timed(lambda: list(pool.map(lambda ko: store.get(ko[0], ko[1], 4096), offsets)))
        list(pool.map(store.delete, keys))
    total = len(data) * count
    return {"put MB/s": total / put / 1e6, "get MB/s": total / get / 1e6,
            "4 KiB ranged reads/s": 256 / ranged}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="32MiB", type=size_arg)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    data = secrets.token_bytes(args.size)
    rnd = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        server = S3Server(Path(tmp) / "s3").start()
        try:
            stores: dict[str, ObjectStore] = {
                "s3 (rclone, loopback)": S3Store("bench", server.bucket, "bench", endpoint=server.endpoint,
                                                 credentials=server.credentials),
                "folder (same disk)": FolderStore("bench", Path(tmp) / "folder"),
            }
            (Path(tmp) / "folder").mkdir()
            print(f"{args.count} objects of {args.size / (1 << 20):.1f} MiB, {args.threads} threads, "
                  f"medians of {args.runs} runs")
            for name, store in stores.items():
                rounds = [one_round(store, data, args.count, args.threads, rnd) for _ in range(args.runs)]
                cols = "  ".join(f"{k} {statistics.median(r[k] for r in rounds):8.1f}" for k in rounds[0])
                print(f"{name:<24} {cols}")
                store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
