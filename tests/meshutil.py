"""Shared helpers for tests that run real daemons on loopback (``node.runtime.localmesh``).

Importable as ``meshutil`` (pytest puts tests/ on sys.path). What is here:

- building a ``LocalMesh`` with test-sized settings (1 MiB packs, a small global quota),
  and the CLI plumbing around it (JSON of the last line, commands without a passphrase);
- a module's shared mesh (``MeshShape``, ``shared_mesh``; the fixtures that use them are in
  tests/node/conftest.py), a group formed through the CLI (``form_group``);
- trees with random content, and polling with a deadline instead of sleeps;
- looking at a node's state from outside: the share ledger of an owner (``mesh.db``), the
  share files of a holder (``<home>/shares``);
- a libp2p client of our own (``open_client``) that speaks the share protocol to a daemon
  byte by byte, so hostile and untrusted peers can be played.

Nothing here changes product behaviour: configs are edited the way a user would edit
``config.toml``, and daemons are real processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import blake3
from corestate.erasure import share as sharefmt
from corestate.node.runtime.localmesh import LocalMesh, MeshNode
from corestate.protocol import messages as m
from helpers import cheap_key

T = TypeVar("T")

SHARE_PROTOCOL = "/corestate/share/1"
PACK_SIZE = 1 << 20
GLOBAL_QUOTA = 1 << 20


# -- meshes --------------------------------------------------------------------------------


def edit_config(home: Path, old: str, new: str) -> None:
    """Replace one line of ``config.toml`` (it must be there: a silent no-op hides typos)."""
    cfg = home / "config.toml"
    text = cfg.read_text()
    assert old in text, f"{old!r} not in {cfg}"
    cfg.write_text(text.replace(old, new, 1))


def make_mesh(base: Path, count: int, *, pack_size: int = PACK_SIZE,
              global_quota: int = GLOBAL_QUOTA) -> LocalMesh:
    """A created (not started) mesh of ``count`` homes, each trusting the others, with
    ``pack_size`` packs (many packs from a few MiB) and a small ``global_quota`` for
    untrusted senders; keys sealed at the lowest cost (``helpers.cheap_key``)."""
    mesh = LocalMesh(base, count)
    mesh.create()
    for n in mesh.nodes:
        cheap_key(n.home, mesh.passphrase)  # a setting, not what is tested: see cheap_key
        edit_config(n.home, "pack_size = 16777216", f"pack_size = {pack_size}")
        edit_config(n.home, 'global_quota = "64 MiB"', f"global_quota = {global_quota}")
    return mesh


@contextmanager
def running(mesh: LocalMesh, *which: int) -> Iterator[LocalMesh]:
    """A module's mesh: start the daemons ``which`` (all by default), and close every one
    at the end, also when a start failed."""
    try:
        mesh.start(*which)
        yield mesh
    finally:
        mesh.close()


def start_missing(mesh: LocalMesh) -> None:
    """Start the daemons that do not run (``LocalMesh.start`` must not be given running ones)."""
    down = [n.index for n in mesh.nodes if not n.running]
    if down:
        mesh.start(*down)


def form_group(mesh: LocalMesh, name: str = "office", *, admin: int = 0) -> None:
    """``group create`` on ``admin``, a one-time invite joined by every other node, then a
    sync round from the last node to the first (so everyone has everyone's records)."""
    lead = mesh.nodes[admin]
    mesh.run(lead, "group", "create", name)
    for n in mesh.nodes:
        if n is not lead:
            token = mesh.run(lead, "group", "invite").stdout.strip().splitlines()[-1]
            mesh.run(n, "group", "join", token)
    for n in reversed(mesh.nodes):
        mesh.run(n, "group", "sync", check=False)


@dataclass(frozen=True, slots=True)
class MeshShape:
    """What a test module's shared mesh looks like (``MESH = MeshShape(...)`` in the module;
    the ``mesh`` fixture of tests/node/conftest.py builds it once per module):
    ``nodes`` daemons, each home's ``config.toml`` edited by every ``(old, new)`` of
    ``config``, and all of them in one group named ``group`` (node 1 its admin) when given."""

    name: str
    nodes: int
    config: tuple[tuple[str, str], ...] = ()
    group: str | None = None


@contextmanager
def shared_mesh(base: Path, shape: MeshShape) -> Iterator[LocalMesh]:
    """A module's mesh, made, started (and grouped) as ``shape`` says; every daemon is
    closed at the end, also when a start failed."""
    lm = make_mesh(base, shape.nodes)
    for n in lm.nodes:
        for old, new in shape.config:
            edit_config(n.home, old, new)
    with running(lm):
        if shape.group is not None:
            form_group(lm, shape.group)
        yield lm


@contextmanager
def all_up(mesh: LocalMesh) -> Iterator[LocalMesh]:
    """Around one test of a shared mesh: it starts and ends with every daemon up (one the
    test stopped with SIGSTOP goes on, one it killed is started again)."""
    start_missing(mesh)
    try:
        yield mesh
    finally:
        for n in mesh.nodes:
            if n.proc is not None and n.proc.poll() is None:
                os.kill(n.proc.pid, signal.SIGCONT)
        start_missing(mesh)


def clean_env() -> dict[str, str]:
    """The environment without any CORESTATE_* variable (no passphrase, no home)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CORESTATE_")}


def run_plain(mesh: LocalMesh, node: MeshNode, *args: str,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A CLI command with no passphrase from anywhere (unlike ``LocalMesh.run``)."""
    return subprocess.run(mesh.cmd(node, *args), capture_output=True, text=True, env=clean_env(),
                          stdin=subprocess.DEVNULL, timeout=timeout)


def last_json(p: subprocess.CompletedProcess[str] | str) -> Any:
    """The JSON object on the last line of a command's stdout."""
    text = p if isinstance(p, str) else p.stdout
    lines = text.strip().splitlines()
    assert lines, "no output" if isinstance(p, str) else f"no output; exit {p.returncode}: {p.stderr[-2000:]}"
    return json.loads(lines[-1])


def popen(mesh: LocalMesh, node: MeshNode, *args: str) -> subprocess.Popen[str]:
    """A CLI command started in the background (key passed as ``LocalMesh.run`` does)."""
    argv = [*mesh.cmd(node, args[0]), "--passphrase-file", str(mesh.pw), *args[1:]]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mesh.env)


