"""Crash safety (real backups killed with SIGKILL) and bad input: every failure is clear,
exits non-zero, and loses nothing already stored."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corestate.node.treecompare import differences
from helpers import Cli, make_tree
from mnemonic import Mnemonic


def data_tree(root: Path, seed: int, files: int = 60, size: int = 1_500_000) -> int:
    rnd = random.Random(seed)
    total = 0
    for i in range(files):
        d = root / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        n = rnd.randrange(size // 2, size)
        (d / f"f{i}.bin").write_bytes(rnd.randbytes(n))
        total += n
    return total


@pytest.mark.slow
def test_backup_killed_at_random_moments_stays_consistent_and_resumes(cli: Cli, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    print(f"CRASH_SEED={seed}")
    rnd = random.Random(seed)
    src = tmp_path / "src"
    total = data_tree(src, seed)
    argv = [sys.executable, "-m", "corestate.node.cli", "backup", str(src), "--json",
            "--passphrase-file", str(cli.pwfile)]
    for attempt in range(6):
        proc = subprocess.Popen(argv, env=cli.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.3, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The store is consistent after every kill, whatever the moment.
        check = cli.run("check", check=False)
        assert check.returncode == 0, f"attempt {attempt}, seed {seed}:\n{check.stdout}{check.stderr}"
    stored_before = cli.json("stats")["store_bytes"]
    final = cli.json("backup", str(src))
    # Packs that landed before the kills are reused, not written again.
    assert final["bytes_added"] <= total - stored_before + 2_000_000, (seed, stored_before, final)
    assert cli.run("check", "--read-data").returncode == 0
    target = tmp_path / "t"
    cli.run("restore", "latest", "--target", str(target))
    assert differences(src, target / str(src).lstrip("/")) == []


def test_wrong_passphrase_missing_home_and_existing_home(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not it\n")
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "snapshots", "--passphrase-file", str(bad)],
                       env=cli.env(), capture_output=True, text=True)
    assert p.returncode == 1
    assert "passphrase does not unlock" in p.stderr and "hint:" in p.stderr
    missing = Cli(tmp_path / "nowhere", cli.pwfile)
    p = missing.run("snapshots", check=False)
    assert p.returncode == 1 and "no node home" in p.stderr and "corestate init" in p.stderr
    p = cli.run("init", check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    env = cli.env()
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "snapshots"], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "--passphrase-file" in p.stderr


def test_phrase_recovers_the_same_keys_and_passwd_changes_the_seal(tmp_path: Path) -> None:
    pw = tmp_path / "pw2"
    pw.write_text("first\n")
    a = Cli(tmp_path / "a", pw)
    info = a.json("init")
    src = make_tree(tmp_path / "src")
    a.json("backup", str(src))
    phrase = tmp_path / "phrase"
    phrase.write_text(info["phrase"] + "\n")
    # A fresh home pointed at the same store (as a disk swap would leave it).
    b = Cli(tmp_path / "b", pw)
    b.run("init", "--recover", "--phrase-file", str(phrase))
    cfg = (tmp_path / "b" / "config.toml").read_text().replace('path = "store"', f'path = "{tmp_path / "a" / "store"}"')
    (tmp_path / "b" / "config.toml").write_text(cfg)
    assert b.json("stats")["peer_id"] == info["peer_id"]
    b.run("restore", "latest", "--target", str(tmp_path / "r"))
    assert differences(src, tmp_path / "r" / str(src).lstrip("/")) == []
    bad_phrase = tmp_path / "badphrase"
    # The reversed words, rotated until the checksum fails (a reversal alone passes it
    # once in 256 phrases).
    words = info["phrase"].split()[::-1]
    while Mnemonic("english").check(" ".join(words)):
        words = words[1:] + words[:1]
    bad_phrase.write_text(" ".join(words))
    p = Cli(tmp_path / "c", pw).run("init", "--recover", "--phrase-file", str(bad_phrase), check=False)
    assert p.returncode == 1 and "phrase is not valid" in p.stderr
    new = tmp_path / "new"
    new.write_text("second\n")
    a.run("key", "passwd", "--new-passphrase-file", str(new))
    assert a.run("snapshots", check=False).returncode == 1
    assert Cli(a.home, new).run("snapshots").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_fails_clearly_and_keeps_what_was_stored(cli: Cli, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)], check=True)
    try:
        cfg = cli.home / "config.toml"
        cfg.write_text(cfg.read_text().replace('path = "store"', f'path = "{small}"'))
        first = tmp_path / "first"
        first.mkdir()
        (first / "keep.txt").write_text("precious")
        cli.json("backup", str(first))
        big = tmp_path / "big"
        data_tree(big, 1, files=20, size=1_500_000)
        p = cli.run("backup", str(big), check=False)
        assert p.returncode == 1
        assert "no space left" in p.stderr and "hint:" in p.stderr and "Traceback" not in p.stderr
        assert cli.run("check").returncode == 0
        target = tmp_path / "t"
        cli.run("restore", "latest", "--target", str(target))
        assert (target / str(first).lstrip("/") / "keep.txt").read_text() == "precious"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_damaged_pack_is_named_with_the_files_it_touches(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "victim.bin").write_bytes(os.urandom(2_000_000))
    (src / "other.txt").write_text("x" * 10)
    cli.json("backup", str(src))
    packs = sorted((cli.home / "store" / "packs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    biggest = packs[-1]
    data = bytearray(biggest.read_bytes())
    data[1000] ^= 0xFF
    biggest.write_bytes(bytes(data))
    assert cli.run("check").returncode == 0, "structure is intact; only --read-data reads the bytes"
    p = cli.run("check", "--read-data", "--json", check=False)
    assert p.returncode == 1
    report = json.loads(p.stdout.strip().splitlines()[-1])
    kinds = {d["what"] for d in report["damage"]}
    assert "pack" in kinds and "blob" in kinds
    touched = [f for d in report["damage"] for f in d["files"]]
    assert any(f.endswith("/victim.bin") for f in touched)
    assert not any(f.endswith("/other.txt") for f in touched)
    r = cli.run("restore", "latest", "--target", str(tmp_path / "t"), check=False)
    assert r.returncode == 1 and "victim.bin" in r.stderr and "damaged data" in r.stderr
    restored = tmp_path / "t" / str(src).lstrip("/")
    assert (restored / "other.txt").read_text() == "x" * 10
    # The damaged file was created under its own name (it was free) and removed again:
    # no partial file, no temporary left behind.
    assert sorted(p.name for p in restored.iterdir()) == ["other.txt"]
    # Over an existing file the restore writes a temporary name: the old file survives.
    (restored / "victim.bin").write_text("older version")
    r = cli.run("restore", "latest", "--target", str(tmp_path / "t"), check=False)
    assert r.returncode == 1 and "damaged data" in r.stderr
    assert (restored / "victim.bin").read_text() == "older version"
    assert sorted(p.name for p in restored.iterdir()) == ["other.txt", "victim.bin"]


def test_damaged_index_row_is_detected_and_rebuilt(cli: Cli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    cli.json("backup", str(src))
    db = sqlite3.connect(cli.home / "index.db")
    db.execute("UPDATE blobs SET offset = offset + 7 WHERE rowid IN (SELECT rowid FROM blobs LIMIT 3)")
    db.commit()
    db.close()
    p = cli.run("check", check=False)
    assert p.returncode == 1 and "index row disagrees" in p.stdout and "--rebuild-index" in p.stdout
    assert cli.run("check", "--rebuild-index", "--read-data").returncode == 0
    cli.run("restore", "latest", "--target", str(tmp_path / "t"))
    assert differences(src, tmp_path / "t" / str(src).lstrip("/")) == []


def test_two_processes_never_write_one_home(cli: Cli, tmp_path: Path) -> None:
    from corestate.node.home import Home
    h = Home(cli.home)
    h.lock()
    try:
        p = cli.run("snapshots", check=False)
        assert p.returncode == 1 and "another corestate process" in p.stderr
    finally:
        h.unlock()
