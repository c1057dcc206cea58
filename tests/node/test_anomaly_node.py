"""The anomaly model on a node (issue 14): verdicts in every backup, the protection an alert
gives, ``anomaly list|explain|ack``, a damaged state file, silent corruption, the limits.

Real files, a real cipher for the attack (ChaCha20-Poly1305), the real CLI in processes; one
test through a real daemon (events, protection, ack).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from helpers import Cli

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "backup", "mesh", "node", "report", "budget", "meeting", "notes", "plan", "invoice", "travel", "family", "garden", "recipe"]


def _text(rng: random.Random, words: int) -> bytes:
    return (" ".join(rng.choice(WORDS) for _ in range(words)) + "\n").encode()


def make_home_tree(root: Path, files: int = 200, seed: int = 1) -> list[Path]:
    """A small home folder: notes, code, office documents (zip), spreadsheets (csv), images."""
    rng = random.Random(seed)
    out = []
    for i in range(files):
        d = root / f"folder{i % 10}" / ("sub" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        kind = i % 5
        if kind == 0:
            p = d / f"notes{i}.txt"
            p.write_bytes(_text(rng, rng.randint(200, 3000)))
        elif kind == 1:
            p = d / f"script{i}.py"
            p.write_bytes(_text(rng, rng.randint(100, 2000)))
        elif kind == 2:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("word/document.xml", _text(rng, rng.randint(500, 5000)))
            p = d / f"report{i}.docx"
            p.write_bytes(buf.getvalue())
        elif kind == 3:
            p = d / f"table{i}.csv"
            p.write_bytes(_text(rng, rng.randint(1000, 8000)))
        else:
            p = d / f"photo{i}.png"
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + zlib.compress(bytes(rng.randrange(40) for _ in range(20000))))
        out.append(p)
    # Older than the files cache's racy window, so unchanged files are cache hits.
    old = 1_700_000_000
    for p in out:
        os.utime(p, (old, old))
    time.sleep(2.2)  # past the files cache's racy window (node/engine/backup.py RACY_NS): cacheable
    return out


def encrypt_and_rename(root: Path, share: float, seed: int = 5) -> list[Path]:
    """Ransomware: encrypt ``share`` of the files with ChaCha20-Poly1305 into ``NAME.locked``,
    delete the originals, drop a ransom note in every folder it touched."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    rng = random.Random(seed)
    aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())
    victims = rng.sample(files, max(1, int(len(files) * share)))
    for p in victims:
        nonce = os.urandom(12)
        p.with_name(p.name + ".locked").write_bytes(nonce + aead.encrypt(nonce, p.read_bytes(), None))
        p.unlink()
    for d in sorted({p.parent for p in victims}):
        (d / "HOW_TO_DECRYPT.txt").write_text(
            "All your files are encrypted. To decrypt them send bitcoin to the wallet below.\n"
            "Use the tor browser to reach our .onion page for the private key.\n")
    return victims


def backup(cli: Cli, src: Path) -> dict:
    out = cli.json("backup", str(src))
    assert isinstance(out, dict) and out["type"] == "summary"
    return out


