"""The mesh with real daemons, each its own process, on loopback (``LocalMesh``).

One five-node mesh (an owner and four holders, 1 MiB packs so a few MiB make many packs)
serves the whole module; a test that kills daemons starts them again. What is checked:

- a backup coded k=2 of n=4 restores byte- and metadata-identical with n-k holders killed
  by SIGKILL, and ``check`` reports the packs degraded (exit 3);
- a holder killed in the middle of a backup or a restore: the command finishes (re-placed
  shares or an honest "degraded"; the other holders) and the owner's ledger records no
  share its holder does not really have;
- hostile peers (raw TCP garbage, silence, plaintext, bad frames and CBOR, unknown types,
  truncated or lying bulk data, a reader that stalls) leave the daemon serving;
- a holder whose share files rot is routed around and named by ``check``;
- an untrusted peer gets only the small global quota (a trusted one its own); deletes
  need the owner's signature, once.
"""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import cbor2
import pytest
import trio
from corestate.node.runtime.localmesh import LocalMesh, MeshNode
from corestate.node.runtime.vault import ShareVault
from corestate.node.treecompare import differences
from corestate.protocol import messages as m
from corestate.protocol.errors import ProtocolError
from corestate.protocol.wire import encode_frame, encode_varint
from helpers import make_tree
from meshutil import (
    GLOBAL_QUOTA,
    MeshShape,
    Row,
    ask,
    flip_byte,
    held,
    last_json,
    ledger_codes,
    ledger_rows,
    offer,
    open_channel,
    open_client,
    popen,
    put,
    random_tree,
    restored,
    share_files,
    signed_delete,
    store_packs,
    valid_share,
    wait_for,
)

OWNER = 0
HOLDERS = (1, 2, 3, 4)
HOSTILE = 4  # the holder the hostile and untrusted clients talk to


MESH = MeshShape("mesh", 5)  # the module's ``mesh`` (tests/node/conftest.py)
pytestmark = pytest.mark.usefixtures("mesh_up")  # every test starts and ends with the five up


def backup(mesh: LocalMesh, src: Path, *args: str) -> tuple[int, dict]:
    p = mesh.run(mesh.nodes[OWNER], "backup", str(src), *args, "--json", check=False)
    assert p.returncode in (0, 3), p.stderr
    return p.returncode, last_json(p)


def check(mesh: LocalMesh) -> tuple[int, dict]:
    p = mesh.run(mesh.nodes[OWNER], "check", "--json", check=False)
    assert p.returncode in (0, 3), p.stdout + p.stderr
    return p.returncode, last_json(p)


def snapshot_tally(report: dict, snapshot_id: str) -> dict:
    return next(s for s in report["mesh"]["snapshots"] if s["id"] == snapshot_id)


def new_packs(mesh: LocalMesh, before: set[bytes]) -> set[bytes]:
    return set(ledger_codes(mesh.nodes[OWNER].home)) - before


def assert_fully_placed(mesh: LocalMesh, packs: set[bytes], k: int, n: int) -> None:
    """Each pack has n distinct shares on n distinct holders, none on the owner."""
    codes = ledger_codes(mesh.nodes[OWNER].home)
    rows = ledger_rows(mesh.nodes[OWNER].home)
    for pack in packs:
        assert codes[pack][:2] == (k, n)
        mine = [r for r in rows if r.pack == pack]
        assert sorted(r.index for r in mine) == list(range(n)), mine
        assert len({r.peer for r in mine}) == n
        assert mesh.nodes[OWNER].peer_id not in {r.peer for r in mine}


# -- n-k holders killed ----------------------------------------------------------------------


