"""Snapshot providers on real file systems: consistency, torn-read detection, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from corestate.kernel import btrfs
from corestate.kernel.errors import SnapshotBusy
from corestate.kernel.snapshot import open_snapshot, read_checked

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
pytestmark = [pytest.mark.root, root_only]

PAGE = 4096


def version(k: int, size: int = PAGE) -> bytes:
    unit = f"{k:08d}".encode()
    return unit * (size // len(unit))


def version_of(data: bytes, size: int = PAGE) -> int | None:
    """k when ``data`` is exactly version k, None when it is torn."""
    if len(data) != size - size % 8:
        return None
    k = int(data[:8])
    return k if data == version(k, size) else None


class Writer:
    """Rewrites files in lockstep, each write made durable before the next file's."""

    def __init__(self, files: list[Path], size: int = PAGE, sync: bool = True) -> None:
        self.files, self.size, self.sync = files, size, sync
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None
        for f in files:
            f.write_bytes(version(0, size))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fds = [os.open(f, os.O_WRONLY) for f in self.files]
        try:
            k = 0
            while not self.stop.is_set():
                k += 1
                data = version(k, self.size)
                for fd in fds:
                    os.pwrite(fd, data, 0)
                    if self.sync:
                        os.fdatasync(fd)
                self.rounds = k
        except BaseException as e:  # surfaced by __exit__
            self.error = e
        finally:
            for fd in fds:
                os.close(fd)

    def __enter__(self) -> Writer:
        self.thread.start()
        while self.rounds < 2 and self.error is None:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if self.error is not None:
            raise self.error


def read_all(f: BinaryIO) -> bytes:
    chunks = []
    while b := f.read(1 << 20):
        chunks.append(b)
    return b"".join(chunks)


def snapshots_of(subvol: Path) -> list[str]:
    d = subvol / btrfs.SNAPDIR
    return sorted(os.listdir(d)) if d.exists() else []


# --- the choice --------------------------------------------------------------------------


def test_btrfs_is_chosen_for_a_subvolume_and_a_folder_inside_it(
    btrfs_subvol: Path, state_dir: Path
) -> None:
    (btrfs_subvol / "data").mkdir()
    (btrfs_subvol / "data" / "a").write_text("a")
    s = open_snapshot(btrfs_subvol, state_dir)
    try:
        assert s.provider == "btrfs"
        assert (s.root / "data" / "a").read_text() == "a"
        # the snapshot folder is visible from the subvolume root: the walk must skip it
        assert s.exclude == [s.root / btrfs.SNAPDIR]
        assert not s.root.is_relative_to(btrfs_subvol / "data")
    finally:
        s.close(keep_as_parent=False)
    s = open_snapshot(btrfs_subvol / "data", state_dir)
    try:
        assert s.provider == "btrfs"
        assert s.exclude == []
        assert sorted(os.listdir(s.root)) == ["a"]
    finally:
        s.close(keep_as_parent=False)
    assert snapshots_of(btrfs_subvol) == []


def test_reflink_is_chosen_on_xfs_and_plain_elsewhere(
    xfs_dir: Path, tmp_path: Path, state_dir: Path
) -> None:
    s = open_snapshot(xfs_dir, state_dir)
    assert s.provider == "reflink"
    s.close(keep_as_parent=False)
    ext = tmp_path / "ext"
    ext.mkdir()
    s = open_snapshot(ext, state_dir)
    assert s.provider == "plain"  # the test machine's /tmp has no reflinks (ext4/tmpfs)
    s.close(keep_as_parent=False)
    with pytest.raises(ValueError, match="no snapshot provider"):
        open_snapshot(ext, state_dir, allow=("btrfs",))


def test_one_session_per_path(btrfs_subvol: Path, state_dir: Path) -> None:
    s = open_snapshot(btrfs_subvol, state_dir)
    try:
        with pytest.raises(SnapshotBusy):
            open_snapshot(btrfs_subvol, state_dir)
    finally:
        s.close(keep_as_parent=False)
    open_snapshot(btrfs_subvol, state_dir).close(keep_as_parent=False)


