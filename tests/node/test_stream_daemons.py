"""Streaming backup with real daemons on loopback (an owner and three holders, 1 MiB
packs): packs leave while the engine still runs, a slow holder holds the engine back
(bounded local packs and memory), and an owner killed mid-backup loses nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from corestate.node.app.backup import STREAM_IN_FLIGHT
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from meshutil import (
    MeshShape,
    last_json,
    ledger_codes,
    ledger_rows,
    popen,
    random_tree,
    restored,
    store_packs,
    wait_for,
)

# The module's ``mesh`` (tests/node/conftest.py); a test that stopped a holder (SIGSTOP)
# lets it go on at the end.
MESH = MeshShape("stream", 4)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mesh_up")]

OWNER = 0


def snapshot_count(home: Path) -> int:
    db = sqlite3.connect(f"file:{home / 'index.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM snapshots").fetchone()[0])
    finally:
        db.close()


def placed_new(home: Path, before: set[bytes], n: int) -> set[bytes]:
    """New packs with all n shares acknowledged."""
    by_pack: dict[bytes, set[int]] = {}
    for r in ledger_rows(home):
        if r.pack not in before:
            by_pack.setdefault(r.pack, set()).add(r.index)
    return {p for p, idx in by_pack.items() if len(idx) >= n}


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_packs_leave_while_the_engine_runs_and_a_killed_owner_loses_nothing(
        mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[OWNER]
    src = random_tree(tmp_path / "src", 48, seed=11)
    before = set(ledger_codes(owner.home))
    snaps = snapshot_count(owner.home)
    proc = popen(mesh, owner, "backup", str(src), "--k", "2", "--n", "3", "--json")
    try:
        # Packs fully placed while no snapshot record exists yet: the upload overlaps the
        # engine (before streaming, every pack waited for the snapshot record).
        def overlapping() -> bool:
            return len(placed_new(owner.home, before, 3)) >= 3 and snapshot_count(owner.home) == snaps
        wait_for(lambda: overlapping() or proc.poll() is not None, 120, "packs placed mid-backup")
        assert proc.poll() is None and snapshot_count(owner.home) == snaps, \
            "the backup ended before its packs were seen leaving mid-run"
        streamed = placed_new(owner.home, before, 3)
        mesh.stop(OWNER, signal.SIGKILL)  # the owner crashes mid-backup
    finally:
        proc.kill()
        proc.communicate()
    # What landed stays landed: indexed, placed, its local copy gone only with n acks.
    codes = ledger_codes(owner.home)
    local = store_packs(owner.home)
    for p in streamed:
        assert codes[p][:2] == (2, 3)
    orphans = []
    for p, (_, _, is_local) in codes.items():
        if p not in before and not is_local:
            assert p in placed_new(owner.home, before, 3), "a local copy went before its n acks"
            if p.hex() in local:
                orphans.append(p)
    # The ledger says "not local" before the file goes (never the other way round, which
    # would leave a ledger pointing at nothing): a kill between the two leaves a harmless
    # extra copy of a pack being dropped at that moment, at most one per upload in flight.
    assert len(orphans) <= STREAM_IN_FLIGHT, orphans
    rows_before = {(r.pack, r.index, r.peer) for r in ledger_rows(owner.home) if r.pack in streamed}

    mesh.start(OWNER)
    p = mesh.run(owner, "backup", str(src), "--k", "2", "--n", "3", "--json", check=False)
    assert p.returncode == 0, p.stderr
    out = last_json(p)
    assert out["mesh"]["safe"], out["mesh"]
    # The packs that landed in the killed run were reused, not sent again.
    rows_after = {(r.pack, r.index, r.peer) for r in ledger_rows(owner.home) if r.pack in streamed}
    assert rows_after == rows_before
    assert out["bytes_added"] < 48 * (1 << 20) - len(streamed) * (1 << 20) // 2, out
    target = tmp_path / "r"
    mesh.run(owner, "restore", out["snapshot_id"], "--target", str(target))
    assert differences(src, restored(target, src)) == []


def test_a_stalled_holder_holds_the_engine_back(mesh: LocalMesh, tmp_path: Path) -> None:
    owner, slow = mesh.nodes[OWNER], mesh.nodes[3]
    src = random_tree(tmp_path / "src", 96, seed=12)
    before_local = store_packs(owner.home)
    assert owner.proc is not None and slow.proc is not None
    proc = popen(mesh, owner, "backup", str(src), "--k", "2", "--n", "3", "--json")
    most = 0
    try:
        wait_for(lambda: len(store_packs(owner.home) - before_local) >= 2 or proc.poll() is not None, 60,
                 "the first packs landed")
        os.kill(slow.proc.pid, signal.SIGSTOP)  # every pack needs a share on it (n = 3 holders)
        t_end = time.monotonic() + 5
        while time.monotonic() < t_end and proc.poll() is None:
            most = max(most, len(store_packs(owner.home) - before_local))
            time.sleep(0.05)
        assert proc.poll() is None, "the backup ended while a holder it needs was stopped"
        os.kill(slow.proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        os.kill(slow.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # 96 packs of data, but the engine waited. What may land meanwhile: the stream's queue
    # (4) and packs in flight (3), the engine's window of file jobs (2 per worker, 4 MiB
    # each: 24 packs of 1 MiB with 3 workers), each worker's open and write-behind pack (6),
    # tree packs: about 40.
    hwm = vm_hwm_kib(owner.proc.pid)
    print(f"most local packs while stalled: {most} of 96; owner VmHWM {hwm} KiB")
    assert 0 < most <= 48, most
    assert proc.returncode == 0, stderr
    out = last_json(stdout)
    assert out["mesh"]["safe"], out["mesh"]
    target = tmp_path / "r"
    mesh.run(owner, "restore", out["snapshot_id"], "--target", str(target))
    assert differences(src, restored(target, src)) == []


def home_bytes(home: Path) -> int:
    """What the home holds on disk (the test harness's daemon log aside)."""
    total = 0
    for p in home.rglob("*"):
        try:
            if p.is_file() and p.name != "daemon.log":
                total += p.stat().st_size
        except OSError:
            pass  # a temporary file gone meanwhile
    return total


def test_restore_streams_with_a_small_buffer(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[OWNER]
    src = random_tree(tmp_path / "src", 64, seed=13)
    p = mesh.run(owner, "backup", str(src), "--k", "2", "--n", "3", "--json", check=False)
    assert p.returncode == 0, p.stderr
    out = last_json(p)
    # A buffer of 8 MiB for 64 MiB of remote packs; a fresh daemon, so that its peak memory
    # is this restore's.
    mesh.stop(OWNER)
    cfg = owner.home / "config.toml"
    text = cfg.read_text()
    assert '\nbuffer = "64 MiB"' in text
    cfg.write_text(text.replace('\nbuffer = "64 MiB"', '\nbuffer = "8 MiB"'))
    mesh.start(OWNER)
    base = home_bytes(owner.home)
    target = tmp_path / "r"
    t0 = time.monotonic()
    proc = popen(mesh, owner, "restore", out["snapshot_id"], "--target", str(target))
    most = base
    while proc.poll() is None:
        most = max(most, home_bytes(owner.home))
        time.sleep(0.02)
    took = time.monotonic() - t0
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert differences(src, restored(target, src)) == []
    assert owner.proc is not None
    hwm = vm_hwm_kib(owner.proc.pid)
    print(f"restore of 64 MiB: {took:.1f} s; home grew by at most {(most - base) / 2**20:.2f} MiB; "
          f"owner VmHWM {hwm / 1024:.0f} MiB")
    # Nothing staged: the home grows by its databases' bookkeeping at most, far below the
    # buffer (and the 64 MiB restored).
    assert most - base <= 2 << 20, most - base
    assert hwm <= 256 << 10, hwm  # the bound for the owner daemon, in KiB
