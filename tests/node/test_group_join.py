"""Joining a group, with real daemons on loopback and a hostile "admin" built from the
protocol modules.

- A forged invite (its "admin" answers with ops that do not make the joiner a member of
  the group it names) leaves the joiner exactly as it was, also after a restart: no group,
  the forger not trusted, no member quota for it, no share sent to it; the token never
  reaches the daemon's log. A group held without membership (what an older build saved
  after such an answer) is dropped by ``group leave``; then a real join works.
- Quotas follow membership at once: a group formed and used at once (no manual sync)
  backs up far past the strangers' pool on every member.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
from corestate.node.core import membership as mem
from corestate.node.group import Invite
from corestate.node.peers import AddressBook
from corestate.node.runtime.localmesh import LocalMesh, MeshNode
from corestate.protocol import group as gw
from corestate.protocol import messages as m
from corestate.protocol.streams import Channel
from meshutil import ask, last_json, ledger_rows, make_mesh, random_tree, wait_for

SHARE_PROTOCOL = "/corestate/share/1"


def _forget_each_other(mesh: LocalMesh) -> None:
    """Daemons that know nothing of each other: only the group may wire them."""
    for n in mesh.nodes:
        book = AddressBook(n.home / "peers.db")
        for e in book.all():
            book.remove(e.peer)
        book.close()


async def cli(mesh: LocalMesh, node: MeshNode, *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: mesh.run(node, *args, check=False))


class Forger:
    """A peer that hands out invites to a group of its own and answers a redemption with
    that group's founding op plus an add of the joiner signed by a key that is no admin:
    validly signed bytes that prove nothing. It counts every share request it gets."""

    def __init__(self, host: Any, seed: bytes, victim: str) -> None:
        self.host = host
        key = nacl.signing.SigningKey(seed)
        self.create = mem.sign_op(key, kind="create", name="office", hlc=1)
        self.group = self.create.op_id
        stranger = nacl.signing.SigningKey(os.urandom(32))
        self.add = mem.sign_op(stranger, kind="add", group=self.group, subject=victim, role="member",
                               parents=[self.group], hlc=2)
        self.share_requests = 0
        host.set_handler(gw.JOIN_PROTOCOL, self.serve_join)
        host.set_handler(SHARE_PROTOCOL, self.serve_share)

    def token(self) -> str:
        return Invite(self.group, self.host.peer_id, tuple(self.host.addrs()), os.urandom(16), "member",
                      int(time.time() * 1000) + 3_600_000).token()

    async def serve_join(self, stream: Any) -> None:
        ch = Channel(stream, timeout=10, max_frame=gw.SYNC_MAX_FRAME, decode=gw.decode)
        await ch.receive()
        await ch.send(gw.JoinReply(ops=(mem.encode_op(self.create), mem.encode_op(self.add)), more=False,
                                   addrs=tuple(f"{self.host.peer_id} {a.rsplit('/p2p/', 1)[0]}"
                                               for a in self.host.addrs())))
        await ch.aclose()

    async def serve_share(self, stream: Any) -> None:
        self.share_requests += 1
        ch = Channel(stream, timeout=10)
        msg = await ch.receive()
        if isinstance(msg, m.Capacity):  # inviting: plenty of room here
            await ch.send(m.CapacityReply(free=1 << 40, quota_left=1 << 40))
        await ch.aclose()


@asynccontextmanager
async def forger(victim: str) -> AsyncIterator[Forger]:
    from corestate.protocol.p2p import open_host
    seed = os.urandom(32)
    async with open_host(seed, ["/ip4/127.0.0.1/tcp/0"]) as host:
        yield Forger(host, seed, victim)


async def _untouched(mesh: LocalMesh, victim: MeshNode, f: Forger) -> None:
    """The victim holds no group, does not trust the forger, gives it only the pool."""
    members = await cli(mesh, victim, "group", "members")
    assert members.returncode == 1 and "not in a group" in members.stderr, members
    peers = last_json(await cli(mesh, victim, "peer", "list", "--json"))
    assert not any(p["peer"] == f.host.peer_id and p["trusted"] for p in peers), peers
    reply, _ = await ask(f.host, victim, m.Capacity())
    assert isinstance(reply, m.CapacityReply) and reply.quota_left <= 64 << 20, reply


async def test_a_forged_invite_captures_nothing(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path / "mesh", 2)
    mesh.create()
    _forget_each_other(mesh)
    mesh.start()
    admin, victim = mesh.nodes
    try:
        async with forger(victim.peer_id) as f:
            token = f.token()
            p = await cli(mesh, victim, "group", "join", token)
            assert p.returncode == 1, p
            await _untouched(mesh, victim, f)
            assert "does not prove this node's membership" in p.stderr, p.stderr

            # After a restart too; and its backups send the forger nothing.
            await trio.to_thread.run_sync(mesh.stop, 1)
            await trio.to_thread.run_sync(lambda: mesh.start(1))
            await _untouched(mesh, victim, f)
            src = random_tree(tmp_path / "src", 1, seed=3)
            assert (await cli(mesh, victim, "backup", str(src))).returncode == 0
            assert f.share_requests == 0

            # What an older build saved from such an answer: the forger's group, held
            # without membership. `group leave` drops it (no void op, no "already in a group").
            await trio.to_thread.run_sync(mesh.stop, 1)
            db = sqlite3.connect(victim.home / "group.db")
            with db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('group', ?)", (f.group,))
                db.executemany("INSERT OR REPLACE INTO ops VALUES (?, ?)",
                               [(op.op_id, mem.encode_op(op)) for op in (f.create, f.add)])
            db.close()
            await trio.to_thread.run_sync(lambda: mesh.start(1))
            held = last_json(await cli(mesh, victim, "group", "members", "--json"))
            assert victim.peer_id not in held["members"]
            left = await cli(mesh, victim, "group", "leave", "--json")
            assert left.returncode == 0 and last_json(left) == {"left": False, "dropped": True}, left
            assert "not in a group" in (await cli(mesh, victim, "group", "members")).stderr

        # A real invite still works, and a member leaves with an op that counts.
        assert (await cli(mesh, admin, "group", "create", "office")).returncode == 0
        real = (await cli(mesh, admin, "group", "invite")).stdout.strip().splitlines()[-1]
        joined = await cli(mesh, victim, "group", "join", real)
        assert joined.returncode == 0, joined
        members = last_json(await cli(mesh, victim, "group", "members", "--json"))["members"]
        assert members == {admin.peer_id: "admin", victim.peer_id: "member"}
        left = await cli(mesh, victim, "group", "leave", "--json")
        assert last_json(left) == {"left": True, "dropped": False}, left
        log = (victim.home / "daemon.log").read_text()
        assert token not in log and real not in log
    finally:
        mesh.close()


def test_invite_tokens_stay_out_of_the_daemon_log(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path / "mesh", 1)
    mesh.create()
    mesh.start()
    node = mesh.nodes[0]
    try:
        # A well-formed token whose admin cannot be reached, and a mangled one.
        good = Invite(os.urandom(32), _other_peer(),
                      ("/ip4/127.0.0.1/tcp/1",), os.urandom(16), "member",
                      int(time.time() * 1000) + 60_000).token()
        bad = good[:-4] + "@@@@"
        for token in (good, bad):
            p = mesh.run(node, "group", "join", token, check=False)
            assert p.returncode == 1, p
        mesh.run(node, "group", "join", "--json", good, check=False)
        log = (node.home / "daemon.log").read_text()
        assert "group join" in log  # the command is logged ...
        for token in (good, bad):
            assert token not in log and token[len("csinv1."):][:40] not in log  # ... its token is not
    finally:
        mesh.close()


def _other_peer() -> str:
    from corestate.protocol.keys import peer_id_from_public_key
    return peer_id_from_public_key(bytes(nacl.signing.SigningKey(os.urandom(32)).verify_key))


@pytest.fixture
def fresh_office(tmp_path: Path) -> Any:
    """Three daemons with a 1 MiB strangers' pool and 1 MiB packs, knowing nothing of each
    other; a group is formed and nothing else is done (no `group sync`)."""
    mesh = make_mesh(tmp_path / "mesh", 3)
    _forget_each_other(mesh)
    mesh.start()
    a, b, c = mesh.nodes
    mesh.run(a, "group", "create", "office")
    for n in (b, c):
        token = mesh.run(a, "group", "invite").stdout.strip().splitlines()[-1]
        mesh.run(n, "group", "join", token)
    yield mesh
    mesh.close()


def _backs_up_beyond_the_pool(mesh: LocalMesh, owner: MeshNode, src: Path) -> None:
    p = mesh.run(owner, "backup", str(src), "--json", check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = last_json(p)
    others = {n.peer_id for n in mesh.nodes if n is not owner}
    assert summary["mesh"]["safe"], summary["mesh"]
    placed: dict[str, int] = {}
    for row in ledger_rows(owner.home):
        placed[row.peer] = placed.get(row.peer, 0) + row.size
    # Every other member took far more than the 1 MiB pool a stranger may use.
    assert set(placed) == others and min(placed.values()) > 6 << 20, placed


def test_a_new_group_backs_up_at_once_beyond_the_strangers_pool(fresh_office: LocalMesh,
                                                                 tmp_path: Path) -> None:
    mesh = fresh_office
    a, b, c = mesh.nodes
    # The admin (the joiners learned it from their join answers) and the first joiner
    # (the second joiner learned it from its join answer; the admin admitted it).
    _backs_up_beyond_the_pool(mesh, a, random_tree(tmp_path / "a", 8, seed=1))
    _backs_up_beyond_the_pool(mesh, b, random_tree(tmp_path / "b", 8, seed=2))
    # The last joiner: the first learns of it from the admin's round after the admission.
    wait_for(lambda: c.peer_id in last_json(mesh.run(b, "group", "members", "--json"))["members"],
             60, "the first joiner to hear of the second", every=0.5)
    _backs_up_beyond_the_pool(mesh, c, random_tree(tmp_path / "c", 8, seed=3))


# -- in one process: membership reaches listeners whichever way it arrives ------------------


def _replica(tmp_path: Path, name: str) -> Any:
    from corestate.node.group import GroupNode
    from corestate.protocol.keys import NodeKeys
    node = GroupNode(tmp_path / f"{name}.db", NodeKeys.from_root(os.urandom(32)))
    node.heard = []  # type: ignore[attr-defined]
    node.on_members.append(lambda: node.heard.append(frozenset(node.members())))  # type: ignore[attr-defined]
    return node


def _admit(admin: Any, joiner: Any) -> None:
    inv = admin.invite("member", 60, [])
    admin.redeem(joiner.me, inv.group, inv.secret)
    joiner.accept_join(inv.group, admin.me, [mem.encode_op(op) for op in admin.ops.values()])


def _initiate(a: Any, b: Any) -> None:
    """``a`` opens a sync round with ``b`` (open, reply, push)."""
    push, _ = a.sync_finish(b.sync_reply(a.me, a.sync_open()))
    b.sync_absorb(a.me, push)


def test_membership_reaches_listeners_whichever_way_it_arrives(tmp_path: Path) -> None:
    admin, b1, b2, c = (_replica(tmp_path, n) for n in ("admin", "b1", "b2", "c"))
    admin.create("office")
    for joiner in (b1, b2):
        _admit(admin, joiner)
        assert joiner.heard[-1] == frozenset(admin.members()) >= {admin.me, joiner.me}  # on the proven join
    _admit(admin, c)
    assert admin.heard[-1] == frozenset({admin.me, b1.me, b2.me, c.me})  # on admitting
    # b1 learns of c as the initiator of a round, b2 as its responder.
    _initiate(b1, admin)
    _initiate(admin, b2)
    for b in (b1, b2):
        assert c.me in b.heard[-1], b.heard
    # A removal, both ways again.
    admin.remove(c.me)
    assert c.me not in admin.heard[-1]
    _initiate(b1, admin)
    _initiate(admin, b2)
    for b in (b1, b2):
        assert c.me not in b.heard[-1] and c.me in b.removed()


def test_a_forged_answer_changes_nothing_and_leave_drops_a_group_held_without_membership(
        tmp_path: Path) -> None:
    from corestate.node.group import GroupError, GroupNode
    victim = _replica(tmp_path, "victim")
    forger = _replica(tmp_path, "forger")
    gid = forger.create("office")
    stranger = nacl.signing.SigningKey(os.urandom(32))
    fake_add = mem.sign_op(stranger, kind="add", group=gid, subject=victim.me, role="member", parents=[gid])
    ops = [mem.encode_op(op) for op in forger.ops.values()] + [mem.encode_op(fake_add)]
    for group, admin, raws, why in [
            (gid, forger.me, ops[:1], "no valid op"),
            (gid, forger.me, ops, "no valid op"),
            (os.urandom(32), forger.me, ops, "founding op"),
            (gid, forger.me, [b"\x00garbage"], "founding op")]:
        with pytest.raises(GroupError, match=why):
            victim.accept_join(group, admin, raws)
        assert victim.group is None and not victim.ops and victim.heard == []
    # A real add by the forger's admin key, but answered by someone who is no admin of it.
    inv = forger.invite("member", 60, [])
    forger.redeem(victim.me, inv.group, inv.secret)
    with pytest.raises(GroupError, match="not an admin"):
        victim.accept_join(gid, victim.me, [mem.encode_op(op) for op in forger.ops.values()])
    assert victim.group is None
    victim.close()
    again = GroupNode(tmp_path / "victim.db", victim.keys)
    assert again.group is None and not again.in_group
    # Leftovers of an older build: a group held without membership; leave drops it.
    again.adopt(gid, ops[:1])
    assert again.in_group and not again.is_member(again.me)
    assert again.leave() is None and again.group is None and not again.ops
    with pytest.raises(GroupError, match="not in a group"):
        again.leave()


@pytest.mark.parametrize("expires", [float("inf"), float("-inf"), float("nan"), "soon", None])
def test_a_token_with_a_malformed_expiry_is_not_an_invite(expires: object) -> None:
    """Found by fuzzing (tests/fuzz, target invite-token): an infinite float as the expiry
    raised OverflowError out of Invite.parse (``group join`` catches GroupError)."""
    import base64

    import cbor2
    from corestate.node.group import TOKEN_PREFIX, GroupError

    raw = cbor2.dumps([1, b"\1" * 32, "admin", [], b"\2" * 16, "member", expires])
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(GroupError, match="not an invite token"):
        Invite.parse(token)


def test_a_token_standing_for_billions_of_addresses_is_refused_at_once() -> None:
    """Found while fuzzing (tests/fuzz, target invite-token, with the shared-reference
    input of the catalog-sync crash): 200 bytes of shared references as the addresses
    made Invite.parse build the text of 8**9 items (minutes, gigabytes); 8**7 here, about
    a second without the guard."""
    import base64

    import cbor2
    from cborbombs import shared_bomb
    from corestate.node.group import TOKEN_PREFIX, GroupError

    raw = cbor2.dumps([1, b"\1" * 32, "admin", ["/ip4/10.0.0.1/tcp/1"], b"\2" * 16, "member", 5])
    raw = raw.replace(cbor2.dumps(["/ip4/10.0.0.1/tcp/1"]), shared_bomb(7))
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    t0 = time.monotonic()
    with pytest.raises(GroupError, match="not an invite token"):
        Invite.parse(token)
    assert time.monotonic() - t0 < 10.0  # a bound against a hang, generous for a loaded machine
