"""``advise schedule|capacity|tiering``: the optimizer's advice from this node's history.

The numbers come from the home: each backup's volumes (``HOME/anomaly.db``, written by
node/app/anomaly.py), the store's packs and where their shares went (index, ledger), the
daemon's schedule. The computations are pure (node/core/advise.py); this module only gathers
the facts and turns the advice into the typed result.
"""

from __future__ import annotations

import os
import shutil
import time

from corestate.node import anomalystate as st
from corestate.node.app import Context, Operation
from corestate.node.core import advise as core
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

TOPICS = ("schedule", "capacity", "tiering")


def advise(node: LocalNode, call: c.AdviseCall, ctx: Context) -> c.AdviseResult:
    if call.topic not in TOPICS:
        raise CoreStateError(f"no advice on {call.topic!r}", hint="ask for one of: " + ", ".join(TOPICS))
    db = st.AnomalyDB(node.home.path)
    try:
        history = db.volumes()
    finally:
        db.close()
    now = time.time_ns()
    if call.topic == "schedule":
        backups = [(v.time_ns, v.bytes_changed) for v in history]
        every = node.cfg.backup_every
        per_day = max(1, min(4, round(86400 / every))) if every else 1
        offset = time.localtime(now / 1e9).tm_gmtoff
        a = core.schedule(backups, offset, per_day)
        a.numbers["backups_per_day_now"] = str(per_day)
    elif call.topic == "capacity":
        sizes = [(v.time_ns, v.store_bytes) for v in history]
        store = node.home.store_dir(node.cfg)
        if call.quota:
            cap, what = call.quota, f"quota of {call.quota} bytes"
        else:
            usage = shutil.disk_usage(store if store.exists() else node.home.path)
            # The disk fills when the store has grown by what is free now.
            current = sizes[-1][1] if sizes else 0
            cap, what = current + usage.free, f"disk of {store}"
        a = core.capacity(sizes, now, cap, what)
    else:
        a = core.tiering(_pack_ages(node, now), int(node.cfg.anomaly_cold_after * 1e9),
                         len(node.trusted_peers()))
    return c.AdviseResult(
        topic=call.topic, advice=tuple(x[:4096] for x in a.advice[:32]), columns=a.columns[:16],
        rows=tuple(tuple(x[:128] for x in r[:16]) for r in a.rows[:512]),
        numbers={k[:64]: v[:128] for k, v in list(a.numbers.items())[:64]})


def _pack_ages(node: LocalNode, now: int) -> list[core.PackAge]:
    """Data packs, their age (when their shares were placed, else the pack file's time)
    and their code."""
    placed: dict[bytes, int] = {}
    for pack, t in node.ledger.db.execute("SELECT pack, MIN(time_ns) FROM shares GROUP BY pack"):
        placed[bytes(pack)] = int(t)
    codes = {bytes(p): (k, n) for p, k, n in node.ledger.db.execute("SELECT pack, k, n FROM coded")}
    data = [bytes(r[0]) for r in node.repo.db.execute("SELECT DISTINCT pack FROM blobs WHERE kind = 0")]
    sizes = {bytes(p): s for p, s in node.repo.db.execute("SELECT id, size FROM packs")}
    store = node.repo.store
    out = []
    for pid in data:
        t = placed.get(pid)
        if t is None:
            try:
                t = os.stat(store.path(pid)).st_mtime_ns
            except (OSError, AttributeError):
                continue
        k, n = codes.get(pid, (0, 0))
        out.append(core.PackAge(size=sizes.get(pid, 0), age_ns=max(0, now - t), k=k, n=n))
    return out


OPERATIONS: tuple[Operation, ...] = (Operation(c.AdviseCall, advise, lock=False),)

__all__ = ["OPERATIONS", "TOPICS", "advise"]
