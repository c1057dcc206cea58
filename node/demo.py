"""``corestate demo``: a local mesh of five daemons on loopback, in one command.

It shows, with the real commands and real daemons (separate processes), what a user does:
five nodes trust each other; node 1 backs up a sample tree, its packs leave as encrypted
RS shares (k=2 of n=4) on the four others; a change, a second backup, a diff; two holder
daemons are killed; ``check`` reports degraded redundancy; the restore still succeeds
from the remaining holders and is verified byte- and metadata-identical to the source.
With ``--keep`` the mesh (restarted whole) stays up for the user until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
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
    from corestate.node.runtime.localmesh import LocalMesh

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="corestate-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    src, target = work / "sample", work / "restored"
    if (work / "node1").exists() or src.exists():
        out.say(f"{work} already holds a demo; use another --dir or remove it")
        return 1
    mesh = LocalMesh(work, 5, passphrase=secrets.token_urlsafe(18))
    owner = mesh.nodes[0]

    def step(title: str, *argv: str, ok: tuple[int, ...] = (0,)) -> int:
        shown = " ".join(a if " " not in a else repr(a) for a in argv)
        out.say(f"\n== {title}\n$ corestate --home {owner.home} {shown}")
        p = mesh.run(owner, *argv, check=False)
        for line in p.stdout.splitlines():
            out.say("  " + line)
        for line in p.stderr.splitlines():
            out.say("  " + line)
        return 0 if p.returncode in ok else p.returncode or 1

    t0 = time.monotonic()
    keep = bool(args.keep or args.dir)
    try:
        size = make_sample_tree(src)
        out.say(f"CoreState demo in {work}")
        out.say(f"sample tree: {src} ({size / 1e6:.1f} MB)")
        out.say("\n== five nodes, each its own home and daemon (`corestate init`, `corestate node run`)")
        mesh.create()
        mesh.start()
        for n in mesh.nodes:
            out.say(f"  node{n.index + 1}  {n.addr}")
        out.say("  each trusts the four others (`corestate peer add ADDR`)")
        # Files changed within the last 2 s are always re-read; let the sample age past that.
        time.sleep(max(0.0, 2.1 - (time.monotonic() - t0)))
        rc = step("first backup: packs are coded k=2 of n=4 and spread over the four peers",
                  "backup", str(src))
        rc = rc or step("where the shares went", "peer", "list")
        (src / "documents/notes/note3.txt").write_text("rewritten during the demo\n")
        (src / "documents/new-idea.txt").write_text("a new file\n")
        with (src / "logs/app.log").open("a") as f:
            f.write("2026-11-25T11:00:00 INFO one more line\n")
        os.unlink(src / "empty.txt")
        rc = rc or step("back up again: only what changed is read, stored and spread", "backup", str(src))
        rc = rc or step("what changed between the two snapshots", "diff", "latest~1", "latest")
        if rc:
            return _failed(out, rc, work)
        out.say("\n== two holders die: SIGKILL to the daemons of node2 and node3")
        mesh.kill(1)
        mesh.kill(2)
        rc = step("check asks every holder for every share (and audits one block of each)",
                  "check", ok=(3,))
        rc = rc or step("restore the latest snapshot with two of four holders gone",
                        "restore", "latest", "--target", str(target))
        if rc:
            keep = True
            return _failed(out, rc, work)
        restored = target / str(src).lstrip("/")
        diffs = differences(src, restored)
        out.say("\n== verify: the restore against the live tree (content, modes, owners, times, links, xattrs)")
        if diffs:
            for d in diffs[:20]:
                out.say(f"  {d}")
            out.say(f"demo FAILED: {len(diffs)} difference(s)")
            keep = True
            return 1
        out.say(f"  identical: {len(list(restored.rglob('*')))} entries under {restored}")
        out.say(f"\ndemo finished in {time.monotonic() - t0:.1f}s. Shares are ciphertext: the peers "
                "hold them without being able to read them.")
        if args.keep:
            mesh.start(1, 2)
            out.say("\nthe mesh runs again with all five daemons; try, in another terminal:")
            out.say(f"  export CORESTATE_HOME={owner.home}")
            out.say("  corestate snapshots;  corestate peer list;  corestate node info;  corestate check")
            out.say(f"  corestate backup {src}  # daemons run the commands; no passphrase needed")
            out.say("press Ctrl-C to stop the mesh")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while all(n.running for n in mesh.nodes):
                    time.sleep(1)
                out.say("a daemon stopped; stopping the mesh")
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        mesh.close()
        if keep:
            out.say(f"files and daemon logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _failed(out: Any, rc: int, work: Path) -> int:
    out.say(f"\ndemo failed at the step above (exit {rc})")
    return rc