def test_restore_identical_with_n_minus_k_holders_killed(mesh: LocalMesh, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    random_tree(src / "more", 4, seed=1)
    before = set(ledger_codes(mesh.nodes[OWNER].home))
    code, out = backup(mesh, src, "--k", "2", "--n", "4")
    assert code == 0 and out["complete"], out
    mesh_out = out["mesh"]
    assert (mesh_out["k"], mesh_out["n"], mesh_out["safe"]) == (2, 4, True), mesh_out
    assert sorted(mesh_out["peers_online"]) == sorted(mesh.nodes[i].peer_id for i in HOLDERS)
    # The data packs left the owner: a restore can only come from the holders.
    assert mesh_out["local_copies_dropped"] >= 4, mesh_out
    packs = new_packs(mesh, before)
    assert len(packs) >= 6
    assert_fully_placed(mesh, packs, 2, 4)

    mesh.kill(1)
    mesh.kill(2)
    code, report = check(mesh)
    assert code == 3
    assert report["ok"] is False  # the local store is fine, the mesh is not
    tally = snapshot_tally(report, out["snapshot_id"])
    assert tally["degraded"] >= len(packs) - 2 and tally["at-risk"] == 0, tally
    assert report["mesh"]["shares"].get("unreachable", 0) >= 2 * len(packs)

    target = tmp_path / "restore"
    p = mesh.run(mesh.nodes[OWNER], "restore", out["snapshot_id"], "--target", str(target), check=False)
    assert p.returncode == 0, p.stderr
    assert differences(src, restored(target, src)) == []

    mesh.start(1, 2)
    code, report = check(mesh)
    tally = snapshot_tally(report, out["snapshot_id"])
    assert tally["degraded"] == tally["at-risk"] == tally["local-only"] == 0, tally


# -- a holder killed mid-upload and mid-restore --------------------------------------------


def test_holder_killed_mid_upload_records_only_what_is_stored(mesh: LocalMesh, tmp_path: Path) -> None:
    owner, victim = mesh.nodes[OWNER], mesh.nodes[1]
    src = random_tree(tmp_path / "src", 16, seed=2)
    before_packs = set(ledger_codes(owner.home))
    proc = popen(mesh, owner, "backup", str(src), "--k", "2", "--n", "3", "--json")

    def acked() -> list[Row]:
        return [r for r in ledger_rows(owner.home) if r.peer == victim.peer_id and r.pack not in before_packs]
    try:
        # Kill the holder once it acknowledged a few shares of this backup, with more coming.
        wait_for(lambda: len(acked()) >= 2 or proc.poll() is not None, 60,
                 "two shares of this backup acknowledged by the victim")
        assert proc.poll() is None, "the backup ended before the holder could be killed mid-upload"
        mesh.kill(1)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 3), stderr
    out = last_json(stdout)
    packs = new_packs(mesh, before_packs)
    assert len(packs) >= 16
    if proc.returncode == 0:
        # Every share meant for the dead holder found another home.
        assert out["mesh"]["safe"] and not out["mesh"]["degraded"], out["mesh"]
        assert_fully_placed(mesh, packs, 2, 3)
    else:
        # Or the backup says plainly that it is degraded, pack by pack.
        assert out["mesh"]["safe"] is False and out["complete"] is False
        assert out["mesh"]["degraded"] or out["mesh"]["problems"], out["mesh"]

    # Nothing recorded as stored that is not: each ledger row naming the killed holder is
    # a whole share in its vault, with the root recorded at upload.
    rows = [r for r in ledger_rows(owner.home) if r.peer == victim.peer_id and r.pack in packs]
    assert len(rows) >= 2
    assert len(rows) < len(packs), "the victim got all it was meant to: it died too late"
    with ShareVault(victim.home / "shares") as vault:
        for r in rows:
            data = vault.get(owner.peer_id, r.pack, r.index)
            assert len(data) == r.size
    # And the holders, asked again (all up), have every share the ledger names.
    mesh.start(1)
    _, report = check(mesh)
    assert bad_shares_of(report, packs) == []
    if proc.returncode == 0:
        assert snapshot_tally(report, out["snapshot_id"])["degraded"] == 0


