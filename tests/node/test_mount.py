"""``corestate mount DIR`` on a real FUSE mount, read with ordinary file tools (issue 19 item 4).

Two nodes on loopback with their daemons running. The owner backs up a tree; its data
packs go to the holder and leave the owner's store (all shares acknowledged), so reading
a file through the mount fetches the packs through the owner's daemon (``pack-read``). The
mount runs beside the daemon (no home lock) and is checked with ``ls -l``, ``find``,
``cat``, ``cmp``, ``readlink`` and reads at random offsets of a 24 MiB file (24 packs of 1 MiB,
fetched ahead by the mount); a snapshot made while mounted appears; writes fail; SIGINT unmounts.
Without a daemon the mount holds the home and fetches from the holder itself (an I/O error
while the holder is down). Ctrl-C in a real terminal (tmux) unmounts and exits 0.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.runtime.localmesh import LocalMesh
from meshutil import make_mesh, random_tree, store_packs, wait_for

pyfuse3 = pytest.importorskip("pyfuse3", reason="pip install 'corestate[mount]' (needs libfuse3-dev)")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse on this machine"),
]

BIG = 24 << 20


def tool(*argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=120, check=check)


class Mounted:
    def __init__(self, lm: LocalMesh, where: Path) -> None:
        self.where = where
        where.mkdir(exist_ok=True)
        node = lm.nodes[0]
        self.proc = subprocess.Popen(
            [*lm.cmd(node, "mount"), "--passphrase-file", str(lm.pw), str(where)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lm.env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("mounted "), line + self.proc.stderr.read()  # type: ignore[union-attr]
        assert os.path.ismount(where)

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    lm = make_mesh(tmp_path / "mesh", 2)
    try:
        yield lm
    finally:
        lm.close()
        for m in tmp_path.glob("mnt*"):
            if os.path.ismount(m):
                subprocess.run(["fusermount3", "-u", "-z", str(m)], check=False)


def test_browse_and_read_snapshots_through_a_real_mount(mesh: LocalMesh, tmp_path: Path) -> None:
    lm = mesh
    owner = lm.nodes[0]
    src = random_tree(tmp_path / "src", 3, seed=4)
    rnd = random.Random(19)
    big = src / "data" / "big.bin"
    big.write_bytes(rnd.randbytes(BIG))
    lm.start()
    before = store_packs(owner.home)
    lm.run(owner, "backup", str(src))
    # The data packs (27 MiB in 1 MiB packs) went to the holder and left the owner's
    # store; only the metadata packs (trees, the snapshot record) stay.
    kept = store_packs(owner.home) - before
    assert len(kept) <= 3, f"{len(kept)} packs stayed local: the reads would not go to the daemon"

    m = Mounted(lm, tmp_path / "mnt")
    try:
        mnt = m.where
        assert os.readlink(mnt / "latest").startswith("snapshots/")
        snap = mnt / "latest" / str(src).lstrip("/")
        # ls -l and find list what was backed up, with its sizes and modes.
        ls = tool("ls", "-l", str(snap / "data")).stdout.decode()
        assert "big.bin" in ls and str(BIG) in ls
        found = tool("find", str(snap)).stdout.decode().splitlines()
        expect = {str(snap / p.relative_to(src)) for p in src.rglob("*")} | {str(snap)}
        assert set(found) == expect
        assert tool("stat", "-c", "%a", str(snap / "notes.txt")).stdout.decode().strip() == "640"
        assert tool("readlink", str(snap / "latest")).stdout.decode().strip() == "data/blob00.bin"
        assert tool("cat", str(snap / "notes.txt")).stdout == (src / "notes.txt").read_bytes()
        for p in sorted((src / "data").iterdir()):
            assert tool("cmp", str(p), str(snap / "data" / p.name), check=False).returncode == 0, p
        # Random reads of the big file (24 packs, fetched through the daemon as needed).
        data = big.read_bytes()
        with open(snap / "data" / "big.bin", "rb", buffering=0) as f:
            for _ in range(60):
                off = rnd.randrange(BIG)
                n = rnd.choice([1, 4096, 100_000, 3 << 20])
                assert os.pread(f.fileno(), n, off) == data[off:off + n], (off, n)
        # Read-only: nothing can be written or made.
        with pytest.raises(OSError):
            (snap / "notes.txt").write_text("x")
        with pytest.raises(OSError):
            (snap / "new").write_text("x")
        # A snapshot made while mounted appears, and latest follows it.
        first = os.readlink(mnt / "latest")
        (src / "later.txt").write_text("made while mounted\n")
        lm.run(owner, "backup", str(src))
        wait_for(lambda: os.readlink(mnt / "latest") != first, 30, "the new snapshot", every=0.5)
        assert len(os.listdir(mnt / "snapshots")) == 2
        assert (mnt / "latest" / str(src).lstrip("/") / "later.txt").read_text() == "made while mounted\n"
    finally:
        code, out, err = m.stop()
    assert code == 0, err
    assert "unmounted" in out
    assert not os.path.ismount(tmp_path / "mnt")


def test_without_a_daemon_the_mount_fetches_from_the_holders_itself(mesh: LocalMesh, tmp_path: Path) -> None:
    lm = mesh
    owner = lm.nodes[0]
    src = random_tree(tmp_path / "src", 2, seed=5)
    lm.start()
    lm.run(owner, "backup", str(src))
    lm.stop(0)
    lm.stop(1)  # no daemon anywhere: the data lives only on the holder, which is down
    m = Mounted(lm, tmp_path / "mnt2")
    try:
        snap = m.where / "latest" / str(src).lstrip("/")
        # The tree (metadata packs stay local) lists; the data cannot be read: EIO.
        assert sorted(os.listdir(snap / "data")) == ["blob00.bin", "blob01.bin"]
        p = tool("cat", str(snap / "data" / "blob00.bin"), check=False)
        assert p.returncode != 0 and b"Input/output error" in p.stderr, p
        # The holder back: this process fetches from it itself (a transient host).
        lm.start(1)
        for name in ("blob00.bin", "blob01.bin"):
            assert tool("cmp", str(src / "data" / name), str(snap / "data" / name), check=False).returncode == 0
        # Meanwhile it holds the home, like any command run in place.
        busy = lm.run(owner, "backup", str(src), check=False)
        assert busy.returncode != 0 and "pid" in busy.stderr, busy.stderr
    finally:
        code, _, err = m.stop()
    assert code == 0, err
    assert lm.run(owner, "backup", str(src), check=False).returncode in (0, 3)  # the home is free again


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")
def test_ctrl_c_in_a_terminal_unmounts(tmp_path: Path) -> None:
    """The mount in a real terminal (tmux), stopped by the keys a person presses."""
    lm = make_mesh(tmp_path / "solo", 1)
    session = f"corestate-mount-{os.getpid()}"
    where = tmp_path / "mnt-tty"
    where.mkdir()
    try:
        src = random_tree(tmp_path / "src", 1, seed=3)
        lm.run(lm.nodes[0], "backup", str(src))
        cmd = " ".join(shlex.quote(a) for a in [*lm.cmd(lm.nodes[0], "mount"), "--passphrase-file",
                                                 str(lm.pw), str(where)])
        tool("tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "20",
             f"{cmd}; echo EXIT=$?; sleep 60")
        wait_for(lambda: os.path.ismount(where), 60, "the mount")
        assert (where / "latest" / str(src).lstrip("/") / "notes.txt").read_bytes() == \
            (src / "notes.txt").read_bytes()
        tool("tmux", "send-keys", "-t", session, "C-c")
        def ended() -> str:
            text = tool("tmux", "capture-pane", "-p", "-t", session).stdout.decode()
            return text if "EXIT=" in text else ""
        screen = wait_for(ended, 60, "the mount to end", every=0.2)
        assert "EXIT=0" in screen and f"unmounted {where}" in screen, screen
        assert not os.path.ismount(where)
    finally:
        tool("tmux", "kill-session", "-t", session, check=False)
        lm.close()
        if os.path.ismount(where):
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False)
