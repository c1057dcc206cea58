"""The limits of the anomaly model's node side, each gone past with realistic sizes: the
probing CPU budget, the silent-corruption re-read budget, the bound on kept
findings; and true bit rot (content changed under an unchanged stat, ctime included) on a
real ext4 file system on a loop device."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node import anomalystate as st
from corestate.node.engine import backup as engine
from corestate.node.engine.backup import Backup, FileChange, Observer
from corestate.node.engine.repo import Repository
from corestate.node.engine.resample import resample
from corestate.node.engine.store import LocalPackStore
from corestate.node.home import Config
from corestate.protocol.keys import NodeKeys
from helpers import Cli


def _repo(tmp_path: Path) -> Repository:
    store = LocalPackStore(tmp_path / "store")
    store.create()
    return Repository(NodeKeys.from_root(b"\7" * 32), store, str(tmp_path / "db"))


class Count(Observer):
    def __init__(self) -> None:
        self.files: list[FileChange] = []
        self.gone_paths: list[bytes] = []

    def file(self, change: FileChange) -> None:
        self.files.append(change)

    def gone(self, path: bytes, size: int, digest: bytes) -> None:
        self.gone_paths.append(path)


def _small_files(root: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(n):
        d = root / f"d{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(rng.randbytes(200) + b"text " * rng.randint(50, 400))
    old = 1_700_000_000
    for p in root.rglob("*"):
        os.utime(p, (old, old))


def test_probing_stays_within_its_budget_on_many_small_files(tmp_path: Path) -> None:
    """The parent probes the first PROBE_FREE files per worker, then only while probing
    costs under PROBE_SHARE of the workers' reading time: 4,000 small files get far fewer
    probes than files."""
    src = tmp_path / "src"
    _small_files(src, 4000)
    seen = Count()
    Backup(_repo(tmp_path), Config(), skip_dirs=[], exclude=[], workers=1, observer=seen).run([src])
    probed = sum(1 for f in seen.files if f.probe is not None)
    assert len(seen.files) == 4000
    assert engine.PROBE_FREE <= probed < 4000 // 3, probed
    # What the pipeline reports besides the probe: sizes, the zstd verdict, the digest.
    f = seen.files[0]
    assert f.old_size is None and f.size > 0 and 0 < f.stored_bytes <= f.new_bytes + 64 and len(f.digest) == 16


def test_an_observer_sees_changes_deletions_and_the_old_chunks_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "RACY_NS", -1)
    src = tmp_path / "src"
    src.mkdir()
    big = random.Random(2).randbytes(3 << 20)
    (src / "big.bin").write_bytes(big)
    (src / "gone.txt").write_text("bye\n")
    repo = _repo(tmp_path)
    Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    with open(src / "big.bin", "r+b") as f:  # one edit near the end: most chunks stay
        f.seek((3 << 20) - 1000)
        f.write(b"x" * 100)
    os.utime(src / "big.bin", (1_700_000_100, 1_700_000_100))
    (src / "gone.txt").unlink()
    seen = Count()
    Backup(repo, Config(), skip_dirs=[], exclude=[], observer=seen).run([src])
    (ch,) = seen.files
    assert ch.path == os.fsencode(src / "big.bin") and ch.old_size == 3 << 20
    assert ch.kept is not None and 0.5 <= ch.kept < 1.0 and not ch.silent
    assert seen.gone_paths == [os.fsencode(src / "gone.txt")]


def test_the_resample_budget_bounds_files_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "RACY_NS", -1)
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    for i in range(300):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(64 << 10))
    repo = _repo(tmp_path)
    cfg = Config()
    Backup(repo, cfg, skip_dirs=[], exclude=[]).run([src])
    roots = [os.fsencode(src)]
    by_files = resample(repo, cfg, roots, random.Random(1), max_files=10, max_bytes=1 << 30)
    assert by_files.checked == 10 and by_files.bytes_read == 10 * (64 << 10) and not by_files.mismatches
    by_bytes = resample(repo, cfg, roots, random.Random(1), max_files=300, max_bytes=200 << 10)
    assert by_bytes.checked == 3 and by_bytes.bytes_read <= 200 << 10
    # Seeded: the same seed draws the same files; files outside the paths are never read.
    again = resample(repo, cfg, roots, random.Random(1), max_files=10, max_bytes=1 << 30)
    assert again.checked == 10
    assert resample(repo, cfg, [b"/elsewhere"], random.Random(1), max_files=10, max_bytes=1 << 30).checked == 0
    # A file written since (its stat moved) is not corruption, and not read.
    victim = src / "f0.bin"
    victim.write_bytes(rng.randbytes(64 << 10))
    everything = resample(repo, cfg, roots, random.Random(2), max_files=300, max_bytes=1 << 30)
    assert not everything.mismatches and everything.checked >= 250


def test_findings_are_bounded_but_a_standing_alert_is_never_dropped(tmp_path: Path) -> None:
    """Three years of hourly backups: the state file stays small, the alert that stands
    survives, and the optimizer's history keeps its last MAX_HISTORY volumes."""
    state = st.AnomalyState()
    state.add(st.Finding("a" * 64, 1, ["/x"], "alert", 0.99, ["r"], protects="b" * 64))
    for i in range(st.MAX_FINDINGS + 50):
        state.add(st.Finding(f"{i:064x}", i + 2, ["/x"], "suspect", 0.6, ["odd"], details={"n": [1] * 50}))
    for i in range(26_280):
        state.add(st.Finding(f"{i:064x}", i + 2, ["/x"], "ok", 0.01, ["fine"], details={"n": [1] * 50},
                             features={"added": 1.0}))
    state.compact()
    oks = [f for f in state.findings if f.verdict == "ok"]
    others = [f for f in state.findings if f.verdict != "ok"]
    assert len(oks) == st.MAX_OK and len(others) == st.MAX_FINDINGS and others[0].standing
    assert state.protected() == {"b" * 64: state.findings[0]}
    assert state.paused_series() == {(b"/x",)}
    assert sum(1 for f in state.findings if f.details) == st.DETAILED  # and the alert's
    assert state.findings[0].details == {} or state.findings[0].verdict == "alert"
    st.save(tmp_path, state)
    assert st.state_path(tmp_path).stat().st_size < 4 << 20
    again, problem = st.load(tmp_path)
    assert problem is None and len(again.findings) == len(state.findings)
    db = st.AnomalyDB(tmp_path)
    for i in range(st.MAX_HISTORY + 100):
        db.add_volume(st.Volume(i, 1, 1, 1, 1, 1, 0.1))
    vols = db.volumes()
    assert len(vols) == st.MAX_HISTORY and vols[0].time_ns == 100
    db.close()
    (tmp_path / "anomaly.db").write_bytes(b"not a database" * 100)
    assert st.AnomalyDB(tmp_path).volumes() == []  # a damaged one starts empty