def benign_churn(src: Path, rng: random.Random, step: int) -> None:
    """An hour of someone's work: edits, a new note, a new photo, a rename, a deletion."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for p in rng.sample([f for f in files if f.suffix in (".txt", ".py", ".csv")], 3):
        with open(p, "ab") as f:
            f.write(_text(rng, 50))
    (src / "folder1" / f"idea{step}.md").write_bytes(_text(rng, 300))
    (src / "folder2" / f"img{step}.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + zlib.compress(bytes(rng.randrange(40) for _ in range(30000))))
    victim = rng.choice([f for f in files if f.suffix == ".csv"])
    victim.rename(victim.with_name(f"renamed{step}-{victim.name}"))


# -- the whole story on a standalone node ---------------------------------------------------------


@pytest.mark.slow
def test_an_attack_alerts_at_the_first_affected_snapshot_and_protects_the_one_before(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_home_tree(src)
    first = backup(cli, src)
    # Every summary has the verdict, the first one included.
    assert first["anomaly"]["verdict"] in ("ok", "suspect") and isinstance(first["anomaly"]["score"], float)
    rng = random.Random(3)
    for step in range(3):
        benign_churn(src, rng, step)
        s = backup(cli, src)
        assert s["anomaly"]["verdict"] != "alert", s["anomaly"]
    before = cli.json("snapshots")[-1]["id"]  # type: ignore[index]

    victims = encrypt_and_rename(src, 0.05)
    assert len(victims) == 10
    hit = backup(cli, src)
    a = hit["anomaly"]
    assert a["verdict"] == "alert" and a["score"] >= 0.9 and a["reasons"], a
    assert any("encrypted" in r for r in a["reasons"]), a["reasons"]

    snaps = cli.json("snapshots")
    assert isinstance(snaps, list)
    protected = {s["id"]: s["protected"] for s in snaps}
    assert protected[before] is True and sum(protected.values()) == 1
    verdicts = {s["id"]: s["verdict"] for s in snaps}  # each backup's verdict, as judged
    assert verdicts[hit["snapshot_id"]] == "alert" and verdicts[before] == "ok", verdicts

    # forget naming it refuses and points to `anomaly ack`.
    p = cli.run("forget", before[:8], check=False)
    assert p.returncode != 0 and "anomaly ack" in p.stderr and "protected" in p.stderr
    # A policy keeps it (and says why); prune leaves it whole.
    out = cli.json("forget", "--keep-last", "1", "--prune")
    assert isinstance(out, dict)
    kept = {s["id"]: s for s in out["snapshots"]}
    assert kept[before]["keep"] and any("anomaly" in r for r in kept[before]["reasons"])
    cli.json("prune")
    assert [s["id"] for s in cli.json("snapshots")] == [before, hit["snapshot_id"]]  # type: ignore[union-attr]
    cli.run("restore", before[:8], "--target", str(tmp_path / "restored"))
    assert (tmp_path / "restored" / str(victims[0]).lstrip("/")).read_bytes() != b""

    # list and explain: the numbers and the files most responsible.
    rows = cli.json("anomaly", "list")
    assert isinstance(rows, list) and rows[-1]["snapshot_id"] == hit["snapshot_id"]
    assert rows[-1]["protects"] == before and rows[-1]["acked_ns"] is None
    ex = cli.json("anomaly", "explain", hit["snapshot_id"][:8])
    assert isinstance(ex, dict)
    locked = {f["path"] for f in ex["files"]}
    assert locked and all(p.endswith(".locked") for p in locked), locked
    assert {str(v) + ".locked" for v in victims} >= locked
    assert any(n["name"] == "encrypted_looking" and float(n["value"]) >= 5 for n in ex["numbers"])
    text = cli.run("anomaly", "explain", "latest").stdout
    assert "the files most responsible" in text and "usual" in text

    # ack: refused without a terminal or --yes; with --yes it lifts the protection.
    p = cli.run("anomaly", "ack", hit["snapshot_id"][:8], check=False, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "--yes" in p.stderr
    acked = cli.json("anomaly", "ack", hit["snapshot_id"][:8], "--yes")
    assert acked == {"snapshot_id": hit["snapshot_id"], "verdict": "alert", "unprotected": before,
                     "learned": True, "already": False}
    assert not any(s["protected"] for s in cli.json("snapshots"))  # type: ignore[union-attr]
    cli.json("forget", before[:8])
    assert cli.json("anomaly", "ack", hit["snapshot_id"][:8], "--yes")["already"] is True  # type: ignore[index]


@pytest.mark.slow
def test_benign_hard_cases_do_not_alert(cli: Cli, tmp_path: Path) -> None:
    """A dozen snapshots of history, then the cases the issue names: an archive of a folder
    into .tar.zst and the folder deleted, an import of photos, a bulk rename, log growth,
    a database's page writes, a transcode to another format."""
    import tarfile

    import zstandard
    src = tmp_path / "src"
    make_home_tree(src)
    rng = random.Random(9)
    verdicts = [backup(cli, src)["anomaly"]["verdict"]]
    for step in range(3):
        benign_churn(src, rng, step)
        verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    # Archive folder3 into a .tar.zst and delete it.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src / "folder3", arcname="folder3")
    (src / "folder3.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    import shutil
    shutil.rmtree(src / "folder3")
    verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    # An import of 60 photos (JPEG: compressed, high entropy, but not random).
    cam = src / "camera"
    cam.mkdir()
    for i in range(60):
        body = zlib.compress(bytes(rng.randrange(200) for _ in range(40000)), 9)
        (cam / f"IMG_{i:04d}.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + body)
    verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    # A bulk rename (same content, new names), and a log that grows.
    for p in sorted(cam.iterdir()):
        p.rename(p.with_name("holiday-" + p.name))
    log = src / "app.log"
    for _ in range(2):
        with open(log, "ab") as f:
            f.write(b"".join(_text(rng, 20) for _ in range(200)))
        verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    # A database rewrites a few pages in place.
    db = src / "folder0" / "app.sqlite"
    import sqlite3
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, _text(rng, 20).decode()) for i in range(2000)])
    con.commit()
    verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    con.execute("UPDATE t SET v = 'changed' WHERE k % 50 = 0")
    con.commit()
    con.close()
    verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    assert "alert" not in verdicts, verdicts
    assert not any(s["protected"] for s in cli.json("snapshots"))  # type: ignore[union-attr]
    rows = cli.json("anomaly", "list", "--all")
    assert isinstance(rows, list) and len(rows) == len(verdicts)


