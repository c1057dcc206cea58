"""The daemon keeps a change journal of the configured paths: a backup after one change
lists O(changed) folders; daemon downtime leads to a full walk that says why; the result
is the snapshot a full walk makes. Also: the daemon's scheduled backups run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences


def _tree(root: Path, dirs: int = 40, files: int = 50) -> int:
    for d in range(dirs):
        sub = root / f"d{d // 10}" / f"s{d}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f}").write_text(f"{d}/{f}\n")
    return dirs * files


def _backup(mesh: LocalMesh) -> dict:
    p = mesh.run(mesh.nodes[0], "backup", "--json")
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_one_change_lists_only_its_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    total = _tree(src)
    with LocalMesh(tmp_path / "mesh", 1) as node:
        node.create()
        cfg = node.nodes[0].home / "config.toml"
        cfg.write_text(cfg.read_text().replace("paths = []", f'paths = ["{src}"]', 1))
        _journal_round(node, src, total, tmp_path)


def _journal_round(node: LocalMesh, src: Path, total: int, tmp_path: Path) -> None:
    node.start()
    # The tree must be older than the 2 s racy window when it is first read, or its files
    # and folders stay out of the caches (a fast daemon start made this flaky).
    age = time.time() - max(p.stat().st_ctime for p in [src, *src.rglob("*")])
    time.sleep(max(0.0, 2.1 - age))
    first = _backup(node)
    assert first["change_journal"] == {"used": False, "detail": "no journal token: first backup"}
    assert first["paths_visited"] > total
    # The change comes first, then a pause past the racy window: the caches hold
    # everything, and the second backup reads the changed file settled, so its cache entry
    # is exact however long that backup takes to start (a fixed 2 s race under load).
    (src / "d2" / "s25" / "f7").write_text("changed\n")
    time.sleep(2.1)
    second = _backup(node)
    assert second["change_journal"] == {"used": True, "detail": "1 changed path(s)"}
    assert second["paths_visited"] < 100, second  # root 4 + d2 10 + s25 50 entries
    assert second["files"] == total
    assert second["bytes_read"] == len("changed\n")
    # The snapshot is complete: a restore equals the live tree.
    node.run(node.nodes[0], "restore", "latest", "--target", str(tmp_path / "r"))
    assert differences(src, tmp_path / "r" / str(src).lstrip("/")) == []

    # Downtime: the daemon stops, a file changes, the daemon starts again. The journal
    # cannot vouch for the gap: the next backup walks everything and sees the change.
    node.stop(0)
    (src / "d0" / "s3" / "f1").write_text("changed while the daemon was down\n")
    node.start()
    third = _backup(node)
    assert third["change_journal"]["used"] is False
    assert "not running" in third["change_journal"]["detail"]
    assert third["paths_visited"] > total
    # Read: only the file changed during the downtime; the rest comes from the files cache.
    assert third["bytes_read"] == len("changed while the daemon was down\n")


def _scheduled(tmp_path: Path, src: Path, retention: str = "") -> LocalMesh:
    """One node (created, not started) backing ``src`` up every second; ``retention``
    lines go into its [retention] table."""
    mesh = LocalMesh(tmp_path / "mesh", 1)
    mesh.create()
    cfg = mesh.nodes[0].home / "config.toml"
    text = cfg.read_text().replace("paths = []", f'paths = ["{src}"]', 1)
    text = text.replace("backup_every = 0", 'backup_every = "1s"')
    assert text.rstrip().endswith("# keep_monthly = 12")  # [retention] is the last table
    cfg.write_text(text + retention)
    return mesh


def test_scheduled_backups_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, dirs=2, files=3)
    mesh = _scheduled(tmp_path, src)
    try:
        mesh.start()
        deadline = time.monotonic() + 30
        snaps: list = []
        while time.monotonic() < deadline and len(snaps) < 2:
            time.sleep(0.5)
            p = mesh.run(mesh.nodes[0], "snapshots", "--json")
            snaps = json.loads(p.stdout)
        assert len(snaps) >= 2 and all(s["files"] == 6 for s in snaps)
    finally:
        mesh.close()


def test_scheduled_backups_keep_to_the_retention_rules(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, dirs=2, files=3)
    mesh = _scheduled(tmp_path, src, "keep_last = 2\n")
    try:
        mesh.start()
        node = mesh.nodes[0]
        seen: set[str] = set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(seen) < 5:
            (src / "d0" / "f0").write_text(f"round {len(seen)}\n")  # each backup differs
            time.sleep(0.5)
            p = mesh.run(node, "snapshots", "--json", check=False)
            assert p.returncode == 0, p.stderr + (node.home / "daemon.log").read_text()[-3000:]
            snaps = json.loads(p.stdout)
            seen |= {s["id"] for s in snaps}
            assert len(snaps) <= 2, snaps  # backup and forget run under one hold of the command lock
        assert len(seen) >= 5, "the daemon did not back up on schedule"
        snaps = json.loads(mesh.run(node, "snapshots", "--json").stdout)
        assert len(snaps) == 2
        assert mesh.run(node, "check", "--read-data").returncode == 0
    finally:
        mesh.close()
