"""Groups with real daemons on loopback: invites, members holding each other's shares,
removal refused everywhere, and the disaster test (a home deleted, recovered from the
24 words and one member's address — its index from the packs' headers, under 5% of the data
over the wire —, restored byte-identical; its next backups accepted)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.peers import AddressBook
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from helpers import make_tree


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture
def office(tmp_path: Path) -> Iterator[LocalMesh]:
    """Three daemons that know nothing of each other: the group is what wires them."""
    mesh = LocalMesh(tmp_path / "mesh", 3)
    mesh.create()
    for n in mesh.nodes:
        book = AddressBook(n.home / "peers.db")
        for e in book.all():
            book.remove(e.peer)
        book.close()
    mesh.start()
    a, b, c = mesh.nodes
    mesh.run(a, "group", "create", "office")
    for n in (b, c):
        token = mesh.run(a, "group", "invite").stdout.strip().splitlines()[-1]
        mesh.run(n, "group", "join", token)
    # Members learn each other's addresses from the adverts in the catalog.
    for n in (c, b, a):
        mesh.run(n, "group", "sync", check=False)
    yield mesh
    mesh.close()


def test_invites_members_and_shares(office: LocalMesh, tmp_path: Path) -> None:
    a, b, c = office.nodes
    members = _last_json(office.run(c, "group", "members", "--json").stdout)
    assert members["name"] == "office"
    assert members["members"] == {a.peer_id: "admin", b.peer_id: "member", c.peer_id: "member"}
    # An invite works once.
    token = office.run(a, "group", "invite", "--expires", "1h").stdout.strip().splitlines()[-1]
    extra = LocalMesh(tmp_path / "extra", 2)
    extra.create()
    extra.start()
    try:
        x, y = extra.nodes
        assert extra.run(x, "group", "join", token, check=False).returncode == 0
        again = extra.run(y, "group", "join", token, check=False)
        assert again.returncode == 1 and "already used" in again.stderr
        # An expired invite is refused.
        old = office.run(a, "group", "invite", "--expires", "0s").stdout.strip().splitlines()[-1]
        late = extra.run(y, "group", "join", old, check=False)
        assert late.returncode == 1 and "expired" in late.stderr
    finally:
        extra.close()
    # Members hold each other's shares: the owner's data packs leave it.
    src = make_tree(tmp_path / "src")
    summary = _last_json(office.run(b, "backup", str(src), "--json").stdout)
    assert summary["mesh"]["safe"] and set(summary["mesh"]["peers_online"]) >= {a.peer_id, c.peer_id}


def test_removed_member_is_refused_everywhere(office: LocalMesh, tmp_path: Path) -> None:
    a, b, c = office.nodes
    office.run(a, "group", "remove", c.peer_id)
    office.run(b, "group", "sync")  # b learns of the removal from a
    seen_by_b = _last_json(office.run(b, "group", "members", "--json").stdout)
    assert c.peer_id in seen_by_b["removed"] and c.peer_id not in seen_by_b["members"]
    # c's sync is refused by both; its backup finds no member willing to hold shares.
    refused = _last_json(office.run(c, "group", "sync", "--json", check=False).stdout)
    assert refused["peers"] and all("refused" in r for r in refused["peers"].values()), refused
    src = make_tree(tmp_path / "src")
    p = office.run(c, "backup", str(src), "--json", check=False)
    assert p.returncode == 3
    mesh = _last_json(p.stdout)["mesh"]
    assert not mesh["safe"] and mesh["share_bytes"] == 0


def test_disaster_recovery_from_the_phrase(office: LocalMesh, tmp_path: Path) -> None:
    a, b, c = office.nodes
    src = make_tree(tmp_path / "src")
    first = _last_json(office.run(a, "backup", str(src), "--json").stdout)
    assert first["mesh"]["safe"]
    office.run(a, "group", "sync")
    # The disk dies: the home is gone. A fresh home gets the keys from the 24 words and
    # everything else from one member.
    office.stop(0)
    shutil.rmtree(a.home)
    phrase = tmp_path / "phrase"
    phrase.write_text(a.phrase)
    rec = _last_json(office.run(a, "init", "--recover", "--phrase-file", str(phrase),
                                "--peer", b.addr, "--json").stdout)
    assert rec["peer_id"] == a.peer_id
    assert rec["from_group"]["snapshots"] == 1 and rec["from_group"]["epoch"] == 1
    # The index came back from the packs' sealed headers (ranged reads), plus the tree and
    # snapshot packs: a small fraction of the data crossed the wire.
    data = first["mesh"]["share_bytes"] * first["mesh"]["k"] // first["mesh"]["n"]
    assert 0 < rec["from_group"]["bytes_fetched"] <= 0.05 * data, (rec["from_group"], data)
    office.run(a, "restore", "latest", "--target", str(tmp_path / "r"))
    assert differences(src, tmp_path / "r" / str(src).lstrip("/")) == []
    # Its next backups are accepted by the members (the new epoch supersedes the old one).
    office.start(0)
    (src / "after-recovery.txt").write_text("new\n")
    office.run(a, "backup", str(src))
    office.run(a, "group", "sync")
    vector = _last_json(office.run(c, "group", "sync", "--json").stdout)["vector"]
    assert vector[a.peer_id][0] == 1 and vector[a.peer_id][1] > 1


def test_stolen_laptop_rejoins_under_its_next_identity(office: LocalMesh, tmp_path: Path) -> None:
    a, b, c = office.nodes
    src = make_tree(tmp_path / "src")
    assert _last_json(office.run(c, "backup", str(src), "--json").stdout)["mesh"]["safe"]
    office.run(c, "group", "sync")
    # The laptop is stolen: the admin removes its identity. What it wrote while it belonged
    # stays in the catalog (up to the point the removal names); anything later is refused.
    office.stop(2)
    office.run(a, "group", "remove", c.peer_id)
    office.run(b, "group", "sync")
    # Its owner, on a new machine: the 24 words, the next identity generation, a new invite.
    old_id = c.peer_id
    shutil.rmtree(c.home)
    phrase = tmp_path / "phrase"
    phrase.write_text(c.phrase)
    made = _last_json(office.run(c, "init", "--recover", "--generation", "1", "--phrase-file", str(phrase),
                                 "--json").stdout)
    assert made["peer_id"] != old_id
    office.start(2)
    token = office.run(a, "group", "invite").stdout.strip().splitlines()[-1]
    joined = office.run(c, "group", "join", token)
    assert "brought back 1 snapshot" in joined.stdout, joined.stdout
    office.run(c, "restore", "latest", "--target", str(tmp_path / "r"))
    assert differences(src, tmp_path / "r" / str(src).lstrip("/")) == []
    members = _last_json(office.run(a, "group", "members", "--json").stdout)
    assert made["peer_id"] in members["members"] and old_id in members["removed"]
