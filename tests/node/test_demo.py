"""The README's first command: ``corestate demo`` runs end to end and verifies itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "demo", "--dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "identical:" in p.stdout and "no damage found" in p.stdout
    assert (tmp_path / "d" / "home" / "store").is_dir()


def test_help_teaches(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "examples:" in p.stdout and "restore latest" in p.stdout
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli"], capture_output=True, text=True)
    assert p.returncode == 2