# -- the state file -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_damaged_state_file_gives_a_clear_message_and_a_fresh_baseline(cli: Cli, tmp_path: Path) -> None:
    import sqlite3
    src = tmp_path / "src"
    make_home_tree(src, files=20)
    backup(cli, src)
    state = cli.home / "anomaly.db"

    def findings() -> int:
        with contextlib.closing(sqlite3.connect(state)) as db:
            return int(db.execute("SELECT COUNT(*) FROM findings").fetchone()[0])

    assert findings() == 1
    for extra in ("-wal", "-shm"):
        (cli.home / f"anomaly.db{extra}").unlink(missing_ok=True)
    state.write_bytes(b"SQLite format 3\0" + os.urandom(8000))  # the header, then garbage
    (src / "folder1" / "new.txt").write_text("a new note\n")
    p = cli.run("backup", str(src), "--json")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["anomaly"]["verdict"] in ("ok", "suspect")
    assert "anomaly.db is damaged" in p.stderr and "fresh baseline" in p.stderr, p.stderr
    assert (cli.home / "anomaly.db.damaged").exists()
    assert findings() == 1  # a new state, this backup's finding in it
    # Garbage of another kind: a commands still answers.
    for extra in ("-wal", "-shm"):
        (cli.home / f"anomaly.db{extra}").unlink(missing_ok=True)
    state.write_bytes(os.urandom(300))
    p = cli.run("anomaly", "list", "--all", "--json")
    assert json.loads(p.stdout) == [] and "damaged" in p.stderr
    # A baseline blob damaged inside a valid database: the series starts afresh, with a word.
    backup(cli, src)
    with contextlib.closing(sqlite3.connect(state)) as db:
        key, blob = db.execute("SELECT key, baseline FROM series").fetchone()
        db.execute("UPDATE series SET baseline = ? WHERE key = ?", (b"\0\0\0" + blob[6:], key))
        db.commit()
    (src / "folder1" / "other.txt").write_text("another note\n")
    p = cli.run("backup", str(src), "--json")
    assert json.loads(p.stdout.strip().splitlines()[-1])["anomaly"] is not None
    assert "fresh baseline" in p.stderr


# -- silent corruption -----------------------------------------------------------------------------


@pytest.mark.slow
def test_content_changed_under_the_same_size_and_mtime_is_reported(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_home_tree(src, files=30)
    backup(cli, src)
    victim = files[3]
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit, in place
    with open(victim, "r+b") as f:
        f.write(data)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    s = backup(cli, src)
    assert s["silent_corruption"] == [str(victim)], s
    rows = cli.json("anomaly", "list")
    assert isinstance(rows, list) and rows[-1]["silent_corruption"] == 1
    ex = cli.json("anomaly", "explain", s["snapshot_id"][:8])
    assert ex["silent"] == [str(victim)]  # type: ignore[index]
    # An honest edit (the mtime moves) is not corruption.
    with open(files[4], "ab") as f:
        f.write(b"more\n")
    assert backup(cli, src)["silent_corruption"] == []


# -- through a daemon: events, scheduled retention paused, ack ------------------------------------


class Follower:
    """The daemon's events, read in a thread."""

    def __init__(self, home: Path, topics: tuple[str, ...]) -> None:
        import threading

        from corestate.node.runtime.client import connect, subscribe
        from meshutil import wait_for
        self.sock = wait_for(lambda: connect(home, timeout=10), 30, "the daemon to accept")
        self.events: list = []
        stream = subscribe(self.sock, topics)
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        try:
            for ev in stream:  # type: ignore[attr-defined]
                self.events.append(ev)
        except OSError:
            pass

    def close(self) -> None:
        import socket
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)