def bad_shares_of(report: dict, packs: set[bytes]) -> list[str]:
    """The problems ``check`` reports ("share I of pack P missing") for these packs."""
    ours = {p.hex()[:12] for p in packs}
    return [x for problems in report["mesh"]["bad_holders"].values() for x in problems
            if x.split()[4] in ours]


def test_holder_killed_mid_restore(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[OWNER]
    src = random_tree(tmp_path / "src", 16, seed=3)
    code, out = backup(mesh, src, "--k", "2", "--n", "3")
    assert code == 0, out
    before = store_packs(owner.home)
    target = tmp_path / "restore"
    proc = popen(mesh, owner, "restore", out["snapshot_id"], "--target", str(target))
    try:
        # Kill a holder once the first file is being written (its packs came back from the
        # mesh, into memory), while others are on the way.
        def writing() -> bool:
            return any(p.is_file() for p in target.rglob("*")) if target.exists() else False
        wait_for(lambda: writing() or proc.poll() is not None, 60, "the first file written", every=0.002)
        assert proc.poll() is None, "the restore ended before a holder could be killed"
        mesh.kill(3)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # k=2 of n=3 and one holder gone: every pack still has two holders.
    assert proc.returncode == 0, stdout + stderr
    assert differences(src, restored(target, src)) == []
    # Nothing was staged in the store: those packs live on peers only.
    assert store_packs(owner.home) == before


# -- a holder serving rotten shares ---------------------------------------------------------


def test_tampered_holder_is_routed_around_and_named(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = mesh.nodes[OWNER]
    src = random_tree(tmp_path / "src", 6, seed=4)
    before = set(ledger_codes(owner.home))
    code, out = backup(mesh, src, "--k", "2", "--n", "4")
    assert code == 0, out
    packs = new_packs(mesh, before)
    rows = [r for r in ledger_rows(owner.home) if r.pack in packs]
    # The victim holds a data share (index < k) of some pack: the restore reads those first.
    victim_id = min((r for r in rows if r.index == 0), key=lambda r: r.pack).peer
    victim = next(n for n in mesh.nodes if n.peer_id == victim_id)
    files = share_files(victim.home)
    assert files
    for f in files:
        flip_byte(f)

    target = tmp_path / "restore"
    p = mesh.run(owner, "restore", out["snapshot_id"], "--target", str(target), check=False)
    assert p.returncode == 0, p.stderr
    assert differences(src, restored(target, src)) == []

    code, report = check(mesh)
    assert code == 3
    bad = report["mesh"]["bad_holders"]
    assert set(bad) == {victim_id}, bad
    assert all(("corrupt" in x or "missing" in x) for x in bad[victim_id])
    # Every pack has a share on the victim (n = 4 = holders), older packs this snapshot
    # shares included.
    tally = snapshot_tally(report, out["snapshot_id"])
    assert tally["degraded"] >= len(packs) and tally["at-risk"] == 0, tally


# -- hostile input to a running daemon ------------------------------------------------------


def multistream(text: str) -> bytes:
    return encode_varint(len(text) + 1) + text.encode() + b"\n"


async def serves_normally(mesh: LocalMesh, node: MeshNode) -> None:
    """The daemon runs, answers a peer (a fresh client's Capacity) and its control socket."""
    assert node.running, f"the daemon of node {node.index + 1} died"
    async with open_client() as client:
        reply, _ = await ask(client, node, m.Capacity())
    assert isinstance(reply, m.CapacityReply) and reply.quota_left <= GLOBAL_QUOTA, reply
    p = await trio.to_thread.run_sync(lambda: mesh.run(node, "peer", "list", "--json"))
    peers = last_json(p)
    assert {e["peer"] for e in peers} == {n.peer_id for n in mesh.nodes if n is not node}
    assert all(e["connected"] is not None for e in peers)  # answered by the daemon


async def read_until(stream: trio.SocketStream, want: bytes, limit: float) -> bytes:
    """What the daemon sends until ``want`` is among it, the connection ends, or ``limit``."""
    got = b""
    with trio.move_on_after(limit):
        try:
            while want not in got and (data := await stream.receive_some(4096)):
                got += data
        except trio.BrokenResourceError:
            pass
    return got


async def test_raw_tcp_garbage_silence_and_plaintext(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    silent = await trio.open_tcp_stream("127.0.0.1", node.port)
    noisy = await trio.open_tcp_stream("127.0.0.1", node.port)
    plain = await trio.open_tcp_stream("127.0.0.1", node.port)
    try:
        await noisy.send_all(os.urandom(64 << 10))
        await plain.send_all(multistream("/multistream/1.0.0") + multistream("/plaintext/2.0.0"))
        reply = await read_until(plain, multistream("na"), 5)
        # Noise only: the daemon refuses plaintext ("na") and never agrees to it.
        assert multistream("na") in reply, reply
        assert b"/plaintext/2.0.0" not in reply
        # While the silent one and the noisy one are still open, the daemon serves on.
        await serves_normally(mesh, node)
    finally:
        for s in (silent, noisy, plain):
            await s.aclose()
    await serves_normally(mesh, node)


async def test_bad_frames_cbor_and_types_get_errors(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    bad: dict[str, bytes] = {
        "oversized frame": encode_varint(2 << 20) + os.urandom(1024),
        "overlong varint": b"\xff" * 11,
        "malformed CBOR": encode_frame(b"\xa2\x61t\xff\x00"),
        "not a map": encode_frame(b"\x83\x01\x02\x03"),
        "unknown type": encode_frame(cbor2.dumps({"t": "nope", "v": 1}, canonical=True)),
        "wrong version": encode_frame(cbor2.dumps({"t": "cap", "v": 2}, canonical=True)),
        "extra field": encode_frame(cbor2.dumps({"t": "cap", "v": 1, "x": 0}, canonical=True)),
    }
    async with open_client() as client:
        for what, raw in bad.items():
            ch = await open_channel(client, node)
            try:
                await ch.stream.send_all(raw)
                reply = await ch.receive()
            finally:
                await ch.aclose()
            assert isinstance(reply, m.Error) and reply.code == "protocol", (what, reply)
            assert reply.retryable is False
        # Well-formed requests about shares this client never stored.
        nowhere = os.urandom(32)
        reply, _ = await ask(client, node, m.GetShare(pack=nowhere, index=0, offset=0, length=-1))
        assert isinstance(reply, m.Error) and reply.code == "not-found", reply
        reply, _ = await ask(client, node, m.AuditShare(pack=nowhere, index=3, block=1 << 40))
        assert isinstance(reply, m.Error) and reply.code == "not-found", reply
        # A well-formed message that is not a request.
        reply, _ = await ask(client, node, m.Ok())
        assert isinstance(reply, m.Error) and reply.code == "unexpected", reply
        reply, _ = await ask(client, node, m.CapacityReply(free=1, quota_left=1))
        assert isinstance(reply, m.Error) and reply.code == "unexpected", reply
    await serves_normally(mesh, node)


async def test_truncated_lying_and_invalid_put_stores_nothing(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    pack, share = valid_share(200_000)
    digest = blake3.blake3(share).digest()
    async with open_client() as client:
        # Truncated: half the announced bytes, then the stream ends.
        ch = await open_channel(client, node)
        await ch.send(m.PutShare(pack=pack, index=0, size=len(share), digest=digest))
        await ch.send_bulk(share[: len(share) // 2])
        await ch.aclose()
        # Lying digest: all the bytes, hashing to something else than announced.
        ch = await open_channel(client, node)
        try:
            await ch.send(m.PutShare(pack=pack, index=0, size=len(share), digest=bytes(32)))
            await ch.send_bulk(share)
            try:
                reply: object = await ch.receive()
            except ProtocolError as exc:  # closed without an answer
                reply = exc
        finally:
            await ch.aclose()
        assert not isinstance(reply, m.Ok), reply
        # Honest digest of bytes that are not a share of that pack: rejected by the vault.
        junk = os.urandom(len(share))
        reply = await put(client, node, pack, 0, junk)
        assert isinstance(reply, m.Error) and reply.code == "rejected", reply
        # A share offered under another index than its own.
        reply = await put(client, node, pack, 1, share)
        assert isinstance(reply, m.Error) and reply.code == "rejected", reply
        assert await held(client, node, pack, 0) == -1
        assert await held(client, node, pack, 1) == -1
    await serves_normally(mesh, node)


async def test_a_client_that_stops_reading_a_get_reply(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    seed = os.urandom(32)
    pack, share = valid_share(GLOBAL_QUOTA * 3 // 4)
    async with open_client(seed) as client:
        assert isinstance(await put(client, node, pack, 0, share), m.Ok)
        try:
            stalled = await open_channel(client, node)
            await stalled.send(m.GetShare(pack=pack, index=0, offset=0, length=-1))
            # Never read: the daemon's writes fill the stream's window and wait. Meanwhile
            # it answers this client on other streams of the same connection, and others.
            with trio.fail_after(20):
                assert await held(client, node, pack, 0) == len(share)
                await serves_normally(mesh, node)
            # It read our request and began the reply before it blocked.
            with trio.fail_after(20):
                first = await stalled.receive()
            assert isinstance(first, m.ShareData) and first.size == len(share)
            await stalled.aclose()
        finally:
            reply, _ = await ask(client, node, signed_delete(seed, node.peer_id, pack, 0))
        assert isinstance(reply, m.Ok), reply
    await serves_normally(mesh, node)


# -- untrusted and trusted peers: quotas ---------------------------------------------------


async def test_untrusted_peer_gets_only_the_global_quota(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    info0 = await node_info(mesh, node)
    async with open_client(seed_a) as a, open_client(seed_b) as b:
        reply, _ = await ask(a, node, m.Capacity())
        assert isinstance(reply, m.CapacityReply) and reply.quota_left == GLOBAL_QUOTA, reply
        # Larger than the whole pool: refused on the header, before a byte of it is taken.
        big_pack, big = valid_share(GLOBAL_QUOTA + (256 << 10))
        reply = await offer(a, node, big_pack, 0, big)
        assert isinstance(reply, m.Error) and reply.code == "quota", reply
        assert reply.retryable is False
        assert await held(a, node, big_pack, 0) == -1
        # Within the pool: stored. The pool is shared by every untrusted peer, so what A
        # holds leaves too little for B.
        pack_a, share_a = valid_share(GLOBAL_QUOTA * 5 // 8)
        assert isinstance(await put(a, node, pack_a, 0, share_a), m.Ok)
        pack_b, share_b = valid_share(GLOBAL_QUOTA * 5 // 8)
        reply = await offer(b, node, pack_b, 0, share_b)
        assert isinstance(reply, m.Error) and reply.code == "quota", reply
        assert await held(b, node, pack_b, 0) == -1
        assert await held(a, node, pack_a, 0) == len(share_a)
        info1 = await node_info(mesh, node)
        assert info1["held_for_peers"]["shares"] == info0["held_for_peers"]["shares"] + 1
        assert info1["held_for_peers"]["bytes"] == info0["held_for_peers"]["bytes"] + len(share_a)
        reply, _ = await ask(a, node, signed_delete(seed_a, node.peer_id, pack_a, 0))
        assert isinstance(reply, m.Ok), reply
    assert (await node_info(mesh, node))["held_for_peers"] == info0["held_for_peers"]


async def test_an_over_quota_put_is_answered_while_the_bytes_are_being_sent(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    # A share as large as real ones: 16 MiB packs, k=2.
    pack, big = valid_share(8 << 20)
    async with open_client() as client:
        for _ in range(3):
            try:
                with trio.fail_after(30):
                    reply = await put(client, node, pack, 0, big)  # header, bytes, reply: as Mesh.request
            except ProtocolError as exc:
                pytest.fail(f"the refusal never arrived: {exc}")
            assert isinstance(reply, m.Error) and reply.code == "quota", reply


async def test_a_trusted_peer_gets_its_own_quota(mesh: LocalMesh) -> None:
    """The gate is trust, not size: the same client, once trusted, may store more."""
    node = mesh.nodes[HOSTILE]
    seed = os.urandom(32)
    pack, share = valid_share(GLOBAL_QUOTA + (256 << 10))
    async with open_client(seed) as client:
        reply = await offer(client, node, pack, 0, share)
        assert isinstance(reply, m.Error) and reply.code == "quota", reply
        addr = next(a for a in client.addrs() if a.startswith("/ip4/127.0.0.1/"))
        p = await trio.to_thread.run_sync(lambda: mesh.run(node, "peer", "add", addr, "--json"))
        try:
            # (Not "reachable": this client serves no share protocol of its own.)
            assert last_json(p)["trusted"] is True
            reply, _ = await ask(client, node, m.Capacity())
            assert isinstance(reply, m.CapacityReply) and reply.quota_left > 1 << 30, reply
            assert isinstance(await put(client, node, pack, 0, share), m.Ok)
            reply, _ = await ask(client, node, signed_delete(seed, node.peer_id, pack, 0))
            assert isinstance(reply, m.Ok), reply
        finally:
            await trio.to_thread.run_sync(lambda: mesh.run(node, "peer", "remove", client.peer_id))
        reply, _ = await ask(client, node, m.Capacity())
        assert isinstance(reply, m.CapacityReply) and reply.quota_left == GLOBAL_QUOTA, reply


async def node_info(mesh: LocalMesh, node: MeshNode) -> dict:
    p = await trio.to_thread.run_sync(lambda: mesh.run(node, "node", "info", "--json"))
    return last_json(p)


# -- DeleteShare ----------------------------------------------------------------------------


async def test_delete_needs_the_owners_signature_once(mesh: LocalMesh) -> None:
    node = mesh.nodes[HOSTILE]
    seed, other = os.urandom(32), os.urandom(32)
    pack, share = valid_share(20_000)
    async with open_client(seed) as client:
        assert isinstance(await put(client, node, pack, 0, share), m.Ok)
        # Signed by another key.
        reply, _ = await ask(client, node, signed_delete(other, node.peer_id, pack, 0))
        assert isinstance(reply, m.Error) and reply.code == "bad-signature", reply
        # Signed by the owner, for another holder.
        reply, _ = await ask(client, node, signed_delete(seed, mesh.nodes[1].peer_id, pack, 0))
        assert isinstance(reply, m.Error) and reply.code == "wrong-holder", reply
        assert await held(client, node, pack, 0) == len(share)
        # Signed by the owner: deleted.
        nonce = os.urandom(16)
        good = signed_delete(seed, node.peer_id, pack, 0, nonce)
        reply, _ = await ask(client, node, good)
        assert isinstance(reply, m.Ok), reply
        assert await held(client, node, pack, 0) == -1
        # The same delete again, after the share came back: a replay, refused.
        assert isinstance(await put(client, node, pack, 0, share), m.Ok)
        reply, _ = await ask(client, node, good)
        assert isinstance(reply, m.Error) and reply.code == "replay", reply
        assert await held(client, node, pack, 0) == len(share)
        reply, _ = await ask(client, node, signed_delete(seed, node.peer_id, pack, 0))
        assert isinstance(reply, m.Ok), reply
        assert await held(client, node, pack, 0) == -1
    await serves_normally(mesh, node)
