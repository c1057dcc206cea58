"""The anomaly model's per-file signals on the real files of this machine (issue 14).

The synthetic corpus (simulations/anomaly) imitates some formats; this checks the signals
on real bytes: for real files of common types found under the given roots, the share judged
*suspicious* (of the files each variant changes) when (a) re-written as a different real file of the same type (a benign
re-save), and when (b) encrypted whole in place, (c) with the first 4 KiB kept, (d) every
other 64 KiB block (the header and, half the time, the tail kept), (e) base64-masked.

    .venv/bin/python tests/bench/bench_anomaly_real.py [ROOT ...] [--per-type 40]

Reads at most 64 KiB of each file (the probe's own sample plan); writes nothing.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
from collections import defaultdict

from corestate.node.core import anomaly as an

TYPES = ("gz", "zip", "jar", "whl", "docx", "xlsx", "pdf", "png", "jpg", "mp3", "ogg", "txt",
         "py", "json", "html", "so", "sqlite", "db")


def _sample(path: str, size: int) -> list[bytes]:
    with open(path, "rb") as f:
        out = []
        for o, n in an.sample_plan(size):
            f.seek(o)
            out.append(f.read(n))
        return out


def _variant(kind: str, blocks: list[bytes], plan: list[tuple[int, int]], rng: random.Random
             ) -> list[bytes]:
    out = []
    for (o, n), b in zip(plan, blocks, strict=True):
        if kind == "whole" or (kind == "head-kept" and o >= 4096):
            out.append(rng.randbytes(len(b)))
        elif kind == "head-kept" and o < 4096 < o + n:
            out.append(b[:4096 - o] + rng.randbytes(o + n - 4096))
        elif kind == "stripes" and (o // 65536) % 2 == 1:
            out.append(rng.randbytes(len(b)))
        elif kind == "base64":
            out.append(base64.encodebytes(rng.randbytes(len(b) * 3 // 4 + 4))[:len(b)])
        else:
            out.append(b)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="*", default=["/usr/share", "/usr/lib"])
    ap.add_argument("--per-type", type=int, default=40)
    a = ap.parse_args()
    rng = random.Random(14)
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for root in a.roots:
        for dp, _, fn in os.walk(root):
            for name in fn:
                ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
                if ext in TYPES and len(found[ext]) < a.per_type * 5:
                    p = os.path.join(dp, name)
                    try:
                        if os.path.isfile(p) and not os.path.islink(p):
                            size = os.path.getsize(p)
                            if size >= 512:
                                found[ext].append((p, size))
                    except OSError:
                        pass
    kinds = ("resave", "whole", "head-kept", "stripes", "base64")
    print("| type | files | " + " | ".join(kinds) + " |")
    print("|---|---:|" + "---:|" * len(kinds))
    total: dict[str, list[int]] = {k: [0, 0] for k in kinds}
    for ext in TYPES:
        files = found.get(ext, [])
        rng.shuffle(files)
        files = files[:a.per_type]
        if len(files) < 2:
            continue
        hits = dict.fromkeys(kinds, 0)
        applied = dict.fromkeys(kinds, 0)  # files the variant changes (stripes: > 64 KiB)
        for i, (p, size) in enumerate(files):
            try:
                blocks = _sample(p, size)
                other_p, other_size = files[(i + 1) % len(files)]
                other = _sample(other_p, other_size)
            except OSError:
                continue
            old = an.probe(blocks)
            plan = an.sample_plan(size)
            for kind in kinds:
                if kind == "resave":
                    new_blocks, new_size = other, other_size
                else:
                    new_blocks, new_size = _variant(kind, blocks, plan, rng), size
                    if new_blocks == blocks:
                        continue
                applied[kind] += 1
                new = an.probe(new_blocks)
                raw = sum(map(len, new_blocks))
                obs = an.FileObs(path=f"d/f.{ext}", change="changed", size_old=size,
                                 size_new=new_size, old=old, new=new, new_bytes=raw,
                                 new_compressed=raw if kind != "resave" else raw // 2,
                                 kept_share=0.0)
                if an.file_signals(obs).suspicious:
                    hits[kind] += 1
        n = len(files)
        for k in kinds:
            total[k][0] += hits[k]
            total[k][1] += applied[k]
        print(f"| {ext} | {n} | " + " | ".join(
            f"{hits[k] / applied[k]:.0%} of {applied[k]}" if applied[k] else "—"
            for k in kinds) + " |")
    print("| all | | " + " | ".join(f"{t[0] / max(1, t[1]):.1%}" for t in total.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
