"""Erasure coding throughput: corestate.erasure side by side with zfec and reedsolo.

Run::

    pip install zfec                         # or: pip install -e '.[bench]'
    python tests/bench/bench_erasure.py      # 1, 16 and 64 MiB; about a minute
    python tests/bench/bench_erasure.py --quick
    python tests/bench/bench_erasure.py --threads 1   # corestate single-threaded, like zfec

Every codec gets the same random bytes. Two comparisons, both in MB/s of *input data*
(1 MB = 10^6 bytes), median of ``--repeat`` runs, codecs interleaved run by run:

- "job": bytes in -> n shares out (encode), k shares in -> original bytes out (decode), as a
  user of each library writes it: ``corestate.erasure.encode/decode``; zfec as its
  ``easyfec`` helper does it (split and pad, ``Encoder.encode``; ``Decoder.decode``, join,
  trim); reedsolo as ``RSCodec(n - k, nsize=n)`` over the data (same column code).
- "codec": only the coding arithmetic, shares already split: parity from the k data shares
  (``Codec.rebuild`` vs ``zfec.Encoder.encode(blocks, parity numbers)``) and the missing
  data shares from k shares (``Codec.rebuild`` vs ``zfec.Decoder.decode``).

Decoding always runs with the first ``min(2, n - k)`` data shares missing, replaced by the
first parity shares. reedsolo is timed once per (k, n) on a small sample (pure Python, about
0.5 MB/s), and that figure is repeated on every size.

A benchmark, not a test: it prints a table and asserts only that every codec round-trips.
The machine may be shared: run it a few times and compare medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from corestate.erasure import Codec, decode, encode

try:
    import zfec
except ImportError:  # pragma: no cover - the table then says so
    zfec = None

try:
    import reedsolo
except ImportError:  # pragma: no cover
    reedsolo = None

CODES = [(2, 3), (4, 6), (10, 16), (20, 30)]
SIZES = [1 << 20, 16 << 20, 64 << 20]
RS_SAMPLE = 16 << 10


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def zfec_job_encode(data: bytes, k: int, n: int) -> list[bytes]:
    assert zfec is not None
    size = -(-len(data) // k)
    blocks = [data[i * size : (i + 1) * size] for i in range(k)]
    blocks = [b + bytes(size - len(b)) if len(b) < size else b for b in blocks]
    return list(zfec.Encoder(k, n).encode(blocks))


def zfec_job_decode(blocks: list[bytes], nums: list[int], k: int, n: int, size: int) -> bytes:
    assert zfec is not None
    joined = b"".join(zfec.Decoder(k, n).decode(blocks, nums))
    return joined[:size] if len(joined) != size else joined


def reedsolo_rates(k: int, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """reedsolo encode/decode MB/s on a small sample (same column code as ours)."""
    if reedsolo is None:
        return float("nan"), float("nan")
    sample = rng.bytes(RS_SAMPLE - RS_SAMPLE % k)
    rs = reedsolo.RSCodec(n - k, nsize=n)
    t_enc = timed(lambda: rs.encode(sample))
    coded = rs.encode(sample)
    lost = list(range(min(2, n - k)))  # the first data bytes of every codeword
    words = []
    for c in range(0, len(coded), n):
        word = bytearray(coded[c : c + n])
        for p in lost:
            word[p] = 0
        words.append(word)
    out: list[bytes] = []

    def dec() -> None:
        # One call per codeword: reedsolo's multi-chunk decode filters erase_pos per chunk,
        # which is quadratic in the message length.
        out.append(
            b"".join(bytes(rs.decode(w, erase_pos=lost, only_erasures=True)[0]) for w in words)
        )

    t_dec = timed(dec)
    assert out[0] == sample, "reedsolo round trip failed"
    return mbps(len(sample), t_enc), mbps(len(sample), t_dec)


def bench_one(data: bytes, k: int, n: int, repeat: int, threads: int | None) -> dict[str, float]:
    size = len(data)
    lost = min(2, n - k)
    kept = list(range(lost, k)) + list(range(k, k + lost))
    codec = Codec(k, n)
    ours = encode(data, k, n, threads=threads)
    assert decode({i: ours[i] for i in kept}, k, n, size, threads=threads) == data
    times: dict[str, list[float]] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        times.setdefault(name, []).append(timed(fn))

    have = {i: ours[i] for i in kept}
    data_shares = {i: ours[i] for i in range(k)}
    parity = list(range(k, n))
    missing = list(range(lost))
    if zfec is not None:
        zblocks = zfec_job_encode(data, k, n)
        # zfec's parity is a different (Vandermonde) code; the data shares must agree.
        assert zblocks[:k] == ours[:k], "zfec and corestate split the data differently"
        zkept = [zblocks[i] for i in kept]
        assert zfec_job_decode(zkept, kept, k, n, size) == data
        zenc = zfec.Encoder(k, n)
        zdec = zfec.Decoder(k, n)
    for _ in range(repeat):
        run("enc", lambda: encode(data, k, n, threads=threads))
        run("dec", lambda: decode(have, k, n, size, threads=threads))
        run("enc_codec", lambda: codec.rebuild(data_shares, parity, threads=threads))
        run("dec_codec", lambda: codec.rebuild(have, missing, threads=threads))
        if zfec is not None:
            run("z_enc", lambda: zfec_job_encode(data, k, n))
            run("z_dec", lambda: zfec_job_decode(zkept, kept, k, n, size))
            run("z_enc_codec", lambda: zenc.encode(ours[:k], parity))
            run("z_dec_codec", lambda: zdec.decode(zkept, kept))
    return {name: mbps(size, statistics.median(ts)) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 MiB only, 3 repeats")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--threads", type=int, default=None, help="corestate threads (default: auto)")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated MiB, e.g. 1,16")
    args = ap.parse_args(argv)
    sizes = [1 << 20] if args.quick else SIZES
    if args.sizes:
        sizes = [int(s) << 20 for s in args.sizes.split(",")]
    repeat = 3 if args.quick and args.repeat == 5 else args.repeat
    rng = np.random.default_rng(20251125)

    print(
        f"# corestate.erasure vs zfec {getattr(zfec, '__version__', 'missing')} vs reedsolo; "
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, corestate threads={args.threads or 'auto'}, "
        f"median of {repeat}"
    )
    if zfec is None:
        print("# zfec is not installed: pip install zfec (zfec columns are empty)")
    rs_rates = {code: reedsolo_rates(*code, rng) for code in CODES}
    header = (
        "| size | k/n | encode MB/s: corestate | zfec | reedsolo | x zfec "
        "| decode MB/s: corestate | zfec | reedsolo | x zfec "
        "| codec only, enc: corestate | zfec | x | dec: corestate | zfec | x |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    worst = float("inf")
    for size in sizes:
        data = rng.bytes(size)
        for k, n in CODES:
            r = bench_one(data, k, n, repeat, args.threads)
            rs_enc, rs_dec = rs_rates[(k, n)]

            def ratio(a: str, b: str, r: dict[str, float] = r) -> str:
                return f"{r[a] / r[b]:.2f}" if b in r else "-"

            def z(name: str, r: dict[str, float] = r) -> str:
                return f"{r[name]:.0f}" if name in r else "-"

            for a in ("enc", "dec", "enc_codec", "dec_codec"):
                b = "z_" + a
                if b in r:
                    worst = min(worst, r[a] / r[b])
            print(
                f"| {size >> 20} MiB | {k}/{n} "
                f"| {r['enc']:.0f} | {z('z_enc')} | {rs_enc:.2f} | {ratio('enc', 'z_enc')} "
                f"| {r['dec']:.0f} | {z('z_dec')} | {rs_dec:.2f} | {ratio('dec', 'z_dec')} "
                f"| {r['enc_codec']:.0f} | {z('z_enc_codec')} | {ratio('enc_codec', 'z_enc_codec')} "
                f"| {r['dec_codec']:.0f} | {z('z_dec_codec')} | {ratio('dec_codec', 'z_dec_codec')} |",
                flush=True,
            )
    if worst != float("inf"):
        print(f"# lowest corestate/zfec ratio in this run: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
