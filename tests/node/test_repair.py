"""Repair, forget and prune with real daemons on loopback.

Shares lost with a dead holder, or lost on a live one, are rebuilt onto holders that have
none of the pack, and the mesh is full again (by command and on the daemon's schedule; in
a group the new placements reach a recovery). Pruned packs' shares are deleted on their
holders.

One five-node mesh for the module (an owner and four holders, 1 MiB packs); backups are
coded k=2 of n=3, so each pack leaves one holder free to take a rebuilt share.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from corestate.node.peers import AddressBook
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from meshutil import (
    MeshShape,
    edit_config,
    form_group,
    last_json,
    ledger_rows,
    make_mesh,
    random_tree,
    restored,
    share_files,
    wait_for,
)

OWNER = 0
HOLDERS = (1, 2, 3, 4)


MESH = MeshShape("repair", 5)  # the module's ``mesh`` (tests/node/conftest.py)
pytestmark = pytest.mark.usefixtures("mesh_up")


def run(mesh: LocalMesh, *args: str) -> tuple[int, dict]:
    p = mesh.run(mesh.nodes[OWNER], *args, "--json", check=False)
    assert p.returncode in (0, 3), p.stdout + p.stderr
    return p.returncode, last_json(p)


def holders_by_pack(mesh: LocalMesh) -> dict[bytes, dict[int, set[str]]]:
    out: dict[bytes, dict[int, set[str]]] = {}
    for r in ledger_rows(mesh.nodes[OWNER].home):
        out.setdefault(r.pack, {}).setdefault(r.index, set()).add(r.peer)
    return out


def test_shares_of_a_dead_holder_and_lost_shares_of_a_live_one_are_rebuilt(
        mesh: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 6, seed=11)
    code, out = run(mesh, "backup", str(src), "--k", "2", "--n", "3")
    assert code == 0 and out["mesh"]["safe"], out
    dead = mesh.nodes[1]
    before = holders_by_pack(mesh)
    hit = {p for p, idx in before.items() if any(dead.peer_id in peers for peers in idx.values())}
    assert hit, "no pack had a share on holder 1"

    mesh.kill(1)
    code, report = run(mesh, "check")
    assert code == 3  # degraded, as check says (and it names repair)
    # The plan alone changes nothing.
    code, plan = run(mesh, "repair", "--dry-run")
    assert code == 0 and plan["dry_run"] and holders_by_pack(mesh) == before
    assert {bytes.fromhex(r["pack"]) for r in plan["rebuilt"] if r["shares"]} == hit
    # Data packs left the owner after upload: their shares come back from k good shares;
    # tree and snapshot packs are still local and are coded again from there.
    sources = {r["source"] for r in plan["rebuilt"] if r["shares"]}
    assert "mesh" in sources and sources <= {"mesh", "local"}, sources

    code, res = run(mesh, "repair")
    assert code == 0 and res["complete"] and not res["failed"], res
    after = holders_by_pack(mesh)
    for pack in hit:
        for index, peers in after[pack].items():
            live = peers - {dead.peer_id}
            assert live, (pack.hex(), index)
        # Never two shares of one pack on one live holder.
        live_holders = [p for peers in after[pack].values() for p in peers if p != dead.peer_id]
        assert len(live_holders) == len(set(live_holders)) == 3
    code, report = run(mesh, "check")
    assert code == 0, report  # full again, holder 1 still down

    # A live holder loses every share it keeps (its disk was replaced): audits find them
    # missing, repair puts them back (there or elsewhere) and forgets what was lost.
    victim = mesh.nodes[2]
    for f in share_files(victim.home):
        f.unlink()
    code, report = run(mesh, "check")
    assert code == 3
    code, res = run(mesh, "repair")
    assert code == 0 and res["complete"], res
    assert any(r["forgotten"] for r in res["rebuilt"]) or any(
        victim.peer_id in r["placed"].values() for r in res["rebuilt"]), res
    code, report = run(mesh, "check")
    assert code == 0, report

    # And the data is whole: restore with holder 1 still down and one more holder killed.
    mesh.kill(3)
    target = tmp_path / "t"
    p = mesh.run(mesh.nodes[OWNER], "restore", out["snapshot_id"], "--target", str(target), check=False)
    assert p.returncode == 0, p.stderr
    assert differences(src, restored(target, src)) == []


def test_a_pack_below_k_without_a_local_copy_is_named_not_faked(mesh: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 3, seed=12)
    code, out = run(mesh, "backup", str(src), "--k", "2", "--n", "3")
    assert code == 0, out
    mesh.kill(1)
    mesh.kill(2)
    mesh.kill(3)
    code, res = run(mesh, "repair")
    assert code == 3 and not res["complete"]
    assert res["unrepairable"] and all("online" in u["reason"] for u in res["unrepairable"])


def test_the_daemon_repairs_on_its_own_schedule(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[OWNER]
    src = random_tree(tmp_path / "src", 3, seed=13)
    code, out = run(mesh, "backup", str(src), "--k", "2", "--n", "3")
    assert code == 0, out
    dead = mesh.nodes[4]
    assert any(dead.peer_id in peers for idx in holders_by_pack(mesh).values() for peers in idx.values())
    edit_config(owner.home, 'repair_every = "1d"', "repair_every = 1")
    try:
        mesh.stop(OWNER)
        mesh.kill(4)
        mesh.start(OWNER)

        def every_index_has_a_live_holder() -> bool:
            by_pack = holders_by_pack(mesh)
            return all(peers - {dead.peer_id} for idx in by_pack.values() for peers in idx.values())
        wait_for(every_index_has_a_live_holder, 60, "the scheduled repair to re-place holder 4's shares",
                 every=0.5)
        code, report = run(mesh, "check")
        assert code == 0, report
    finally:
        edit_config(owner.home, "repair_every = 1", 'repair_every = "1d"')
        mesh.stop(OWNER)
        mesh.start(OWNER)


def test_in_a_group_the_repaired_placements_reach_the_catalog_and_a_recovery(tmp_path: Path) -> None:
    """Repair writes where the shares are now to the owner's partition: after its disk dies,
    the owner recovers from the 24 words and finds the rebuilt shares, which are the only
    way back to packs whose original holders are dead."""
    office = make_mesh(tmp_path / "office", 5)
    for n in office.nodes:  # the group, not `peer add`, wires these
        book = AddressBook(n.home / "peers.db")
        for e in book.all():
            book.remove(e.peer)
        book.close()
    office.start()
    try:
        owner = office.nodes[0]
        form_group(office, "office")
        src = random_tree(tmp_path / "src", 6, seed=14)
        p = office.run(owner, "backup", str(src), "--k", "2", "--n", "3", "--json")
        assert last_json(p)["mesh"]["safe"], p.stdout
        one, two = office.nodes[1].peer_id, office.nodes[2].peer_id
        rows = ledger_rows(owner.home)
        both = {r.pack for r in rows if r.peer == one} & {r.pack for r in rows if r.peer == two}
        assert both, "no pack had shares on both members 1 and 2"

        office.kill(1)
        p = office.run(owner, "repair", "--json", check=False)
        assert p.returncode == 0 and last_json(p)["complete"], p.stdout + p.stderr
        office.run(owner, "group", "sync", check=False)
        office.kill(2)

        office.stop(0)
        shutil.rmtree(owner.home)
        phrase = tmp_path / "phrase"
        phrase.write_text(owner.phrase)
        office.run(owner, "init", "--recover", "--phrase-file", str(phrase), "--peer", office.nodes[3].addr)
        target = tmp_path / "r"
        office.run(owner, "restore", "latest", "--target", str(target))
        assert differences(src, restored(target, src)) == []
    finally:
        office.close()


def test_forget_and_prune_delete_the_shares_on_their_holders(mesh: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 4, seed=15)
    code, out = run(mesh, "backup", str(src), "--k", "2", "--n", "3")
    assert code == 0, out
    held_before = sum(len(share_files(mesh.nodes[i].home)) for i in HOLDERS)
    rows_before = ledger_rows(mesh.nodes[OWNER].home)
    code, res = run(mesh, "forget", out["snapshot_id"], "--prune")
    assert code == 0 and res["forgotten"] == 1 and not res["share_problems"], res
    rows_after = ledger_rows(mesh.nodes[OWNER].home)
    gone = len(rows_before) - len(rows_after)
    assert gone >= 4 * 3  # at least the 4 data packs' shares, 3 each
    assert res["shares_deleted"] == gone
    assert sum(len(share_files(mesh.nodes[i].home)) for i in HOLDERS) == held_before - gone
    code, report = run(mesh, "check")
    assert code == 0, report
    assert out["snapshot_id"] not in {s["id"] for s in report["mesh"]["snapshots"]}


def test_a_holder_out_of_reach_at_prune_time_deletes_its_shares_later(mesh: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 4, seed=16)
    code, out = run(mesh, "backup", str(src), "--k", "2", "--n", "3")
    assert code == 0, out
    away = mesh.nodes[1]
    before = ledger_rows(mesh.nodes[OWNER].home)
    held = len(share_files(away.home))
    mesh.kill(1)
    code, res = run(mesh, "forget", out["snapshot_id"], "--prune")
    assert code == 3 and res["share_problems"], res  # said, not hidden
    pruned = {r.pack for r in before} - {r.pack for r in ledger_rows(mesh.nodes[OWNER].home)}
    owed = [r for r in before if r.pack in pruned and r.peer == away.peer_id]
    assert owed and len(res["share_problems"]) == len(owed)
    mesh.start(1)
    assert len(share_files(away.home)) == held  # it kept them while away
    code, rep = run(mesh, "repair")
    assert code == 0 and rep["pruned_shares_left"] == 0, rep
    assert rep["pruned_shares_deleted"] == len(owed)
    assert len(share_files(away.home)) == held - len(owed)
