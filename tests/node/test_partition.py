"""The partition test: real daemons, each in its own network namespace (``netmesh``).

Five members of one group, two of them admins, are cut into two halves: {1, 3, 4} and
{2, 5}. Both halves keep backing up; node 3 backs up (its records reach its half only),
then admin 1 removes it. The halves rejoin while node 3 (the stolen laptop) is switched off;
sync rounds must bring every remaining member to the same membership and the same catalog
version vector. Then node 3 comes back and every member refuses it, including those that
were on the other side when it was removed.

The scenario runs once (a module fixture, about a minute and a half); the tests read its outcome.
Needs root and iproute2 (``ip netns``); skips with the reason otherwise.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from corestate.node.peers import AddressBook
from helpers import make_tree
from meshutil import edit_config, last_json, wait_for
from netmesh import NetMesh, unavailable

BACKUP_OK = (0, 3)  # 3: too few peers reachable in this half; the snapshot is still made
HALVES = [[1, 3, 4], [2, 5]]
REMOVED = 3
STAY = [1, 2, 4, 5]


def _sync(mesh: NetMesh, i: int) -> dict[str, Any]:
    """``group sync --json`` on node ``i`` (1-based): per-peer results and the vector."""
    p = mesh.run(mesh.nodes[i - 1], "group", "sync", "--json", check=False, timeout=120)
    assert p.returncode in (0, 3), f"group sync on node {i} exited {p.returncode}: {p.stderr[-2000:]}"
    return last_json(p)


def _members(mesh: NetMesh, i: int) -> dict[str, Any]:
    return last_json(mesh.run(mesh.nodes[i - 1], "group", "members", "--json"))


def _backup(mesh: NetMesh, i: int, src: Path) -> int:
    """A backup on node ``i`` that completes (exit 0, or 3 when too few peers of its half
    answer) and whose snapshot is listed afterwards. Returns the exit code."""
    node = mesh.nodes[i - 1]
    p = mesh.run(node, "backup", str(src), "--json", check=False, timeout=120)
    assert p.returncode in BACKUP_OK, f"backup on node {i} exited {p.returncode}: {p.stderr[-2000:]}"
    snap = last_json(p)["snapshot_id"]
    assert snap in {s["id"] for s in last_json(mesh.run(node, "snapshots", "--json"))}
    return p.returncode


@dataclass
class Outcome:
    """What the scenario saw; each view is (members, removed, vector) of one node."""

    ids: dict[int, str]
    backups: dict[int, int] = field(default_factory=dict)
    seen_across: dict[str, str] = field(default_factory=dict)
    removal_unknown_to_5: bool = False
    live_converged_s: float | None = None
    views: dict[int, Any] = field(default_factory=dict)
    refusals: dict[str, str] | None = None


def _held(mesh: NetMesh, i: int, author: str) -> tuple[int, int] | None:
    """(epoch, seq) of ``author``'s partition that node ``i`` holds, read from its group.db
    (a reader beside the daemon: WAL)."""
    db = sqlite3.connect(mesh.nodes[i - 1].home / "group.db", timeout=10)
    try:
        row = db.execute("SELECT epoch, seq FROM authors WHERE author = ?", (author,)).fetchone()
    finally:
        db.close()
    return None if row is None else (int(row[0]), int(row[1]))


def _views(mesh: NetMesh, which: list[int]) -> dict[int, Any]:
    """One sync round on each of ``which`` (in turn), then each one's view."""
    out = {}
    for i in which:
        vector = _sync(mesh, i)["vector"]
        m = _members(mesh, i)
        out[i] = (m["members"], m["removed"], vector)
    return out


def _live(view: Any, removed: str) -> Any:
    members, gone, vector = view
    return members, gone, {a: v for a, v in vector.items() if a != removed}


