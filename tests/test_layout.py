"""The package layout and the dependency direction of DESIGN.md section 1.

Every module of every package must import on its own, in a fresh interpreter started
from "/" (so only the installed ``corestate`` is found, never the checkout's folders): a
module that fails to import (a typo in a lazy path, a dependency missing from
``pyproject.toml``) is caught here rather than by the first user who reaches it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"])


def all_modules() -> list[str]:
    """Every module under the package folders of ``pyproject.toml``: packages and the
    ``.py`` files in them (folders without ``__init__.py`` are not packages: skipped)."""
    out: list[str] = []
    for name, top in _setuptools()["package-dir"].items():
        for init in sorted((ROOT / top).rglob("__init__.py")):
            pkg = ".".join([name, *init.parent.relative_to(ROOT / top).parts])
            out.append(pkg)
            out.extend(f"{pkg}.{py.stem}" for py in sorted(init.parent.glob("*.py"))
                       if py.stem not in ("__init__", "__main__"))
    return out


def test_every_package_folder_is_installed() -> None:
    cfg = _setuptools()
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


def test_every_module_imports() -> None:
    modules = all_modules()
    assert "corestate.node.runtime.mesh" in modules and "corestate.protocol.p2p" in modules
    # One interpreter, each module imported in turn; failures are collected so that one
    # report names all of them.
    code = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        bad.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, *modules], cwd="/", capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, f"modules that fail to import:\n{p.stdout}\n{p.stderr[-3000:]}"
