"""The package layout and the dependency direction of DESIGN.md section 1."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    for top, name in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]))
    assert found == listed, f"pyproject packages differ from folders: {found ^ listed}"


def test_pure_cores_load_no_runtime_libraries() -> None:
    code = (
        "import sys\n"
        "import corestate.node.core, corestate.erasure, corestate.protocol, corestate.kernel\n"
        "bad = [m for m in ('trio', 'libp2p', 'textual') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