def _form_group(mesh: NetMesh) -> None:
    """Node 1 creates the group, node 2 joins as a second admin, 3-5 as members; the
    address books start empty and learn each other's addresses from the group only."""
    for n in mesh.nodes:
        # A dead peer costs a backup or a sync round this long: keep the test short.
        edit_config(n.home, "peer_timeout = 10", "peer_timeout = 3")
        book = AddressBook(n.home / "peers.db")
        try:
            for e in book.all():
                book.remove(e.peer)
        finally:
            book.close()
    mesh.start()
    admin = mesh.nodes[0]
    mesh.run(admin, "group", "create", "office")
    for n in mesh.nodes[1:]:
        role = ["--admin"] if n.index == 1 else []
        token = mesh.run(admin, "group", "invite", *role).stdout.strip().splitlines()[-1]
        mesh.run(n, "group", "join", token)
    # Node 1 knows every add; its round hands them out, then the adverts flow.
    wait_for(lambda: all(all(r == "ok" for r in _sync(mesh, i)["peers"].values()) for i in range(1, 6)),
             60, "every member to sync with every other", every=0.2)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    why = unavailable()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("partition")
    mesh = NetMesh(base / "mesh", 5)
    try:
        mesh.create()
        _form_group(mesh)
        ids = {n.index + 1: n.peer_id for n in mesh.nodes}
        out = Outcome(ids)
        src = make_tree(base / "src")

        mesh.partition(HALVES)
        # Each half sees only itself.
        out.seen_across = _sync(mesh, 1)["peers"]
        # Both halves back up; node 3's records reach node 4 (pushed on write), not the
        # other half.
        for i in (3, 5):
            out.backups[i] = _backup(mesh, i, src)
        wait_for(lambda: _held(mesh, 4, ids[3]) == _held(mesh, 3, ids[3]), 30,
                 "node 4 to hold node 3's records", every=0.2)
        # Admin 1 removes node 3; node 4 learns of it within the half (pushed on write).
        mesh.run(mesh.nodes[0], "group", "remove", ids[3])
        wait_for(lambda: ids[3] in _members(mesh, 4)["removed"], 30, "node 4 to learn of the removal",
                 every=0.2)
        for i in (1, 2):
            out.backups[i] = _backup(mesh, i, src)
        out.removal_unknown_to_5 = ids[3] in _members(mesh, 5)["members"]

        # The halves rejoin while the removed laptop is switched off.
        mesh.stop(REMOVED - 1)
        mesh.heal()
        t = time.monotonic()
        last: dict[int, Any] = {}

        def live_agree() -> bool:
            last.update(_views(mesh, STAY))
            live = [_live(last[i], ids[3]) for i in STAY]
            return all(v == live[0] for v in live)
        try:
            wait_for(live_agree, 90, "the members to converge", every=0.2)
            out.live_converged_s = time.monotonic() - t
            print(f"members converged {out.live_converged_s:.1f} s after the heal")
        except AssertionError:
            pass
        # One more round everywhere, for the full vectors (removed author included).
        out.views = _views(mesh, STAY)

        # Node 3 comes back: everyone refuses it.
        mesh.start(REMOVED - 1)

        def refused() -> dict[str, str] | None:
            peers: dict[str, str] = _sync(mesh, 3)["peers"]
            everyone = {ids[i] for i in STAY}
            out.refusals = peers
            return peers if set(peers) == everyone and all("refused" in r for r in peers.values()) else None
        try:
            wait_for(refused, 30, "every member to refuse node 3", every=0.2)
        except AssertionError:
            pass
        yield out
    finally:
        mesh.close()


def test_each_half_keeps_backing_up(outcome: Outcome) -> None:
    ids = outcome.ids
    assert {p for p, r in outcome.seen_across.items() if r == "ok"} == {ids[3], ids[4]}, outcome.seen_across
    assert set(outcome.backups) == {1, 2, 3, 5}
    assert outcome.removal_unknown_to_5  # the other half had not heard of the removal


def test_members_converge_after_the_heal(outcome: Outcome) -> None:
    ids = outcome.ids
    assert outcome.live_converged_s is not None, "\n".join(
        f"node {i}: {v}" for i, v in sorted(outcome.views.items()))
    for i in STAY:
        members, removed, vector = outcome.views[i]
        assert members == {ids[1]: "admin", ids[2]: "admin", ids[4]: "member", ids[5]: "member"}
        assert removed == [ids[3]]
        assert {ids[j] for j in STAY} <= set(vector)  # every member's records reached everyone


def test_whole_catalog_converges_after_the_heal(outcome: Outcome) -> None:
    # Including the removed member's partition: every replica cuts it at the point its
    # removal names, whatever it had accepted before.
    full = [outcome.views[i] for i in STAY]
    assert all(v == full[0] for v in full), "\n".join(
        f"node {i}: {v[2].get(outcome.ids[REMOVED])}" for i, v in sorted(outcome.views.items()))


def test_removed_member_is_refused_everywhere(outcome: Outcome) -> None:
    ids = outcome.ids
    peers = outcome.refusals or {}
    assert set(peers) == {ids[i] for i in STAY}, peers
    assert all("refused" in r for r in peers.values()), peers
