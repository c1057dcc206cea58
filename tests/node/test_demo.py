"""The README's first command: ``corestate demo`` runs a 5-daemon mesh end to end and
verifies itself (restore with two holders killed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-P", "-m", "corestate.node.cli", "demo", "--dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "identical:" in p.stdout
    assert "coded k=2 n=4 onto 4 peer(s)" in p.stdout
    assert "unreachable" in p.stdout and "DEGRADED" in p.stdout.upper()
    # The owner dropped its local copies of data packs: the restore really came from peers.
    assert "on peers only" in p.stdout
    # Every daemon was stopped at the end: the cleanly stopped ones removed their control
    # socket; the two killed ones left a stale one that nobody answers.
    from corestate.node.runtime.client import connect
    for i in range(1, 6):
        home = tmp_path / "d" / f"node{i}"
        assert connect(home) is None
        assert (home / "control.sock").exists() == (i in (2, 3))


def test_help_teaches(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "examples:" in p.stdout and "restore latest" in p.stdout
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli"], capture_output=True, text=True)
    assert p.returncode == 2
