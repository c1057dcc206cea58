"""Engine invariants that the CLI tests cannot pin down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corestate.node.engine.backup import Backup
from corestate.node.engine.inspect import check
from corestate.node.engine.repo import Repository
from corestate.node.engine.store import LocalPackStore
from corestate.node.home import Config
from corestate.protocol.keys import NodeKeys


def test_worker_processes_never_reuse_a_pack_salt(tmp_path: Path) -> None:
    # A tree emitted by the walking process before the workers are forked sits in its
    # open pack; a worker must start a pack of its own (fresh salt, fresh nonces).
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "link").symlink_to("nowhere")
    (src / "file").write_bytes(os.urandom(100_000))
    keys = NodeKeys.from_root(b"\5" * 32)
    store = LocalPackStore(tmp_path / "store")
    store.create()
    repo = Repository(keys, store, str(tmp_path / "db"))
    b = Backup(repo, Config(), skip_dirs=[], exclude=[], workers=2)
    b.max_pending = 0  # finish every directory as soon as it is walked
    b.run([src])
    salts = [salt for _, salt, _, _ in repo.packs()]
    assert len(salts) >= 3 and len(salts) == len(set(salts))
    assert check(repo, read_data=True).ok
    repo.close()


def _engine_repo(tmp_path: Path) -> Repository:
    store = LocalPackStore(tmp_path / "store")
    store.create()
    return Repository(NodeKeys.from_root(b"\6" * 32), store, str(tmp_path / "db"))


def _aged(path: Path) -> None:
    """Files older than the racy window, so the caches take them."""
    old = 1_700_000_000
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old), follow_symlinks=False)


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files just written count as settled (ctime cannot be set back; the workers are
    forked, so they see the patched value too)."""
    from corestate.node.engine import backup
    monkeypatch.setattr(backup, "RACY_NS", -1)


@pytest.mark.usefixtures("no_racy_window")
def test_caches_below_an_unlisted_folder_survive(tmp_path: Path) -> None:
    # Backup 2 (with a change journal) takes a/ whole from the cache without listing
    # a/b/c: the cache rows of a/b/c and its files must stay, or backup 3 re-reads a/b/c.
    from corestate.kernel.changes import ChangeSet
    src = tmp_path / "src"
    deep = src / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for i in range(20):
        (deep / f"f{i}").write_bytes(os.urandom(50_000))
    (src / "x").write_bytes(b"x")
    _aged(src)
    repo = _engine_repo(tmp_path)
    Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    (src / "x").write_bytes(b"xx")
    cs = ChangeSet(frozenset({src / "x"}), "t")
    second = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: cs).run([src])
    assert second.stats.paths_visited == 2  # src/a and src/x
    (deep / "f3").write_bytes(os.urandom(50_000))
    os.utime(deep / "f3", (1_700_000_100, 1_700_000_100))
    third = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    assert third.stats.bytes_read == 50_000
    assert third.stats.files == 21
    repo.close()


@pytest.mark.usefixtures("no_racy_window")
def test_change_journal_skips_unchanged_folders_and_counts_them(tmp_path: Path) -> None:
    # With a change set, folders it does not name are reused from the cache unlisted;
    # the snapshot still counts every file, and the tree is the one a full walk makes.
    from corestate.kernel.changes import ChangeSet
    src = tmp_path / "src"
    for d in range(10):
        for s in range(5):
            sub = src / f"d{d}" / f"s{s}"
            sub.mkdir(parents=True)
            for f in range(10):
                (sub / f"f{f}").write_bytes(f"{d}-{s}-{f}".encode())
    _aged(src)
    repo = _engine_repo(tmp_path)
    first = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    changed = src / "d3" / "s2" / "f7"
    changed.write_bytes(b"changed")
    os.utime(changed, (1_700_000_100, 1_700_000_100))
    cs = ChangeSet(frozenset({changed}), "t")
    journal = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: cs).run([src])
    assert journal.stats.journal == ("used", "1 changed path(s)")
    assert journal.stats.paths_visited < 40  # 10 + 5 + 10 entries listed, not 560
    assert journal.stats.files == first.stats.files == 500
    full = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    assert full.snapshot.tree == journal.snapshot.tree != first.snapshot.tree
    # A change source that cannot vouch for the interval: a full walk, and it says why.
    gap = ChangeSet(None, "t", "queue overflow")
    again = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: gap).run([src])
    assert again.stats.journal == ("full walk", "queue overflow")
    assert again.stats.paths_visited > 500
    repo.close()
