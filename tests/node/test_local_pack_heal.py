"""A damaged local pack is rebuilt from its shares on peers: real daemons (``meshutil``).

Found by the chaos campaign (tests/chaos, ``bitflip-pack``): one flipped bit in a data pack
the owner still keeps (its placement was short of ``n``, so the local copy stays) failed the
restore of a file whose pack the mesh held, and ``check --read-data`` failed for good.
Now the restore rebuilds the damaged pack from its holders, writes it over the local copy,
and restores the files again; the store is whole afterwards.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from meshutil import (
    MeshShape,
    flip_byte,
    last_json,
    ledger_codes,
    random_tree,
    restored,
    start_missing,
    store_packs,
)

MESH = MeshShape("heal", 3)  # the module's ``mesh`` (tests/node/conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mesh_up")]


def test_restore_heals_a_damaged_local_pack_from_the_mesh(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[0]
    mesh.stop(2)  # one holder away: n=2 cannot be met, so the data packs stay local
    src = random_tree(tmp_path / "src", 3, seed=5)
    p = mesh.run(owner, "backup", str(src), "--k", "1", "--n", "2", "--json", check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    snap = last_json(p)["snapshot_id"]
    codes = ledger_codes(owner.home)
    kept = sorted(h for h in store_packs(owner.home) if bytes.fromhex(h) in codes)
    big = max(kept, key=lambda h: (owner.home / "store" / "packs" / h[:2] / h).stat().st_size)
    path = owner.home / "store" / "packs" / big[:2] / big
    assert path.stat().st_size > 500_000  # a data pack, coded, with one share on node 2
    flip_byte(path)

    target = tmp_path / "restore"
    p = mesh.run(owner, "restore", snap, "--target", str(target), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert differences(src, restored(target, src)) == []
    p = mesh.run(owner, "check", "--read-data", "--json", check=False)
    assert last_json(p)["ok"] is not False or p.returncode == 3, p.stdout + p.stderr
    assert "DAMAGED" not in p.stdout and "damaged" not in p.stdout, p.stdout


def test_restore_heals_a_damaged_tree_pack_from_the_mesh(mesh: LocalMesh, tmp_path: Path) -> None:
    """Trees and snapshot records live in metadata packs, always kept local (and coded):
    a bit flipped there failed the whole restore before its first file."""
    owner = mesh.nodes[0]
    start_missing(mesh)
    src = random_tree(tmp_path / "src", 1, seed=6)
    p = mesh.run(owner, "backup", str(src), "--k", "1", "--n", "2", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    snap = last_json(p)["snapshot_id"]
    db = sqlite3.connect(f"file:{owner.home / 'index.db'}?mode=ro", uri=True)
    try:
        meta = {bytes(r[0]).hex() for r in db.execute("SELECT DISTINCT pack FROM blobs WHERE kind != 0")}
    finally:
        db.close()
    codes = ledger_codes(owner.home)
    for h in sorted(meta & store_packs(owner.home)):
        if bytes.fromhex(h) in codes:
            flip_byte(owner.home / "store" / "packs" / h[:2] / h)
    target = tmp_path / "restore"
    p = mesh.run(owner, "restore", snap, "--target", str(target), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert differences(src, restored(target, src)) == []
    p = mesh.run(owner, "check", "--read-data", check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_check_read_data_heals_a_damaged_local_pack(mesh: LocalMesh, tmp_path: Path) -> None:
    """A flip where no restore reads (here the pack's sealed header, at its end) is found by
    ``check --read-data``, which rebuilds the pack from its shares and checks again."""
    owner = mesh.nodes[0]
    start_missing(mesh)
    src = random_tree(tmp_path / "src", 1, seed=7)
    p = mesh.run(owner, "backup", str(src), "--k", "1", "--n", "2", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    codes = ledger_codes(owner.home)
    coded = sorted(h for h in store_packs(owner.home) if bytes.fromhex(h) in codes)
    assert coded
    path = owner.home / "store" / "packs" / coded[-1][:2] / coded[-1]
    flip_byte(path, path.stat().st_size - 40)
    p = mesh.run(owner, "check", "--read-data", check=False)
    assert p.returncode in (0, 3), p.stdout + p.stderr
    assert f"healed damaged local pack {coded[-1][:16]}" in p.stdout, p.stdout
    assert "DAMAGED" not in p.stdout, p.stdout
    p = mesh.run(owner, "check", "--read-data", check=False)
    assert p.returncode in (0, 3) and "healed" not in p.stdout, p.stdout + p.stderr


def test_a_damaged_local_pack_does_not_fail_the_next_backups(mesh: LocalMesh, tmp_path: Path) -> None:
    """Found by the chaos campaign: a data pack kept local (placement short of n) rotted,
    and every later backup failed with an internal error when it tried to place the rest
    of its shares. Now its share on a peer rebuilds it and placement completes."""
    owner = mesh.nodes[0]
    start_missing(mesh)
    mesh.stop(2)
    src = random_tree(tmp_path / "src", 3, seed=8)
    p = mesh.run(owner, "backup", str(src), "--k", "1", "--n", "2", "--json", check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    codes = ledger_codes(owner.home)
    kept = sorted(h for h in store_packs(owner.home) if bytes.fromhex(h) in codes)
    big = max(kept, key=lambda h: (owner.home / "store" / "packs" / h[:2] / h).stat().st_size)
    flip_byte(owner.home / "store" / "packs" / big[:2] / big)
    mesh.start(2)
    p = mesh.run(owner, "backup", str(src), "--k", "1", "--n", "2", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "internal error" not in p.stderr