@pytest.mark.slow
def test_a_daemon_alerts_pauses_scheduled_retention_and_ack_lifts_it(tmp_path: Path) -> None:
    from corestate.protocol import control as c
    from meshutil import edit_config, make_mesh, wait_for
    src = tmp_path / "src"
    make_home_tree(src, files=100)
    mesh = make_mesh(tmp_path / "m", 1)
    home = mesh.nodes[0].home
    edit_config(home, "paths = []", f'paths = ["{src}"]')
    edit_config(home, "backup_every = 0", 'backup_every = "2s"')
    edit_config(home, "# keep_last = 10", "keep_last = 1")
    cli = Cli(home, mesh.pw)
    mesh.start(0)
    try:
        follower = Follower(home, ("alert", "backup", "retention"))
        try:
            def finished() -> int:
                return sum(isinstance(e, c.RetentionFinished) for e in follower.events)
            wait_for(lambda: finished() >= 2, 120, "two scheduled backups with their retention")
            snaps = cli.json("snapshots")
            assert isinstance(snaps, list) and len(snaps) == 1  # keep_last = 1 at work
            encrypt_and_rename(src, 0.1)
            alert = wait_for(lambda: next((e for e in follower.events if isinstance(e, c.Alert)
                                           and e.alert == "anomaly" and e.details.get("snapshot", "")
                                           not in ("", "in progress")), None), 120, "the anomaly alert")
            assert alert.severity == "critical" and alert.details["protected"]
            protected = alert.details["protected"]
            # Two more scheduled rounds: retention leaves the series alone while the alert stands.
            seen = finished()
            wait_for(lambda: finished() >= seen + 2, 120, "two more retention rounds")
            snaps = cli.json("snapshots")
            assert isinstance(snaps, list) and len(snaps) >= 3
            assert [s["id"] for s in snaps if s["protected"]] == [protected]
            rows = cli.json("anomaly", "list")
            assert isinstance(rows, list) and any(r["snapshot_id"] == alert.details["snapshot"] for r in rows)
            # Acknowledged through the daemon: the next retention round forgets again.
            acked = cli.json("anomaly", "ack", alert.details["snapshot"][:8], "--yes")
            assert acked["unprotected"] == protected  # type: ignore[index]
            seen = finished()
            wait_for(lambda: finished() >= seen + 1, 120, "a retention round after the ack")
            snaps = cli.json("snapshots")
            assert isinstance(snaps, list) and len(snaps) <= 2 and protected not in {s["id"] for s in snaps}
        finally:
            follower.close()
    finally:
        mesh.close()


# -- advise --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_advise_answers_from_the_nodes_history_with_its_numbers(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_home_tree(src, files=40)
    early = cli.json("advise", "schedule")
    assert isinstance(early, dict) and "at least" in early["advice"][0]
    rng = random.Random(5)
    for step in range(7):
        if step:
            benign_churn(src, rng, step)
        backup(cli, src)
    sched = cli.json("advise", "schedule")
    assert isinstance(sched, dict) and sched["numbers"]["backups"] == "7"
    assert len(sched["rows"]) == 24 and sched["columns"][:2] == ["hour", "mean/day"]
    assert sched["advice"][0].startswith("back up at")
    cap = cli.json("advise", "capacity", "--quota", "1GiB")
    assert isinstance(cap, dict) and int(cap["numbers"]["capacity_bytes"]) == 1 << 30
    assert int(cap["numbers"]["points"]) == 7 and float(cap["numbers"]["growth_bytes_per_day"]) > 0
    assert "fills in about" in cap["advice"][0]
    disk = cli.json("advise", "capacity")
    assert isinstance(disk, dict) and "disk of" in " ".join(disk["advice"])
    tier = cli.json("advise", "tiering")
    # Nothing is 90 days old on a new node: no cold data, and the numbers say so.
    assert isinstance(tier, dict) and tier["numbers"]["cold_bytes"] == "0" and int(tier["numbers"]["packs"]) > 0
    text = cli.run("advise", "tiering").stdout
    assert "nothing is cold yet" in text and "the numbers:" in text


@pytest.mark.slow
def test_an_unusual_volume_of_benign_change_is_suspect_not_alert(cli: Cli, tmp_path: Path) -> None:
    """A dozen quiet hours, then most text files edited at once (a search-and-replace over
    the tree): recorded and shown as suspect; nothing is protected, retention goes on."""
    src = tmp_path / "src"
    files = make_home_tree(src, files=200)
    rng = random.Random(11)
    texts = [p for p in files if p.suffix in (".txt", ".py", ".csv")]
    verdicts = []
    for step in range(12):
        if step:
            with open(rng.choice(texts), "ab") as f:
                f.write(_text(rng, 30))
        verdicts.append(backup(cli, src)["anomaly"]["verdict"])
    assert "alert" not in verdicts
    for p in texts:
        p.write_bytes(p.read_bytes().replace(b"the ", b"THE "))
    s = backup(cli, src)
    assert s["anomaly"]["verdict"] == "suspect", s["anomaly"]
    assert not any(x["protected"] for x in cli.json("snapshots"))  # type: ignore[union-attr]
    rows = cli.json("anomaly", "list")
    assert isinstance(rows, list) and rows[-1]["verdict"] == "suspect" and rows[-1]["protects"] is None
