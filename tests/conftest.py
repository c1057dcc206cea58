"""Fixtures shared by every test folder; the helpers themselves live in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PASSPHRASE, Cli


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    pw = tmp_path / "passphrase"
    pw.write_text(PASSPHRASE + "\n")
    c = Cli(tmp_path / "home", pw)
    c.run("init")
    yield c
