"""Shared test helpers (importable as `helpers`: pytest puts tests/ on sys.path): a CLI runner on a fresh node home, and a tree with every kind of
entry a backup must preserve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PASSPHRASE = "correct horse battery staple"


@dataclass
class Cli:
    home: Path
    pwfile: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORESTATE_")}
        env["CORESTATE_HOME"] = str(self.home)
        return env

    def run(self, *args: str, check: bool = True, key: bool = True, timeout: float = 120,
            **kw: object) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "corestate.node.cli", *args]
        if key and args and args[0] not in ("demo",):
            argv += ["--passphrase-file", str(self.pwfile)]
        p = subprocess.run(argv, env=self.env(), capture_output=True, text=True, errors="surrogateescape", timeout=timeout, **kw)  # type: ignore[call-overload]
        if check and p.returncode != 0:
            raise AssertionError(f"corestate {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str, **kw: object) -> object:
        p = self.run(*args, "--json", **kw)
        return json.loads(p.stdout.strip().splitlines()[-1])


def cheap_key(home: Path, passphrase: str) -> None:
    """Seal ``home``'s key again under the lowest Argon2id cost (the in-process kit's
    ``CHEAP_KDF``; the cost travels with the key, so every later unseal is cheap too).

    For homes that only serve as a test's setting: each command and daemon start unseals the
    key, and at the default cost (64 MiB, 3 passes) that is about a third of a short
    command's CPU. ``init`` itself, a wrong passphrase, ``key passwd``, recovery and the
    default cost are tested on homes of their own."""
    from corestate.node import keystore
    from corestate.node.runtime.testkit import CHEAP_KDF
    path = home / "key"
    sealed = path.read_bytes()
    if keystore.is_hsm(sealed):
        return
    pw = passphrase.encode()
    keystore.write_key(path, keystore.unseal(sealed, pw), pw, cost=CHEAP_KDF)


def without_dac_override() -> None:
    """In a child (``preexec_fn``): drop root's power to read and write any file, so
    permissions apply to it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl")


def make_tree(root: Path) -> Path:
    """A small tree with every kind of entry: nested dirs, empty file and dir, binary and
    text, a symlink (relative, absolute, dangling), hard links, odd modes and names, a
    sparse file, xattrs, a FIFO, and a file larger than one chunk."""
    rnd = __import__("random").Random(7)
    (root / "docs" / "deep" / "er" / "est").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "docs" / "a.txt").write_text("hello world\n" * 1000)
    (root / "docs" / "deep" / "er" / "est" / "leaf.txt").write_text("leaf")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(rnd.randbytes(3_000_000))
    (root / "docs" / "copy.bin").write_bytes((root / "big.bin").read_bytes())
    (root / "rel-link").symlink_to("docs/a.txt")
    (root / "abs-link").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("does/not/exist")
    os.link(root / "docs" / "a.txt", root / "hard-a.txt")
    odd = root / os.fsdecode(b"caf\xc3\xa9 \xff name")
    odd.write_text("odd name")
    (root / "secret").write_text("s")
    os.chmod(root / "secret", 0o600)
    (root / "script.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "script.sh", 0o755)
    with open(root / "sparse.img", "wb") as f:
        f.seek(20_000_000)
        f.write(b"end")
        f.seek(5_000_000)
        f.write(b"middle")
    try:
        os.setxattr(root / "docs" / "a.txt", "user.tag", b"blue")
    except OSError:
        pass
    os.mkfifo(root / "fifo")
    os.utime(root / "docs", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(root / "empty", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))
    if os.geteuid() == 0:
        os.chown(root / "secret", 1234, 5678)
    return root
