"""The in-memory kernel: same protocols as the real providers, no OS calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from corestate.kernel.fake import FakeJournal, FakeTree
from corestate.kernel.snapshot import SnapshotSession, read_checked


def test_pure_modules_load_no_kernel_io() -> None:
    code = (
        "import sys\n"
        "import corestate.kernel, corestate.kernel.snapshot, corestate.kernel.fake\n"
        "import corestate.kernel.changes, corestate.kernel.errors\n"
        "bad = [m for m in ('trio', 'libp2p', 'textual', 'corestate.kernel.linux',\n"
        "       'corestate.kernel.btrfs', 'corestate.kernel.journal', 'sqlite3', 'ctypes')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_sessions_are_frozen_and_report_changes_since_the_parent() -> None:
    t = FakeTree()
    t.write("a/x", b"1" * 10000)
    t.write("a/y", b"y")
    t.write("b", b"b")
    s: SnapshotSession = t.snapshot()
    assert s.changed_paths() is None  # no parent yet
    t.write("a/x", b"2")
    assert read_checked(s, Path("a/x"), lambda f: f.read()).value == b"1" * 10000
    s.close(keep_as_parent=True)

    data = bytearray(b"1" * 10000)
    data[5000] = ord("2")
    t.write("a/x", bytes(data))
    t.rename("a/y", "c/y")
    t.delete("b")
    s2 = t.snapshot()
    changed = set(map(str, s2.changed_paths() or []))
    assert {"a/x", "a/y", "c/y", "b", "c", "a", "."} <= changed
    assert s2.block_changes(Path("a/x")) == [(4096, 4096)]
    assert s2.block_changes(Path("c/y")) is None  # new name: read it whole
    s2.close(keep_as_parent=True)
    assert t.live_sessions == 0
    s3 = t.snapshot()
    assert list(s3.changed_paths() or []) == []
    assert ("c/y", False) in {(str(p), d) for p, d in s3.walk()}  # type: ignore[attr-defined]
    s3.close(keep_as_parent=False)
    assert t.parent is s2 and t.live_sessions == 0


def test_fake_journal_tokens_gaps_and_downtime() -> None:
    t = FakeTree()
    j = FakeJournal(t)
    tok = j.mark()
    t.write("f", b"1")
    cs = j.changes_since(tok)
    assert cs.paths == {Path("f"), Path(".")}
    tok = cs.token
    j.overflow()
    assert j.changes_since(tok).full_walk_required
    tok = j.mark()
    j.restart()
    cs = j.changes_since(tok)
    assert cs.full_walk_required and "not running" in cs.reason
    assert j.changes_since(cs.token).paths == frozenset()
