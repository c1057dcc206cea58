"""Block-level increments: changed byte ranges of large files on btrfs (generations) and xfs."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import pytest
from corestate.kernel import extents, linux
from corestate.kernel.snapshot import open_snapshot

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="tree search and loop devices need root"),
]

MiB = 1 << 20
KiB = 1 << 10
REGIONS = [
    (1 * MiB, 64 * KiB),
    (17 * MiB + 4096, 64 * KiB),
    (40 * MiB, 128 * KiB),
    (63 * MiB, 64 * KiB),
]


def write_big(p: Path, size: int) -> None:
    with open(p, "wb") as f:
        for _ in range(size // (4 * MiB)):
            f.write(os.urandom(4 * MiB))  # incompressible: one plain extent layout
        f.flush()
        os.fsync(f.fileno())


def rewrite(p: Path, regions: list[tuple[int, int]]) -> None:
    fd = os.open(p, os.O_WRONLY)
    try:
        for off, n in regions:
            os.pwrite(fd, os.urandom(n), off)
        os.fsync(fd)
    finally:
        os.close(fd)


def covers(ranges: list[tuple[int, int]], off: int, n: int) -> bool:
    return any(o <= off and off + n <= o + ln for o, ln in ranges)


def total(ranges: list[tuple[int, int]]) -> int:
    return sum(n for _o, n in ranges)


def punch_hole(p: Path, off: int, n: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(p, os.O_WRONLY)
    try:
        if libc.fallocate(fd, 0x01 | 0x02, off, n) != 0:  # KEEP_SIZE | PUNCH_HOLE
            raise OSError(ctypes.get_errno(), "fallocate")
        os.fsync(fd)
    finally:
        os.close(fd)


def test_btrfs_block_changes_of_a_64mib_file(btrfs_subvol: Path, state_dir: Path) -> None:
    big = btrfs_subvol / "vm.img"
    other = btrfs_subvol / "untouched.img"
    write_big(big, 64 * MiB)
    write_big(other, 4 * MiB)
    s = open_snapshot(btrfs_subvol, state_dir)
    assert s.block_changes(s.root / "vm.img") is None  # no parent yet: read it all
    s.close(keep_as_parent=True)

    rewrite(big, REGIONS)
    s = open_snapshot(btrfs_subvol, state_dir)
    try:
        ranges = s.block_changes(s.root / "vm.img")
        assert s.block_changes(s.root / "untouched.img") == []
        changed = {str(p) for p in s.changed_paths() or []}
    finally:
        s.close(keep_as_parent=True)
    assert ranges is not None
    for off, n in REGIONS:
        assert covers(ranges, off, n), (off, n, ranges)
    # small: the rewritten regions plus at most a few extents' worth of slack
    assert total(ranges) <= sum(n for _o, n in REGIONS) + 4 * 128 * KiB, ranges
    assert "vm.img" in changed and "untouched.img" not in changed

    # a punched hole and a grown tail are changes too
    punch_hole(big, 30 * MiB, MiB)
    with open(big, "ab") as f:
        f.write(os.urandom(MiB))
    s = open_snapshot(btrfs_subvol, state_dir)
    try:
        ranges = s.block_changes(s.root / "vm.img")
    finally:
        s.close(keep_as_parent=True)
    assert ranges is not None
    assert covers(ranges, 30 * MiB, MiB) and covers(ranges, 64 * MiB, MiB), ranges
    assert total(ranges) <= 2 * MiB + 4 * 128 * KiB, ranges


def test_btrfs_changed_ranges_of_a_live_file_since_a_generation(btrfs_subvol: Path) -> None:
    from corestate.kernel import btrfs

    big = btrfs_subvol / "live.img"
    write_big(big, 16 * MiB)
    fd = os.open(btrfs_subvol, os.O_RDONLY)
    try:
        linux.syncfs(fd)  # commit: later writes get a newer generation
        gen = btrfs.subvol_info(fd).generation + 1
    finally:
        os.close(fd)
    assert extents.changed_ranges(big, gen) == []
    rewrite(big, [(4 * MiB, 64 * KiB)])
    ranges = extents.changed_ranges(big, gen)
    assert ranges is not None and covers(ranges, 4 * MiB, 64 * KiB)
    assert total(ranges) <= 64 * KiB + 128 * KiB


def test_fiemap_diff_against_a_reflink_parent_on_xfs(xfs_dir: Path) -> None:
    big = xfs_dir / "disk.img"
    parent = xfs_dir / "disk.parent"
    write_big(big, 16 * MiB)
    src = os.open(big, os.O_RDONLY)
    dst = os.open(parent, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        linux.ficlone(dst, src)
    finally:
        os.close(src)
        os.close(dst)
    assert extents.changed_ranges(big, None, parent_path=parent) == []
    regions = [(2 * MiB, 64 * KiB), (9 * MiB + 8192, 4096)]
    rewrite(big, regions)
    ranges = extents.changed_ranges(big, None, parent_path=parent)
    assert ranges is not None
    for off, n in regions:
        assert covers(ranges, off, n), (off, n, ranges)
    assert total(ranges) <= 2 * MiB, ranges
    assert extents.changed_ranges(big, None) is None  # nothing to compare with: read all


def test_merge() -> None:
    assert extents.merge([(10, 5), (0, 10), (20, 0), (30, 5), (33, 10)]) == [(0, 15), (30, 13)]