def wait_for(pred: Callable[[], T], timeout: float, what: str, every: float = 0.01) -> T:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# -- trees ---------------------------------------------------------------------------------


def random_tree(root: Path, mib: int, *, seed: int) -> Path:
    """``mib`` files of 1 MiB of incompressible bytes plus a few small entries with their own
    metadata (modes, times, a symlink, a hard link, an empty folder)."""
    rnd = random.Random(seed)
    (root / "data").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i in range(mib):
        (root / "data" / f"blob{i:02d}.bin").write_bytes(rnd.randbytes(1 << 20))
    (root / "notes.txt").write_text(f"tree {seed}\n" * 100)
    os.chmod(root / "notes.txt", 0o640)
    os.link(root / "notes.txt", root / "notes-link.txt")
    (root / "latest").symlink_to("data/blob00.bin")
    os.utime(root / "notes.txt", ns=(1_600_000_000_000_000_007, 1_600_000_000_000_000_007))
    return root


def restored(target: Path, src: Path) -> Path:
    """Where ``restore --target target`` puts ``src``: below its full original path."""
    return target / str(src).lstrip("/")


# -- node state seen from outside ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    pack: bytes
    index: int
    peer: str
    root: bytes
    size: int


def ledger_rows(home: Path) -> list[Row]:
    """Every share row of the owner's ``mesh.db`` (read-only; fine while its daemon runs)."""
    db = sqlite3.connect(f"file:{home / 'mesh.db'}?mode=ro", uri=True)
    try:
        return [Row(bytes(p), int(i), str(peer), bytes(r), int(s)) for p, i, peer, r, s in
                db.execute("SELECT pack, idx, peer, root, size FROM shares")]
    finally:
        db.close()


def ledger_codes(home: Path) -> dict[bytes, tuple[int, int, bool]]:
    """Per coded pack of the owner: (k, n, still local)."""
    db = sqlite3.connect(f"file:{home / 'mesh.db'}?mode=ro", uri=True)
    try:
        return {bytes(p): (int(k), int(n), bool(local))
                for p, k, n, local in db.execute("SELECT pack, k, n, local FROM coded")}
    finally:
        db.close()