# --- consistency -------------------------------------------------------------------------


def assert_one_instant(versions: list[int | None]) -> None:
    """All complete, and a prefix of the files one version ahead of the rest (lockstep)."""
    assert None not in versions, f"torn file in snapshot: {versions}"
    vs = [v for v in versions if v is not None]
    k = vs[-1]
    assert all(v in (k, k + 1) for v in vs), vs
    assert vs == sorted(vs, reverse=True), f"not one instant of the lockstep writer: {vs}"


def test_btrfs_snapshot_is_one_instant_under_a_lockstep_writer(
    btrfs_subvol: Path, state_dir: Path
) -> None:
    files = [btrfs_subvol / f"f{i}" for i in range(8)]
    seen: set[tuple[int | None, ...]] = set()
    with Writer(files) as w:
        for _ in range(6):
            s = open_snapshot(btrfs_subvol, state_dir)
            try:
                versions = []
                for f in files:
                    res = read_checked(s, s.root / f.name, read_all)
                    assert not res.torn and res.attempts == 1
                    versions.append(version_of(res.value))
            finally:
                s.close(keep_as_parent=False)
            assert_one_instant(versions)
            seen.add(tuple(versions))
            time.sleep(0.02)
        assert w.rounds >= 3
    assert len(seen) > 1, "the writer did not move between snapshots: the test proved nothing"


def test_plain_reads_of_a_file_being_rewritten_are_never_silently_torn(
    tmp_path: Path, state_dir: Path
) -> None:
    size = 4 << 20
    f = tmp_path / "live"
    s = open_snapshot(tmp_path, state_dir, allow=("plain",))
    torn_content = flagged = 0
    try:
        assert not s.is_stable(f)
        with Writer([f], size=size, sync=False):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and torn_content < 5:
                res = read_checked(s, f, read_all)
                if version_of(res.value, size) is None:
                    torn_content += 1
                    assert res.torn, "a torn read was not detected"
                flagged += res.torn
    finally:
        s.close(keep_as_parent=False)
    assert torn_content > 0, "no read overlapped a write: the test proved nothing"
    # a quiet file reads whole on the first attempt; one held open for writing, on the second
    s = open_snapshot(tmp_path, state_dir, allow=("plain",))
    try:
        res = read_checked(s, f, read_all)
        assert not res.torn and res.attempts == 1 and version_of(res.value, size) is not None
        with open(f, "r+b") as w:
            w.write(version(7, size))
            w.flush()
            res = read_checked(s, f, read_all)  # just written, still open: cannot tell
            assert res.torn and res.attempts == 2
            time.sleep(0.06)
            res = read_checked(s, f, read_all, settle_ns=50_000_000)  # open but settled
            assert not res.torn and res.attempts == 1 and version_of(res.value, size) == 7
    finally:
        s.close(keep_as_parent=False)


def test_reflink_reads_a_clone_of_one_instant(xfs_dir: Path, state_dir: Path) -> None:
    size = 1 << 20
    f = xfs_dir / "big"
    with Writer([f], size=size, sync=False):
        s = open_snapshot(xfs_dir, state_dir)
        try:
            assert s.provider == "reflink"
            for _ in range(20):
                res = read_checked(s, f, read_all)
                assert not res.torn and res.attempts == 1
                assert version_of(res.value, size) is not None, "clone of a torn file"
        finally:
            s.close(keep_as_parent=False)
    # the clone is a copy: writing the source after opening does not change what is read
    f.write_bytes(version(1, size))
    s = open_snapshot(xfs_dir, state_dir)
    try:
        with s.open_file(f) as r:
            f.write_bytes(version(2, size))
            assert version_of(read_all(r), size) == 1
    finally:
        s.close(keep_as_parent=False)


# --- incremental change sets -------------------------------------------------------------


