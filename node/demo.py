"""``corestate demo``: a guided run on a built-in sample tree.

It shows, with the real commands, what a user does: init, backup, change, backup again,
diff, check, restore, and verifies the restore is byte- and metadata-identical. Today it
runs one standalone node (the local pack store); the mesh issue turns it into a local
mesh of five daemons.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from corestate.node.treecompare import differences

WORDS = ["node", "mesh", "share", "pack", "chunk", "tree", "snapshot", "restore", "backup", "peer", "group", "key", "phrase", "catalog", "repair", "audit", "quota", "index", "store", "hash", "cipher", "nonce", "salt", "epoch", "clock"]


def make_sample_tree(root: Path, seed: int = 42) -> int:
    """A small home folder: code, notes, logs, photos (incompressible), a duplicate, links."""
    rnd = random.Random(seed)
    total = 0

    def put(rel: str, data: bytes) -> None:
        nonlocal total
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        total += len(data)

    for i in range(40):
        lines = [f"def f{i}_{j}(x):\n    return x * {j} + {rnd.randrange(100)}  # {rnd.choice(WORDS)}\n"
                 for j in range(rnd.randrange(20, 200))]
        put(f"src/project/module{i % 5}/file{i}.py", "".join(lines).encode())
    for i in range(15):
        text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(200, 3000)))
        put(f"documents/notes/note{i}.txt", text.encode())
    put("logs/app.log", "".join(
        f"2026-11-25T10:{i // 60 % 60:02d}:{i % 60:02d} INFO request {i} served in {rnd.randrange(900)} ms\n"
        for i in range(40000)).encode())
    for i in range(4):
        put(f"photos/img{i}.jpg", rnd.randbytes(rnd.randrange(1_500_000, 3_000_000)))
    put("photos/backup-of-img0.jpg", (root / "photos/img0.jpg").read_bytes())
    put("empty.txt", b"")
    (root / "src/project/latest").symlink_to("module0")
    os.link(root / "documents/notes/note0.txt", root / "documents/note0-hardlink.txt")
    os.chmod(root / "src/project/module0/file0.py", 0o755)
    return total


def run_demo(args: argparse.Namespace, out: Any) -> int:
    from corestate.node.cli import main as cli_main

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="corestate-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    home, src, target = work / "home", work / "sample", work / "restored"
    if home.exists() or src.exists():
        out.say(f"{work} already holds a demo; use another --dir or remove it")
        return 1
    pw = work / "passphrase"
    pw.write_text(secrets.token_urlsafe(18) + "\n")
    os.chmod(pw, 0o600)

    def step(title: str, *argv: str) -> int:
        shown = " ".join(a if " " not in a else repr(a) for a in argv)
        out.say(f"\n== {title}\n$ corestate {shown}")
        return cli_main(["--home", str(home), *argv])

    size = make_sample_tree(src)
    # Files changed within the last 2 s are always re-read (coarse kernel clocks could hide
    # a second write); let the fresh sample age past that, as a real home folder has.
    time.sleep(2.1)
    out.say(f"CoreState demo in {work}")
    out.say(f"sample tree: {src} ({size / 1e6:.1f} MB); passphrase in {pw}")
    key = ["--passphrase-file", str(pw)]
    t0 = time.monotonic()
    rc = step("create a node (the 24 words are the only way back if this disk dies)", "init", *key)
    rc = rc or step("first backup", "backup", str(src), *key)
    (src / "documents/notes/note3.txt").write_text("rewritten during the demo\n")
    (src / "documents/new-idea.txt").write_text("a new file\n")
    (src / "logs/app.log").open("a").write("2026-11-25T11:00:00 INFO one more line\n")
    os.unlink(src / "empty.txt")
    rc = rc or step("back up again: only what changed is read and stored", "backup", str(src), *key)
    rc = rc or step("what changed between the two snapshots", "diff", "latest~1", "latest", *key)
    rc = rc or step("the snapshots", "snapshots", *key)
    rc = rc or step("read and verify every byte in the store", "check", "--read-data", *key)
    rc = rc or step("restore the latest snapshot", "restore", "latest", "--target", str(target), *key)
    if rc:
        out.say(f"\ndemo failed at the step above (exit {rc}); files kept in {work}")
        return rc
    restored = target / str(src).lstrip("/")
    diffs = differences(src, restored)
    out.say("\n== verify: the restore against the live tree (content, modes, owners, times, links, xattrs)")
    if diffs:
        for d in diffs[:20]:
            out.say(f"  {d}")
        out.say(f"demo FAILED: {len(diffs)} difference(s); files kept in {work}")
        return 1
    out.say(f"  identical: {len(list(restored.rglob('*')))} entries under {restored}")
    out.say(f"\ndemo finished in {time.monotonic() - t0:.1f}s. Packs are encrypted: only this "
            "node's key (or its 24 words) reads them.")
    if args.keep or args.dir:
        out.say(f"kept for you to explore:  export CORESTATE_HOME={home} CORESTATE_PASSPHRASE=$(cat {pw})")
    else:
        shutil.rmtree(work, ignore_errors=True)
        out.say("the demo's files are removed; `corestate demo --keep` leaves them for you to explore")
    return 0
