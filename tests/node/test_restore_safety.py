"""A restore never writes outside its target, whatever a tree says and whatever another
user does to the target while it runs.

Forged trees are made with the pack writer directly (the normal encoder never makes such
names), stored with valid ids and encryption, and restored through the real CLI. Races are
real: a directory of the target is swapped for a symlink to an outside folder during a
real restore, at a chosen moment (a hook on the restore) and by a free-running thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from corestate.kernel import linux
from corestate.node.engine.restore import Restore
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.protocol import pack as packfmt
from corestate.protocol.objects import DIR, FILE, SYMLINK, Node, Snapshot, encode_tree
from helpers import PASSPHRASE, Cli, without_dac_override


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


# -- a directory in the target swapped for a symlink while the restore runs ------------------

def many_dirs(root: Path, dirs: int = 30, files: int = 100) -> Path:
    """``dirs`` directories of ``files`` small files each, a subdirectory with a restrictive
    mode in each, and one file hard-linked into every directory."""
    for i in range(dirs):
        d = root / f"d{i:02}"
        (d / "sub").mkdir(parents=True)
        for j in range(files):
            (d / f"f{j:03}").write_bytes(b"%d/%d\n" % (i, j))
        (d / "sub" / "leaf").write_text("leaf")
        os.chmod(d / "sub", 0o750)
        if i:
            os.link(root / "d00" / "f000", d / "linked")
    return root


def restored_under(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def swap(tree: Path, name: str, outside: Path) -> None:
    """What another user who can write ``tree`` does: move the directory away and put a
    symlink to a folder of their choosing in its place."""
    os.rename(tree / name, tree / (name + ".moved"))
    os.symlink(outside / name, tree / name)


def files_below(p: Path) -> list[Path]:
    return sorted(x for x in p.rglob("*") if not x.is_dir())


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_directory_swapped_after_planning_is_not_followed(cli: Cli, tmp_path: Path, openat2: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap happens at the worst moment: every directory exists and was checked, no file
    is written yet. Files, hard links and directory metadata of the swapped directories must
    fail with an error for their paths; nothing may land in (or change) the outside folder.
    Run with openat2 and with the walk used on kernels without it."""
    monkeypatch.setattr(linux, "_have_openat2", openat2)
    src = many_dirs(tmp_path / "src")
    cli.json("backup", str(src))
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    swapped = [f"d{i:02}" for i in range(1, 30, 3)]
    for name in swapped:
        (outside / name / "sub").mkdir(parents=True)
        os.chmod(outside / name / "sub", 0o777)
    before = {p: os.lstat(p) for p in outside.rglob("*")}

    original = Restore._write_batches

    def swap_then_write(self: Restore, batches: list[list[tuple[bytes, Node]]]) -> None:
        for name in swapped:
            swap(restored_under(target, src), name, outside)
        original(self, batches)

    monkeypatch.setattr(Restore, "_write_batches", swap_then_write)
    node = LocalNode.open(Home(cli.home), PASSPHRASE.encode())
    try:
        stats = Restore(node.repo).run(node.repo.resolve("latest"), target)
    finally:
        node.close()
        node.home.unlock()
    assert files_below(outside) == [], "the restore wrote through a swapped directory"
    assert {p: os.lstat(p) for p in outside.rglob("*")} == before, "metadata applied outside"
    errors = {os.fsdecode(p): m for p, m in stats.errors}
    got = restored_under(target, src)
    for name in swapped:
        for j in range(100):
            assert "not followed" in errors[str(got / name / f"f{j:03}")]
        assert "not followed" in errors[str(got / name / "linked")]
        assert "not followed" in errors[str(got / name)]
    for i in range(30):
        if f"d{i:02}" not in swapped:
            assert (got / f"d{i:02}" / "f042").read_bytes() == b"%d/42\n" % i
            assert os.stat(got / f"d{i:02}" / "sub").st_mode & 0o777 == 0o750
    assert len(stats.errors) == len(errors)


