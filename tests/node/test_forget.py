"""forget and prune on a standalone node: a keep-policy with reasons, packs deleted only
when no remaining snapshot needs them, the rest intact and restorable."""

from __future__ import annotations

import os
from pathlib import Path

from corestate.node.treecompare import differences
from helpers import Cli


def store_bytes(cli: Cli) -> int:
    return sum(p.stat().st_size for p in (cli.home / "store").rglob("*") if p.is_file())


def test_forget_by_policy_then_prune_keeps_what_the_rest_needs(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.bin").write_bytes(os.urandom(2_000_000))  # in every snapshot
    (src / "gone.bin").write_bytes(os.urandom(2_000_000))  # only in the first
    first = cli.json("backup", str(src))
    (src / "gone.bin").unlink()
    (src / "new.bin").write_bytes(os.urandom(1_000_000))
    cli.json("backup", str(src))
    before = store_bytes(cli)

    dry = cli.json("forget", "--keep-last", "1", "--prune", "--dry-run")
    assert dry["dry_run"] and dry["forgotten"] == 1 and dry["packs_deleted"] >= 2
    assert store_bytes(cli) == before and len(cli.json("snapshots")) == 2
    verdicts = {s["id"]: s for s in dry["snapshots"]}
    assert verdicts[first["snapshot_id"]]["keep"] is False and verdicts[first["snapshot_id"]]["reasons"] == []
    assert [s["reasons"] for s in dry["snapshots"] if s["keep"]] == [["last 1"]]

    res = cli.json("forget", "--keep-last", "1", "--prune")
    # gone.bin shared a pack with keep.bin: that pack is repacked without it.
    assert res["forgotten"] == 1 and res["packs_repacked"] >= 1 and res["bytes_freed"] > 1_900_000, res
    assert abs((before - store_bytes(cli)) - res["bytes_freed"]) < 20_000
    left = cli.json("snapshots")
    assert isinstance(left, list) and len(left) == 1 and left[0]["id"] != first["snapshot_id"]
    assert cli.run("check", "--read-data").returncode == 0
    # The index rebuilt from the packs alone agrees: the forgotten snapshot stays gone.
    assert cli.run("check", "--rebuild-index", "--read-data").returncode == 0
    assert len(cli.json("snapshots")) == 1
    target = tmp_path / "t"
    cli.run("restore", "latest", "--target", str(target))
    assert differences(src, target / str(src).lstrip("/")) == []
    # Backups go on (the directory cache was emptied, the files cache still counts).
    again = cli.json("backup", str(src))
    assert again["complete"] and cli.run("check", "--read-data").returncode == 0
    # Nothing is left to prune.
    rest = cli.json("prune")
    assert rest["packs_deleted"] == rest["packs_repacked"] == 0, rest


def test_forget_by_name_without_prune_drops_only_the_record(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1_500_000))
    first = cli.json("backup", str(src))
    (src / "a.bin").write_bytes(os.urandom(1_500_000))
    cli.json("backup", str(src))
    res = cli.json("forget", first["snapshot_id"][:8])
    assert res["forgotten"] == 1 and res["packs_deleted"] == 1 and res["packs_repacked"] == 0  # its record only
    assert len(cli.json("snapshots")) == 1
    # The data only the forgotten snapshot used goes with a prune.
    pruned = cli.json("prune")
    assert pruned["packs_deleted"] + pruned["packs_repacked"] >= 1 and pruned["bytes_freed"] > 1_400_000, pruned
    assert cli.run("check", "--read-data").returncode == 0


def test_forget_needs_a_policy_or_names_and_refuses_both(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("x")
    cli.json("backup", str(src))
    p = cli.run("forget", check=False)
    assert p.returncode == 1 and "hint:" in p.stderr and "--keep-daily" in p.stderr
    p = cli.run("forget", "latest", "--keep-last", "1", check=False)
    assert p.returncode == 1 and "not both" in p.stderr
    assert len(cli.json("snapshots")) == 1
