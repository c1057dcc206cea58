"""A restore never writes outside its target, whatever a tree says.

The trees here are forged with the pack writer directly (the normal encoder never makes
such names), stored with valid ids and encryption, and restored through the real CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.protocol import pack as packfmt
from corestate.protocol.objects import DIR, FILE, SYMLINK, Node, Snapshot, encode_tree
from helpers import PASSPHRASE, Cli


def forge(cli: Cli, entries: list[Node], nested: dict[bytes, list[Node]] | None = None) -> str:
    """Store a snapshot whose root holds ``entries``; directories named in ``nested`` get
    those children. Returns the snapshot id."""
    node = LocalNode.open(Home(cli.home), PASSPHRASE.encode())
    try:
        keys = node.keys
        w = packfmt.PackWriter(keys, os.urandom(32))
        payload = b"owned\n"
        cid = keys.chunk_id(payload)
        w.add(packfmt.KIND_CHUNK, cid, payload)

        def tree(nodes: list[Node]) -> bytes:
            for n in nodes:
                if n.type == FILE:
                    n.content, n.size = [cid], len(payload)
                if n.type == DIR:
                    n.subtree = tree((nested or {}).get(n.name, []))
            data = encode_tree(nodes)
            tid = keys.tree_id(data)
            w.add(packfmt.KIND_TREE, tid, data)
            return tid

        root = tree(entries)
        rec = Snapshot(tree=root, time_ns=1, hostname="evil", paths=[b"/x"], peer_id=keys.peer_id).encode()
        sid = keys.tree_id(rec)
        w.add(packfmt.KIND_SNAPSHOT, sid, rec)
        offset = len(w)
        entries_ = list(w.entries)
        pid, data = w.finish()
        node.repo.store.put(pid, data)
        node.repo.record_pack(pid, w.salt, len(data), offset, entries_, [(sid, rec)])
        return sid.hex()
    finally:
        node.close()


def f(name: bytes) -> Node:
    return Node(name, FILE, 0o644, 0, 0, 0)


def d(name: bytes) -> Node:
    return Node(name, DIR, 0o755, 0, 0, 0)


@pytest.mark.parametrize("evil", [b"..", b"../../escape", b"/abs", b"a/../../b", b"nul\0byte", b".", b""])
def test_unsafe_names_are_refused_and_nothing_lands_outside(cli: Cli, tmp_path: Path, evil: bytes) -> None:
    sid = forge(cli, [d(b"x")], {b"x": [f(evil), f(b"fine")]})
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*") if "home" not in p.parts)
    p = cli.run("restore", sid[:12], "--target", str(target), check=False)
    assert p.returncode == 1
    assert "unsafe or invalid entry name" in p.stderr
    after = sorted(p for p in tmp_path.rglob("*") if "home" not in p.parts)
    assert after == before, "a refused tree must not write anything"
    assert not Path("/abs").exists() and not (tmp_path / "escape").exists()


def test_symlinked_parent_in_the_target_is_never_followed(cli: Cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    # First snapshot: x/link is a symlink pointing outside the target.
    s1 = forge(cli, [d(b"x")], {b"x": [Node(b"link", SYMLINK, 0o777, 0, 0, 0, target=os.fsencode(outside))]})
    cli.run("restore", s1[:12], "--target", str(target))
    assert (target / "x" / "link").is_symlink()
    # Second snapshot: x/link is a directory holding a file. Restoring it on top must not
    # write through the symlink.
    s2 = forge(cli, [d(b"x")], {b"x": [d(b"link")], b"link": [f(b"pwned")]})
    p = cli.run("restore", s2[:12], "--target", str(target), check=False)
    assert p.returncode == 1
    assert "not followed" in p.stderr
    assert list(outside.iterdir()) == []


def test_symlink_to_a_file_outside_is_replaced_not_written_through(cli: Cli, tmp_path: Path) -> None:
    outside = tmp_path / "victim"
    outside.write_text("keep me")
    target = tmp_path / "target"
    s1 = forge(cli, [Node(b"f", SYMLINK, 0o777, 0, 0, 0, target=os.fsencode(outside))])
    cli.run("restore", s1[:12], "--target", str(target))
    s2 = forge(cli, [f(b"f")])
    cli.run("restore", s2[:12], "--target", str(target))
    assert outside.read_text() == "keep me"
    assert not (target / "f").is_symlink() and (target / "f").read_text() == "owned\n"