def test_btrfs_changed_paths_since_the_parent(btrfs_subvol: Path, state_dir: Path) -> None:
    d = btrfs_subvol / "data"
    (d / "sub").mkdir(parents=True)
    for name in ("keep", "edit", "gone", "sub/old", "sub/hard"):
        (d / name).write_text(name)
    s = open_snapshot(d, state_dir)
    assert s.changed_paths() is None  # no parent yet
    s.close(keep_as_parent=True)
    (d / "edit").write_text("edited")
    (d / "new").write_text("new")
    (d / "gone").unlink()
    os.rename(d / "sub" / "old", d / "sub" / "renamed")
    os.link(d / "sub" / "hard", d / "hardlink")
    s = open_snapshot(d, state_dir)
    try:
        changed = set(map(str, s.changed_paths() or []))
    finally:
        s.close(keep_as_parent=True)
    assert {"edit", "new", "sub/renamed", "sub/hard", "hardlink", "sub"} <= changed, changed
    assert "." in changed  # the folder that lost "gone" and gained "new"
    assert "keep" not in changed
    assert all(not p.startswith(btrfs.SNAPDIR) for p in changed)


# --- what is left on disk ----------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
from corestate.kernel.snapshot import open_snapshot
s = open_snapshot(Path(sys.argv[1]), Path(sys.argv[2]))
if s.provider == "reflink":
    f = s.open_file(Path(sys.argv[3]))
print(s.provider, flush=True)
time.sleep(60)
"""


def run_and_kill(path: Path, state_dir: Path, some_file: Path) -> str:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(state_dir), str(some_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        provider = p.stdout.readline().strip()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    return provider


def test_btrfs_keeps_only_the_parent_even_after_sigkill(
    btrfs_subvol: Path, state_dir: Path
) -> None:
    (btrfs_subvol / "a").write_text("a")
    s = open_snapshot(btrfs_subvol, state_dir)
    s.close(keep_as_parent=True)
    parent = snapshots_of(btrfs_subvol)
    assert len(parent) == 1
    assert run_and_kill(btrfs_subvol, state_dir, btrfs_subvol / "a") == "btrfs"
    assert len(snapshots_of(btrfs_subvol)) == 2  # the killed session's snapshot is left over
    s = open_snapshot(btrfs_subvol, state_dir)
    try:
        assert sorted(snapshots_of(btrfs_subvol)) == sorted([*parent, s.snapshot.name])
    finally:
        s.close(keep_as_parent=False)  # a failed backup keeps the old parent
    assert snapshots_of(btrfs_subvol) == parent
    s = open_snapshot(btrfs_subvol, state_dir)
    s.close(keep_as_parent=True)  # a recorded backup replaces it
    assert snapshots_of(btrfs_subvol) == [s.snapshot.name]
    # another provider taking over the path drops the btrfs parent
    open_snapshot(btrfs_subvol, state_dir, allow=("plain",)).close(keep_as_parent=True)
    assert snapshots_of(btrfs_subvol) == []


def scratch_dirs(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob(".corestate-scratch-*")]


def test_reflink_leaves_no_scratch_even_after_sigkill(
    xfs_mount: Path, xfs_dir: Path, state_dir: Path
) -> None:
    f = xfs_dir / "a"
    f.write_bytes(version(1, 1 << 20))
    free_before = os.statvfs(xfs_mount).f_bfree
    s = open_snapshot(xfs_dir, state_dir)
    with s.open_file(f) as r:
        assert version_of(read_all(r), 1 << 20) == 1
    # the scratch folder sits at the mount root, outside the protected folder
    assert s.exclude == [] and scratch_dirs(xfs_dir) == []
    s.close(keep_as_parent=True)
    assert scratch_dirs(xfs_mount, state_dir) == []
    assert run_and_kill(xfs_dir, state_dir, f) == "reflink"
    assert len(scratch_dirs(xfs_mount, state_dir)) == 1  # the killed session's folder
    s = open_snapshot(xfs_dir, state_dir)
    assert len(scratch_dirs(xfs_mount, state_dir)) == 1  # the stale one went, a new one came
    s.close(keep_as_parent=False)
    assert scratch_dirs(xfs_mount, state_dir) == []
    # the unnamed clones died with their file descriptors
    assert os.statvfs(xfs_mount).f_bfree >= free_before - 16
