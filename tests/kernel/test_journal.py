"""The change journal on real file systems: fanotify (root) and inotify."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.kernel.journal import Event, Journal, parse_fanotify

BACKENDS = [
    pytest.param(
        "fanotify",
        marks=[
            pytest.mark.root,
            pytest.mark.skipif(os.geteuid() != 0, reason="fanotify filesystem marks need root"),
        ],
    ),
    "inotify",
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    for p in ("x", "a/y", "a/b/z"):
        (root / p).write_text(p)
    return root


@pytest.fixture
def journal(tmp_path: Path, tree: Path, backend: str) -> Iterator[Journal]:
    j = Journal(tmp_path / "state", [tree], backend=backend)
    j.start()
    assert j.backend == backend
    try:
        yield j
    finally:
        j.stop()


def test_touching_one_file_yields_that_path(journal: Journal, tree: Path) -> None:
    t = journal.mark()
    (tree / "a" / "b" / "z").write_text("changed")
    cs = journal.changes_since(t)
    assert cs.paths == {tree / "a" / "b" / "z"}
    # nothing since: an empty set, not a full walk
    again = journal.changes_since(cs.token)
    assert again.paths == frozenset() and not again.full_walk_required


def test_creates_renames_deletes_and_new_folders(journal: Journal, tree: Path) -> None:
    t = journal.mark()
    (tree / "new").mkdir()
    (tree / "new" / "inside").write_text("1")
    os.rename(tree / "a" / "y", tree / "a" / "y2")
    (tree / "x").unlink()
    (tree / ".corestate-snapshots").mkdir()  # our own folders are not changes
    cs = journal.changes_since(t)
    assert cs.paths is not None
    assert {
        tree / "new",
        tree / "new" / "inside",
        tree / "a" / "y",
        tree / "a" / "y2",
        tree / "x",
    } <= cs.paths, cs.paths
    assert tree / "a" / "b" / "z" not in cs.paths
    assert not any(".corestate-" in str(p) for p in cs.paths)


def test_changes_outside_the_roots_are_not_reported(
    journal: Journal, tree: Path, tmp_path: Path
) -> None:
    t = journal.mark()
    (tmp_path / "elsewhere").write_text("x")  # same file system, outside the root
    (tree / "x").write_text("y")
    assert journal.changes_since(t).paths == {tree / "x"}


def test_overflow_through_the_seam_requires_a_full_walk(journal: Journal, tree: Path) -> None:
    t = journal.mark()
    (tree / "x").write_text("y")
    journal.inject([Event(None, "queue overflowed (test)")])
    cs = journal.changes_since(t)
    assert cs.full_walk_required and "overflow" in cs.reason
    # the answer's token starts a clean interval
    (tree / "x").write_text("z")
    assert journal.changes_since(cs.token).paths == {tree / "x"}


def test_a_real_kernel_queue_overflow_requires_a_full_walk(
    tmp_path: Path, tree: Path, backend: str
) -> None:
    limit = int(Path(f"/proc/sys/fs/{backend}/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"{backend} queue limit {limit} is too large to overflow quickly")
    j = Journal(tmp_path / "state", [tree], backend=backend, thread=False)  # nobody reads
    j.start()
    try:
        d = tree / "many"
        d.mkdir()
        t = j.mark()  # inotify watches the new folder from here on
        for i in range(limit + 500):  # one or more events per file; distinct names never merge
            os.close(os.open(d / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
        cs = j.changes_since(t)
        assert cs.full_walk_required and "overflow" in cs.reason, cs.reason
    finally:
        j.stop()


def test_downtime_between_runs_requires_a_full_walk(
    tmp_path: Path, tree: Path, backend: str
) -> None:
    state = tmp_path / "state"
    with Journal(state, [tree], backend=backend) as j:
        t = j.mark()
    (tree / "x").write_text("changed while nobody watched")
    with Journal(state, [tree], backend=backend) as j:  # the daemon restarted
        cs = j.changes_since(t)
        assert cs.full_walk_required and "not running" in cs.reason
        assert j.changes_since(cs.token).paths == frozenset()
        assert j.changes_since(None).full_walk_required
        assert j.changes_since("garbage").full_walk_required


def test_btrfs_subvolume_is_watched_by_some_backend(btrfs_subvol: Path, tmp_path: Path) -> None:
    # fanotify may refuse a filesystem mark on a btrfs subvolume (its fsid differs from the
    # file system's): the journal then falls back to inotify.
    with Journal(tmp_path / "state", [btrfs_subvol]) as j:
        t = j.mark()
        (btrfs_subvol / "f").write_text("1")
        assert j.changes_since(t).paths == {btrfs_subvol / "f"}


def test_parse_fanotify_reads_an_overflow_event() -> None:
    import struct

    raw = struct.pack("=IBBHQii", 24, 3, 0, 24, 0x4000, -1, 0)
    assert parse_fanotify(raw) == [(0x4000, [])]
    assert parse_fanotify(raw[:10]) == []
