"""Members repair for an absent owner, with real daemons on loopback (issue 15, "Must hold").

With ``owner_away_after = "20s"``: the owner goes offline, then a holder dies; the other
members rebuild the owner's packs; the owner comes back with its repair schedule at a day,
sees full redundancy at once (it adopts the members' placements) and restores.

A mesh of its own (the shape of test_health_daemons.py: an owner and four members, k=2 of
n=3, so each pack leaves a member free for a rebuilt share): on that module's mesh a holder
evicted by its rot test stays evicted (node/core/holders.py: only a person brings one back),
and with one more holder dead the group could not be full again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from healthmesh import OWNER, backup, full, health, shape, when
from meshutil import edit_config, last_json, ledger_rows, random_tree, restored, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mesh_up")]

MESH = shape("health-away")  # the module's ``mesh`` (tests/node/conftest.py)


def test_members_repair_while_the_owner_is_away_and_it_adopts_on_return(
        mesh: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 3, seed=33)
    backup(mesh, src)
    owner = mesh.nodes[OWNER]
    mesh.run(owner, "group", "sync", check=False)  # the placements reach every member now
    rows = ledger_rows(owner.home)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.peer] = counts.get(r.peer, 0) + 1
    victim = next(n for n in mesh.nodes if n.peer_id == max(sorted(counts), key=lambda p: counts[p]))
    held = {r.pack for r in rows if r.peer == victim.peer_id}
    # The owner goes offline (its repair schedule set to a day for its return), then a
    # holder dies for good.
    mesh.stop(OWNER)
    edit_config(owner.home, 'repair_every = "10s"', 'repair_every = "1d"')
    edit_config(owner.home, 'audit_every = "5s"', 'audit_every = "1h"')
    mesh.kill(victim.index)
    members = [n for n in mesh.nodes if n.index not in (OWNER, victim.index)]

    def repaired() -> int:
        total = 0
        for n in members:
            p = mesh.run(n, "health", "--json", check=False)
            total += last_json(p)["repair"]["member_repairs"]
        return total
    t0 = time.monotonic()
    wait_for(lambda: repaired() >= len(held), 150, "the members rebuilt the absent owner's packs", every=2.0)
    print(f"owner away, holder dead -> members repaired in {time.monotonic() - t0:.0f} s")
    # The owner comes back: its first sync brings the members' placements; it adopts them.
    t1 = time.monotonic()
    mesh.start(OWNER)
    seen: list[dict] = []

    def back() -> dict | None:
        seen[:] = [health(mesh)]
        return when(seen[0], full)
    try:
        h = wait_for(back, 30, "the owner sees full redundancy", every=0.5)
    except AssertionError:
        raise AssertionError(f"not full 30 s after the owner came back: {seen}") from None
    print(f"owner back -> full in {time.monotonic() - t1:.1f} s")
    assert not any(r.peer == victim.peer_id and r.pack in held and
                   not any(o.index == r.index and o.pack == r.pack and o.peer != victim.peer_id
                           for o in ledger_rows(owner.home))
                   for r in ledger_rows(owner.home))
    assert h["packs"]["lost"] == 0
    out = tmp_path / "out"
    p = mesh.run(owner, "restore", "latest", "--target", str(out), "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert differences(src, restored(out, src)) == []
