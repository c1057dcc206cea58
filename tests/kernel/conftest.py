"""Real file systems for the kernel tests: btrfs and xfs (reflink=1) on loop devices.

Each fixture makes a sparse image, attaches it with ``losetup --find --show``, runs mkfs,
mounts it in a temp folder, and always unmounts and detaches (even when a test fails).
They skip, with the reason, only when not root, when the mkfs tool is missing or when the
kernel gives no loop device. One mount per test session; each test gets its own fresh
subvolume (btrfs) or folder (xfs) so tests do not see each other's snapshots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def loop_fs(workdir: Path, fstype: str, size_mib: int, mkfs: list[str]) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip(f"{fstype} on a loop device needs root")
    if shutil.which(mkfs[0]) is None:
        pytest.skip(f"{mkfs[0]} is missing (apt-get install {fstype}progs)")
    image = workdir / f"{fstype}.img"
    mnt = workdir / f"{fstype}-mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)  # sparse: costs no disk until written
    dev = None
    mounted = False
    try:
        try:
            dev = _run("losetup", "--find", "--show", str(image))
        except subprocess.CalledProcessError as e:
            pytest.skip(f"no loop device: {e.stderr.strip()}")
        _run(*mkfs, dev)
        _run("mount", dev, str(mnt))
        mounted = True
        yield mnt
    finally:
        if mounted:
            for _ in range(20):
                r = subprocess.run(["umount", str(mnt)], capture_output=True)
                if r.returncode == 0:
                    break
                subprocess.run(["sync"], check=False)
            else:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        if dev is not None:
            subprocess.run(["losetup", "-d", dev], check=False)
        image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with loop_fs(tmp_path_factory.mktemp("btrfs"), "btrfs", 512, ["mkfs.btrfs", "-q", "-f"]) as mnt:
        yield mnt


@pytest.fixture(scope="session")
def xfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with loop_fs(
        tmp_path_factory.mktemp("xfs"), "xfs", 300, ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"]
    ) as mnt:
        yield mnt


@pytest.fixture
def btrfs_subvol(btrfs_mount: Path) -> Path:
    """A fresh subvolume for one test (snapshots of it are this test's only)."""
    p = btrfs_mount / f"sv-{uuid.uuid4().hex[:8]}"
    _run("btrfs", "subvolume", "create", str(p))
    return p


@pytest.fixture
def xfs_dir(xfs_mount: Path) -> Path:
    p = xfs_mount / f"d-{uuid.uuid4().hex[:8]}"
    p.mkdir()
    return p


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    p = tmp_path / "state"
    p.mkdir()
    return p