def share_files(home: Path) -> list[Path]:
    """The share files a holder keeps for its peers: ``<home>/shares/<2 hex>/<64 hex>``."""
    out = []
    for sub in sorted((home / "shares").iterdir()):
        if sub.is_dir() and len(sub.name) == 2:
            out.extend(p for p in sorted(sub.iterdir())
                       if len(p.name) == 64 and not p.name.startswith("."))
    return out


def store_packs(home: Path) -> set[str]:
    """Pack files in a node's local store."""
    return {p.name for p in (home / "store" / "packs").glob("*/*") if len(p.name) == 64}


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file in place (the middle by default)."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


# -- a libp2p client of our own ------------------------------------------------------------


def valid_share(size: int, *, index: int = 0) -> tuple[bytes, bytes]:
    """(pack id, share ``index``) of a fresh random pack, the share about ``size`` bytes."""
    data = os.urandom(max(1, size * 2 - 2 * sharefmt.HEADER_SIZE))
    pack = blake3.blake3(data).digest()
    return pack, sharefmt.make_shares(data, 2, 3, pack_id=pack)[index]


@asynccontextmanager
async def open_client(seed: bytes | None = None) -> AsyncIterator[Any]:
    """A libp2p host with a fresh identity (or ``seed``'s) on loopback: a peer the daemons
    have never heard of, hence untrusted."""
    from corestate.protocol.p2p import open_host
    async with open_host(seed or os.urandom(32), ["/ip4/127.0.0.1/tcp/0"]) as host:
        yield host


async def open_channel(client: Any, node: MeshNode, *, timeout: float = 15.0,
                       protocol: str = SHARE_PROTOCOL) -> Any:
    """A Channel on a new share-protocol stream from ``client`` to ``node``'s daemon."""
    from corestate.protocol.streams import Channel
    stream = await client.open_stream(node.peer_id, protocol, addrs=[node.addr], timeout=timeout)
    return Channel(stream, timeout=timeout)


async def ask(client: Any, node: MeshNode, msg: m.Message, *, bulk: bytes | None = None,
              timeout: float = 15.0) -> tuple[m.Message, bytes | None]:
    """One request, the reply (an ``Error`` is returned, not raised) and its bulk data."""
    import trio
    ch = await open_channel(client, node, timeout=timeout)
    try:
        await ch.send(msg)
        if bulk is not None:
            await ch.send_bulk(bulk)
        reply = await ch.receive()
        data = None
        if isinstance(reply, m.ShareData):
            data = await ch.receive_bulk(reply.size, reply.digest)
        return reply, data
    finally:
        with trio.move_on_after(2):
            await ch.aclose()


async def held(client: Any, node: MeshNode, pack: bytes, index: int) -> int:
    """The size ``node`` reports for this client's share, -1 when it holds none."""
    reply, _ = await ask(client, node, m.HasShares(items=[[pack, index]]))
    assert isinstance(reply, m.HasReply), reply
    return reply.sizes[0]


async def put(client: Any, node: MeshNode, pack: bytes, index: int, share: bytes) -> m.Message:
    reply, _ = await ask(client, node, m.PutShare(pack=pack, index=index, size=len(share),
                                                  digest=blake3.blake3(share).digest()), bulk=share)
    return reply


async def offer(client: Any, node: MeshNode, pack: bytes, index: int, share: bytes) -> m.Message:
    """Only the PutShare header, then the reply: how to see a refusal that comes before the
    bytes (quota) without racing the bytes against it."""
    reply, _ = await ask(client, node, m.PutShare(pack=pack, index=index, size=len(share),
                                                  digest=blake3.blake3(share).digest()))
    return reply


def signed_delete(seed: bytes, holder: str, pack: bytes, index: int,
                  nonce: bytes | None = None) -> m.DeleteShare:
    """A DeleteShare for ``holder`` signed with the Ed25519 key of identity ``seed``."""
    import nacl.signing
    nonce = nonce or os.urandom(16)
    sig = nacl.signing.SigningKey(seed).sign(m.delete_signing_bytes(holder, pack, index, nonce)).signature
    return m.DeleteShare(pack=pack, index=index, holder=holder, nonce=nonce, signature=sig)
