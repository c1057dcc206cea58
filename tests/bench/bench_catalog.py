#!/usr/bin/env python3
"""Catalog benchmark (issue 5): two replicas of a 1M-entry catalog that differ in 1%,
converged by the real 3-message sync of two ``GroupNode``s on sqlite; memory per entry of a
loaded catalog; cold and warm load of a 1M-entry ``group.db``.

``python tests/bench/bench_catalog.py [--entries 1000000] [--diff 0.01] [--workdir DIR]``

The data: a group of 10 members, each with a realistic log (what ~1000-share backup runs
write: per batch of 1000 entries one sealed snapshot record, one capacity advert and
placement records ``b"p" + pack id + share index`` -> 2-byte holder ref), signed with the
members' real keys. Replica A (member 1) and replica B (member 2) each hold ``--entries``
log entries: a common part of ``entries * (1 - diff/2)``, and ``entries * diff/2`` of their
own, A ahead on members 1-5, B ahead on members 6-10. The symmetric difference is
``entries * diff`` (1% of 1M = 10,000 entries, half each way).

What one run measures, in this order (MB = 10^6 bytes):

1. **write**: both replicas saved in their own ``group.db`` through ``GroupNode._save``;
2. **cold load**: A's database fsynced, evicted from the page cache with
   ``posix_fadvise(DONTNEED)`` (residency checked with ``fincore`` when present), then
   ``GroupNode(path, keys)`` timed; then closed and opened again (warm). RSS delta of the
   cold load, per entry;
3. **pure-core exchange**: ``node.core.sync`` hello/answer/finish/absorb on in-memory
   copies of the two catalogs (no sqlite), for the cost of the decisions alone;
4. **GroupNode exchange**: ``sync_open -> sync_reply -> sync_finish -> sync_absorb``,
   each message as it goes on the wire (``encode_frame(messages.encode(msg))``, decoded by
   the receiver with ``protocol.group.decode``); bytes of each frame, seconds of each step,
   sqlite rows written. Then both replicas must hold identical version vectors and
   entries (in memory and in sqlite), and a second exchange must carry no batch;
5. **memory per entry**: ``tracemalloc`` around ``Catalog.load`` of A's rows.

Baselines, computed from the same replicas: the payload alone (keys + values of the
differing entries, no signatures, no framing), and a full-state transfer (every signed
batch of each side, as batches are the unit a replica can verify). Not a test: nothing
here runs under pytest. Timings on a shared 2-core machine vary by 20% or more.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blake3 import blake3
from corestate.node.core import catalog as cat
from corestate.node.core import sync as csync
from corestate.node.group import GroupNode
from corestate.protocol import group as gw
from corestate.protocol import messages
from corestate.protocol.keys import NodeKeys
from corestate.protocol.wire import encode_frame

NOW = 1_764_000_000_000
MEMBERS = 10
PER_BATCH = 1000
TARGET_BYTES = 1_200_000
TARGET_MESSAGES = 3


# -- data ------------------------------------------------------------------------------


def make_log(keys: NodeKeys, first: int, count: int, seq: int, prev: bytes,
             data_key: bytes) -> tuple[list[bytes], int, bytes]:
    """``count`` log entries of one author starting at entry number ``first`` (its seq),
    in batches of up to PER_BATCH; returns (raw batches, next seq, last batch id)."""
    out: list[bytes] = []
    tag = keys.peer_id.encode()
    done = 0
    while done < count:
        n = min(PER_BATCH, count - done)
        b = (first + done) // PER_BATCH
        snap = blake3(tag + b"snap" + (first + done).to_bytes(8, "big")).digest()
        items: list[tuple[bytes, bytes | None]] = []
        if n >= 2:
            items.append((cat.snapshot_key(snap),
                          cat.seal_value(data_key, keys.peer_id, cat.snapshot_key(snap),
                                         b"\xa4" + bytes(180), nonce=snap[:12])))
            items.append((b"c", (1_000_000_000_000 - b).to_bytes(8, "big") + b"site-a/host-1"))
        for i in range(n - len(items)):
            e = first + done + i
            pack = blake3(tag + e.to_bytes(8, "big")).digest()
            items.append((cat.placement_key(pack, e % 6), (e % 24).to_bytes(2, "big")))
        batch = cat.sign_batch(keys.signing_key, epoch=0, seq_first=seq, prev=prev,
                               hlc=(NOW + b) << 16, entries=items)
        out.append(batch.raw)
        seq, prev = batch.seq_last + 1, batch.batch_id
        done += n
    return out, seq, prev


def build(entries: int, diff: float, keys: list[NodeKeys]) -> tuple[list[bytes], list[bytes], list[bytes], dict[str, Any]]:
    """(common batches, A's own, B's own, facts)."""
    half = round(entries * diff / 2)
    common_total = entries - half
    common: list[bytes] = []
    own_a: list[bytes] = []
    own_b: list[bytes] = []
    split_common = [common_total // MEMBERS + (1 if i < common_total % MEMBERS else 0)
                    for i in range(MEMBERS)]
    side = MEMBERS // 2
    split_own = [half // side + (1 if i < half % side else 0) for i in range(side)]
    for i, k in enumerate(keys):
        raws, seq, prev = make_log(k, 0, split_common[i], 1, cat.ZERO_ID, bytes(32))
        common += raws
        extra = split_own[i % side]
        raws, _, _ = make_log(k, split_common[i], extra, seq, prev, bytes(32))
        (own_a if i < side else own_b).extend(raws)
    return common, own_a, own_b, {"common": common_total, "own": half}


def payload_bytes(raws: list[bytes]) -> int:
    """Keys + values of the entries of these batches: the information itself."""
    n = 0
    for r in raws:
        for k, v in cat.Batch.decode(r).entries:
            n += len(k) + (len(v) if v is not None else 0)
    return n


# -- measuring helpers ---------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def db_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def evict(path: Path) -> str:
    """fsync and drop the page cache of the database files; what fincore says after."""
    for p in db_files(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if shutil.which("fincore") is None:
        return "fincore not installed: residency not checked"
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE",
                          str(path)], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.split():
        return f"fincore failed: {out.stderr.strip()}"
    res, size = (int(x) for x in out.stdout.split()[:2])
    return f"{res / 1e6:.1f} MB of {size / 1e6:.1f} MB resident after eviction"


def timed(fn: Callable[..., Any], log: list[float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            log.append(time.perf_counter() - t)
    return wrapper


def frame(msg: messages.Message) -> tuple[bytes, messages.Message]:
    """The frame as it goes on the wire, and the message the receiver decodes from it."""
    payload = messages.encode(msg)
    f = encode_frame(payload)
    if len(payload) > gw.SYNC_MAX_FRAME:
        raise SystemExit(f"a {type(msg).__name__} of {len(payload)} bytes exceeds "
                         f"SYNC_MAX_FRAME = {gw.SYNC_MAX_FRAME}")
    return f, gw.decode(payload)


def load_rows(db: sqlite3.Connection) -> cat.Catalog:
    """Exactly what GroupNode.__init__ does to load its catalog."""
    return cat.Catalog.load(
        db.execute("SELECT author, epoch, seq, head FROM authors").fetchall(),
        db.execute("SELECT author, epoch, seq_first, seq_last, id, raw FROM batches "
                   "ORDER BY author, epoch, seq_first").fetchall(),
        db.execute("SELECT author, key, seq, value, hlc FROM entries").fetchall(),
        db.execute("SELECT author, epoch, seq, kept, other, reason FROM forks").fetchall(),
    )


def clone(c: cat.Catalog) -> cat.Catalog:
    return cat.Catalog.load(c.author_rows(), c.batch_rows(), c.entry_rows(), c.fork_rows(),
                            c.clock)


def log_entries(c: cat.Catalog) -> int:
    return sum(seq for _, seq in c.version_vector().values())


def live_keys(c: cat.Catalog) -> int:
    return sum(len(c.entries(a)) for a in c.authors())


def sqlite_state(db: sqlite3.Connection) -> tuple[dict[str, tuple[int, int]], int]:
    vv = {a: (e, s) for a, e, s in db.execute("SELECT author, epoch, seq FROM authors")}
    return vv, db.execute("SELECT count(*) FROM entries").fetchone()[0]


def mb(n: float) -> str:
    return f"{n / 1e6:.3f} MB"


# -- the run ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--diff", type=float, default=0.01)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the two group.db go (default: a temporary folder, removed)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-", dir=args.workdir))
    try:
        return run(args.entries, args.diff, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def run(entries: int, diff: float, work: Path) -> int:
    keys = [NodeKeys.from_root(bytes([i + 1]) * 32) for i in range(MEMBERS)]
    members = frozenset(k.peer_id for k in keys)
    rows: list[tuple[str, str, str]] = []  # (measure, CoreState, baseline / note)
    notes: list[str] = []

    step(f"signing {entries} + {round(entries * diff / 2)} log entries of {MEMBERS} members")
    t = time.perf_counter()
    common, own_a, own_b, facts = build(entries, diff, keys)
    sign_s = time.perf_counter() - t

    step("applying them to replicas A and B (signatures verified)")
    t = time.perf_counter()
    ca = cat.Catalog()
    for r in common:
        assert ca.apply(r, members=members, now_ms=NOW).kind == "applied"
    cb = clone(ca)
    for c, own in ((ca, own_a), (cb, own_b)):
        for r in own:
            assert c.apply(r, members=members, now_ms=NOW).kind == "applied"
    apply_s = (time.perf_counter() - t)
    assert log_entries(ca) == log_entries(cb) == entries, (log_entries(ca), entries)
    n_live = live_keys(ca)

    step("creating the group and writing both group.db")
    pa, pb = work / "a" / "group.db", work / "b" / "group.db"
    pa.parent.mkdir()
    pb.parent.mkdir()
    ga = GroupNode(pa, keys[0])
    group = ga.create("bench")
    for k in keys[1:]:
        ga._sign(kind="add", subject=k.peer_id, role="member")
    gb = GroupNode(pb, keys[1])
    from corestate.node.core import membership as mem
    gb.adopt(group, [mem.encode_op(op) for op in ga.ops.values()])
    authors = set(members)
    t = time.perf_counter()
    ga.catalog = ca
    ga._save(authors)
    write_s = time.perf_counter() - t
    gb.catalog = cb
    gb._save(authors)
    ga.close()
    gb.close()
    del ca, cb, ga, gb
    gc.collect()
    db_size = sum(p.stat().st_size for p in db_files(pa))

    step("cold load of A's group.db")
    residency = evict(pa)
    r0 = rss()
    t = time.perf_counter()
    ga = GroupNode(pa, keys[0])
    cold_s = time.perf_counter() - t
    gc.collect()
    rss_delta = rss() - r0
    ga.close()
    del ga
    gc.collect()
    step("warm load of A's group.db")
    t = time.perf_counter()
    ga = GroupNode(pa, keys[0])
    warm_s = time.perf_counter() - t
    gb = GroupNode(pb, keys[1])
    assert log_entries(ga.catalog) == log_entries(gb.catalog) == entries

    # Baselines from the replicas as they are before the exchange.
    diff_raws_a = [b.raw for b in ga.catalog.missing_for(gb.catalog.version_vector())]
    diff_raws_b = [b.raw for b in gb.catalog.missing_for(ga.catalog.version_vector())]
    diff_entries = sum(len(cat.Batch.decode(r).entries) for r in diff_raws_a + diff_raws_b)
    minimum = payload_bytes(diff_raws_a + diff_raws_b)
    full_a = sum(len(r[-1]) for r in ga.catalog.batch_rows())
    full_b = sum(len(r[-1]) for r in gb.catalog.batch_rows())
    full_msgs = 1 + sum(-(-n // gw.MAX_CATALOG_BYTES) for n in (full_a, full_b))

    step("pure-core exchange on in-memory copies")
    xa, xb = clone(ga.catalog), clone(gb.catalog)
    t = time.perf_counter()
    m1 = csync.hello(xa)
    m2 = csync.answer(xb, m1)
    m3, verdicts, complete = csync.finish(xa, m2, members=members, now_ms=NOW)
    pushed = csync.absorb(xb, m3, members=members, now_ms=NOW) if m3 is not None else []
    core_s = time.perf_counter() - t
    core_bytes = len(m1) + len(m2) + (len(m3) if m3 else 0)
    # One pure exchange converges unless a message hit its budget (then it is a prefix).
    core_ok = {v.kind for v in verdicts + pushed} <= {"applied"} and (
        not complete or (xa.version_vector() == xb.version_vector() and xa.state() == xb.state()))
    pushed_msg = csync.decode(m3) if m3 is not None else csync.Push(())
    core_complete = complete and isinstance(pushed_msg, csync.Push) and len(
        pushed_msg.batches) == len(diff_raws_a)
    del xa, xb
    gc.collect()

    step("GroupNode exchange: sync_open -> sync_reply -> sync_finish -> sync_absorb")
    saves: list[float] = []
    ga._save = timed(ga._save, saves)
    gb._save = timed(gb._save, saves)
    changes0 = ga.db.total_changes + gb.db.total_changes
    exchanges: list[dict[str, Any]] = []
    start = time.perf_counter()
    while True:
        ex: dict[str, Any] = {"frames": [], "steps": []}
        t = time.perf_counter()
        f1, open_ = frame(ga.sync_open())
        ex["steps"].append(time.perf_counter() - t)
        t = time.perf_counter()
        f2, reply = frame(gb.sync_reply(keys[0].peer_id, open_))
        ex["steps"].append(time.perf_counter() - t)
        t = time.perf_counter()
        push, v1 = ga.sync_finish(reply)
        f3, push_rx = frame(push)
        ex["steps"].append(time.perf_counter() - t)
        ex["frames"] += [f1, f2]
        t = time.perf_counter()
        v2: list[Any] = []
        if push.ops or push.catalog:
            ex["frames"].append(f3)
            v2 = gb.sync_absorb(keys[1].peer_id, push_rx)
        ex["steps"].append(time.perf_counter() - t)
        ex["reply_complete"] = csync.decode(reply.catalog).complete
        ex["reply_batches"] = len(csync.decode(reply.catalog).batches)
        ex["push_batches"] = len(csync.decode(push.catalog).batches) if push.catalog else 0
        ex["verdicts"] = {v.kind for v in v1 + v2}
        exchanges.append(ex)
        if ga.catalog.version_vector() == gb.catalog.version_vector() or len(exchanges) >= 50:
            break
    seconds = time.perf_counter() - start
    rows_written = ga.db.total_changes + gb.db.total_changes - changes0
    frames = [f for ex in exchanges for f in ex["frames"]]
    wire = sum(map(len, frames))
    n_msgs = len(frames)

    step("checking convergence, in memory and in sqlite")
    same_vv = ga.catalog.version_vector() == gb.catalog.version_vector()
    same_entries = ga.catalog.state() == gb.catalog.state()
    union = entries + round(entries * diff / 2)
    sa, sb = sqlite_state(ga.db), sqlite_state(gb.db)
    same_db = sa == sb and sa[0] == ga.catalog.version_vector() and sa[1] == live_keys(ga.catalog)
    converged = same_vv and same_entries and same_db and log_entries(ga.catalog) == union
    # A second exchange: nothing left to send.
    g1, o2 = frame(ga.sync_open())
    g2, r2 = frame(gb.sync_reply(keys[0].peer_id, o2))
    p2, _ = ga.sync_finish(r2)
    idle_msgs = 2 + (1 if (p2.ops or p2.catalog) else 0)
    idle_bytes = len(g1) + len(g2) + (len(frame(p2)[0]) if idle_msgs == 3 else 0)
    ga.close()
    gb.close()
    del ga, gb
    gc.collect()

    step("memory per entry: tracemalloc around Catalog.load")
    db = sqlite3.connect(str(pa))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    c = load_rows(db)
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_after = log_entries(c)
    live_after = live_keys(c)
    raw_kept = sum(len(r[-1]) for r in c.batch_rows())
    del c
    db.close()
    per_entry = (cur - base) / live_after

    # -- the table ------------------------------------------------------------------
    ex0 = exchanges[0]
    sizes = [len(f) for f in ex0["frames"]]
    names = ["SyncOpen", "SyncReply", "SyncPush"][: len(sizes)]
    print()
    print(f"Catalog benchmark: {entries:,} log entries per replica ({n_live:,} live keys), "
          f"{MEMBERS} members, batches of {PER_BATCH}; replicas differ in {diff:.2%}: "
          f"A and B each hold {facts['own']:,} entries the other lacks (A ahead on members "
          f"1-5, B on 6-10), {diff_entries:,} differing entries in all.")
    print(f"Built in {sign_s:.1f} s (signing) + {apply_s:.1f} s (verify and apply, both "
          f"replicas); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    print()
    rows += [
        ("messages to converge", f"{n_msgs} in {len(exchanges)} exchange(s)",
         f"full-state transfer: >= {full_msgs} (frames of <= {gw.MAX_CATALOG_BYTES:,} B)"),
        ("bytes on the wire", f"{wire:,} ({'exchange 1: ' if len(exchanges) > 1 else ''}{' + '.join(f'{n} {s:,}' for n, s in zip(names, sizes, strict=True))})",
         f"full state {full_a + full_b:,}; keys+values alone {minimum:,}"),
        ("bytes per differing entry", f"{wire / diff_entries:.1f}",
         f"full state {(full_a + full_b) / diff_entries:.0f}; keys+values {minimum / diff_entries:.1f}"),
        ("seconds to converge (GroupNode, sqlite)", f"{seconds:.2f}",
         f"of which _save {sum(saves):.2f} s, {rows_written:,} sqlite rows written"),
        ("  per step: open / reply / finish / absorb",
         " / ".join(f"{s:.2f}" for s in ex0["steps"]), "finish and absorb include _save"),
        ("seconds to converge (pure core, no sqlite)", f"{core_s:.2f}",
         f"{core_bytes:,} B of sync messages, complete={core_complete}"),
        ("converged (vectors, entries, sqlite)", "yes" if converged else "NO",
         f"{union:,} log entries each after"),
        ("a second exchange", f"{idle_msgs} messages, {idle_bytes:,} B", "no batch sent"),
        ("memory per live key (tracemalloc)", f"{per_entry:.0f} B",
         f"{(cur - base) / 1e6:.0f} MB for {live_after:,} keys; peak during load "
         f"{(peak - base) / 1e6:.0f} MB; signed batches kept {raw_kept / live_after:.0f} B/key"),
        ("RSS delta of a GroupNode load", f"{rss_delta / entries:.0f} B/entry",
         f"{rss_delta / 1e6:.0f} MB (row lists included)"),
        ("cold load of group.db (GroupNode())", f"{cold_s:.2f} s",
         f"{db_size / 1e6:.0f} MB db; {residency}"),
        ("warm load of the same db", f"{warm_s:.2f} s", ""),
        ("write of the db (_save, all authors)", f"{write_s:.2f} s", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"| {'measure':<{w0}} | {'CoreState':<{w1}} | baseline / note")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|{'-' * 20}")
    for a, b, cnote in rows:
        print(f"| {a:<{w0}} | {b:<{w1}} | {cnote}")
    print()
    for i, ex in enumerate(exchanges):
        notes.append(f"exchange {i + 1}: reply carried {ex['reply_batches']} batches "
                     f"(complete={ex['reply_complete']}), push {ex['push_batches']}; "
                     f"{sum(map(len, ex['frames'])):,} B in {len(ex['frames'])} frames; "
                     f"verdicts {sorted(ex['verdicts'])}")
    budget = csync.MAX_MESSAGE_BYTES // 2
    notes.append(f"limits: a reply or push carries at most {budget:,} B of batches "
                 f"(node.core.sync: MAX_MESSAGE_BYTES // 2), inside CatalogBytes <= "
                 f"{gw.MAX_CATALOG_BYTES:,} B and a frame <= {gw.SYNC_MAX_FRAME:,} B; this "
                 f"run's diff needed {sum(map(len, diff_raws_b)):,} B (B -> A) and "
                 f"{sum(map(len, diff_raws_a)):,} B (A -> B)")
    for n in notes:
        print(n)
    print()
    verdict_bytes = wire <= TARGET_BYTES
    verdict_msgs = n_msgs <= TARGET_MESSAGES
    print(f"target bytes <= {TARGET_BYTES:,}: {'PASS' if verdict_bytes else 'FAIL'} ({wire:,})")
    print(f"target messages <= {TARGET_MESSAGES}: {'PASS' if verdict_msgs else 'FAIL'} ({n_msgs})")
    print(f"converged: {'PASS' if converged and core_ok else 'FAIL'} "
          f"(GroupNode replicas identical: {converged}; pure-core verdicts sound: {core_ok})")
    assert n_after == union
    return 0 if verdict_bytes and verdict_msgs and converged and core_ok else 1


if __name__ == "__main__":
    sys.exit(main())
