"""The benchmark tree generator (tests/bench/treegen.py): determinism, kinds, mutation size.

tests/bench is not collected by pytest, so the generator is loaded by path. Trees are 4 MiB:
the whole file runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

SIZE = 4 * 1024 * 1024
GEN_PATH = Path(__file__).resolve().parent / "bench" / "treegen.py"


def _load() -> ModuleType:
    name = "corestate_bench_treegen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GEN_PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


treegen = _load()


def _digest(root: Path) -> str:
    """Hash of names, types, modes, sizes, mtimes, contents, link targets, hardlink groups."""
    h = hashlib.sha256()
    first_name: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            s = os.lstat(p)
            h.update(f"{rel}\0{stat.S_IFMT(s.st_mode)}\0{s.st_mode & 0o7777}\0".encode())
            h.update(f"{s.st_mtime_ns}\0".encode())
            if stat.S_ISLNK(s.st_mode):
                # Absolute links embed the root, the one thing allowed to differ.
                h.update(os.readlink(p).replace(str(root), "<root>").encode())
            elif stat.S_ISREG(s.st_mode):
                h.update(f"{s.st_size}\0{first_name.setdefault(s.st_ino, rel)}\0".encode())
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _contents(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


def _changed_bytes(old: dict[str, bytes], new: dict[str, bytes]) -> int:
    """Bytes a backup must add: the differing middle of a file kept at its path, the whole
    of a new path unless its content already existed (a rename)."""
    known = {hashlib.sha256(b).digest() for b in old.values()}
    total = 0
    for rel, data in new.items():
        before = old.get(rel)
        if before is None:
            total += 0 if hashlib.sha256(data).digest() in known else len(data)
            continue
        n = min(len(before), len(data))
        pre = 0
        while pre < n and before[pre] == data[pre]:
            pre += 1
        suf = 0
        while suf < n - pre and before[-1 - suf] == data[-1 - suf]:
            suf += 1
        total += len(data) - pre - suf
    return total


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("treegen") / "a"
    treegen.generate(root, SIZE, seed=7)
    return root


def test_same_seed_same_tree(tree: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    treegen.generate(again, SIZE, seed=7)
    assert _digest(again) == _digest(tree)
    other = tmp_path / "c"
    treegen.generate(other, SIZE, seed=8)
    assert _digest(other) != _digest(tree)


def test_every_kind_is_present(tree: Path) -> None:
    st = treegen.scan(tree)
    assert st.symlinks > 0 and st.hardlinks > 0
    assert st.empty_files > 0 and st.empty_dirs > 0
    assert st.max_depth >= 20
    assert 0.9 * SIZE <= st.bytes <= 1.2 * SIZE
    assert 40 <= st.files <= 400  # 20k-40k per GiB, plus the fixed extras of a tiny tree
    targets = [os.readlink(p) for p in tree.rglob("*") if p.is_symlink()]
    assert any(os.path.isabs(t) for t in targets)
    assert any(not os.path.isabs(t) for t in targets)
    dangling = [p for p in tree.rglob("*") if p.is_symlink() and not p.exists()]
    assert dangling
    sizes = sorted((p.stat().st_size for p in tree.rglob("*.mkv")), reverse=True)
    assert len(sizes) == 3 and 0.3 * SIZE <= sum(sizes) <= 0.4 * SIZE


def test_mutation_changes_about_the_requested_share(tree: Path, tmp_path: Path) -> None:
    roots = [tmp_path / "m1", tmp_path / "m2"]
    for r in roots:
        treegen.generate(r, SIZE, seed=7)
    before = _contents(roots[0])
    reports = [treegen.mutate(r, percent=5, seed=3) for r in roots]
    assert _digest(roots[0]) == _digest(roots[1])  # deterministic too
    rep = reports[0]
    assert rep.deleted_files > 0 and rep.renamed_files > 0 and rep.new_files > 0
    assert rep.appended_files > 0 and rep.edited_files >= 2
    total = rep.total_bytes_before
    measured = _changed_bytes(before, _contents(roots[0]))
    assert 0.03 * total <= measured <= 0.08 * total, (measured / total, rep)
    assert abs(measured - rep.changed_bytes) <= 0.2 * rep.changed_bytes


def test_parse_size() -> None:
    assert treegen.parse_size("1GiB") == 1 << 30
    assert treegen.parse_size("64MiB") == 64 << 20
    assert treegen.parse_size("512k") == 512 << 10
    assert treegen.parse_size("4096") == 4096
    with pytest.raises(ValueError):
        treegen.parse_size("lots")