# -- true bit rot on ext4 ----------------------------------------------------------------------


@contextlib.contextmanager
def _ext4(workdir: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("ext4 on a loop device needs root")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is missing (apt-get install e2fsprogs)")
    image, mnt = workdir / "ext4.img", workdir / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    dev = None
    try:
        try:
            dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                 capture_output=True, text=True).stdout.strip()
        except subprocess.CalledProcessError as e:
            pytest.skip(f"no loop device: {e.stderr.strip()}")
        subprocess.run(["mkfs.ext4", "-q", dev], check=True, capture_output=True)
        subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
        yield dev, mnt
    finally:
        if dev is not None:
            for _ in range(20):
                if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            subprocess.run(["losetup", "-d", dev], check=False)
        image.unlink(missing_ok=True)


@pytest.mark.slow
def test_bit_rot_under_an_unchanged_stat_is_found_by_the_resample(cli: Cli, tmp_path: Path) -> None:
    from corestate.kernel import linux
    with _ext4(tmp_path) as (dev, mnt):
        src = mnt / "src"
        src.mkdir()
        rng = random.Random(4)
        for i in range(8):
            (src / f"doc{i}.txt").write_bytes(b"plain words " * rng.randint(3000, 6000))
        old = 1_700_000_000
        for p in src.iterdir():
            os.utime(p, (old, old))
        os.sync()
        time.sleep(2.2)  # past the racy window: the files cache vouches for every file
        cfg = cli.home / "config.toml"
        cfg.write_text(cfg.read_text().replace("resample_files = 32", "resample_files = 100"))
        first = cli.json("backup", str(src))
        assert isinstance(first, dict) and first["silent_corruption"] == []
        victim = src / "doc5.txt"
        before = victim.stat()
        fd = os.open(victim, os.O_RDONLY)
        try:
            ((_, physical, _, _), *_) = linux.fiemap(fd)
        finally:
            os.close(fd)
        # The disk flips a bit below the file system: no timestamp moves.
        dfd = os.open(dev, os.O_RDWR)
        try:
            byte = os.pread(dfd, 1, physical + 777)
            os.pwrite(dfd, bytes([byte[0] ^ 0x10]), physical + 777)
            os.fsync(dfd)
        finally:
            os.close(dfd)
        fd = os.open(victim, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read it from the disk again
        finally:
            os.close(fd)
        after = victim.stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        assert victim.read_bytes()[777:778] != b"plain words "[777 % 12:777 % 12 + 1]
        s = cli.json("backup", str(src))
        assert isinstance(s, dict)
        assert s["files_unchanged"] == 8 and s["resampled"] == 8  # the cache skipped it; the resample did not
        assert s["silent_corruption"] == [str(victim)]
        events = cli.json("anomaly", "list")
        assert isinstance(events, list) and events[-1]["silent_corruption"] == 1