def test_free_running_swapper_never_gets_a_write_outside(cli: Cli, tmp_path: Path) -> None:
    """A real CLI restore while a thread swaps each directory as soon as it appears."""
    src = many_dirs(tmp_path / "src")
    cli.json("backup", str(src))
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    names = [f"d{i:02}" for i in range(30)]
    for name in names:
        (outside / name).mkdir(parents=True)
    got = restored_under(target, src)
    done = threading.Event()
    swapped: list[str] = []

    def swapper() -> None:
        todo = list(names)
        while todo and not done.is_set():
            time.sleep(0.001)
            for name in list(todo):
                if (got / name).is_dir() and not (got / name).is_symlink():
                    try:
                        swap(got, name, outside)
                    except OSError:
                        continue
                    swapped.append(name)
                    todo.remove(name)

    t = threading.Thread(target=swapper)
    t.start()
    try:
        p = cli.run("restore", "latest", "--target", str(target), check=False)
    finally:
        done.set()
        t.join()
    assert files_below(outside) == [], "the restore wrote through a swapped directory"
    assert swapped, "the swapper never ran during the restore"
    assert p.returncode == 1 and "not followed" in p.stderr


def test_directory_metadata_is_applied_children_before_parents(cli: Cli, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = many_dirs(tmp_path / "src", dirs=4, files=2)
    (src / "d01" / "sub" / "deeper").mkdir()
    cli.json("backup", str(src))
    order: list[bytes] = []
    original = Restore._apply_dir_meta

    def spy(self: Restore, dpath: bytes, node: Node) -> None:
        order.append(dpath)
        original(self, dpath, node)

    monkeypatch.setattr(Restore, "_apply_dir_meta", spy)
    node = LocalNode.open(Home(cli.home), PASSPHRASE.encode())
    try:
        stats = Restore(node.repo).run(node.repo.resolve("latest"), tmp_path / "t")
    finally:
        node.close()
        node.home.unlock()
    assert stats.errors == []
    assert len(order) == len(set(order)) == stats.dirs
    for i, parent in enumerate(order):
        later_children = [c for c in order[i + 1:] if c.startswith(parent + b"/")]
        assert later_children == [], f"{parent!r} got its metadata before {later_children}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand directories to another owner")
def test_a_parent_handed_to_its_owner_does_not_lock_out_its_children(cli: Cli, tmp_path: Path) -> None:
    """A directory owned by another user with mode 0700, restored by root without its power
    to override permissions: its children must get their metadata before it is handed over."""
    x = Node(b"x", DIR, 0o700, 4321, 4321, 1_000_000_000)
    y = Node(b"y", DIR, 0o555, 0, 0, 2_000_000_000)
    sid = forge(cli, [x], {b"x": [y], b"y": [f(b"inside")]})
    target = tmp_path / "target"
    p = cli.run("restore", sid[:12], "--target", str(target), check=False, preexec_fn=without_dac_override)
    assert p.returncode == 0, p.stderr
    sx, sy = os.stat(target / "x"), os.stat(target / "x" / "y")
    assert (sx.st_uid, sx.st_mode & 0o7777, sx.st_mtime_ns) == (4321, 0o700, 1_000_000_000)
    assert (sy.st_uid, sy.st_mode & 0o7777, sy.st_mtime_ns) == (0, 0o555, 2_000_000_000)
    assert (target / "x" / "y" / "inside").read_text() == "owned\n"


def test_a_fifo_swapped_for_a_symlink_does_not_pass_on_its_mode(cli: Cli, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod by name follows a symlink: the FIFO's metadata must go to the FIFO or nowhere."""
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    os.chmod(src / "pipe", 0o666)
    cli.json("backup", str(src))
    victim = tmp_path / "victim"
    victim.write_text("private")
    os.chmod(victim, 0o600)
    real_mkfifo = os.mkfifo

    def mkfifo_then_swap(name: bytes, mode: int = 0o666, *, dir_fd: int | None = None) -> None:
        real_mkfifo(name, mode, dir_fd=dir_fd)
        os.unlink(name, dir_fd=dir_fd)
        os.symlink(victim, name, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkfifo", mkfifo_then_swap)
    node = LocalNode.open(Home(cli.home), PASSPHRASE.encode())
    try:
        stats = Restore(node.repo).run(node.repo.resolve("latest"), tmp_path / "t")
    finally:
        node.close()
        node.home.unlock()
    assert os.stat(victim).st_mode & 0o777 == 0o600
    assert [os.fsdecode(p) for p, _ in stats.errors] == [str(restored_under(tmp_path / "t", src) / "pipe")]
