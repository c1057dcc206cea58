"""GroupNode replicas (sqlite on disk) exchanging the real sync and join messages, each
encoded and decoded as it goes on the wire: a member cannot jam the group with ops signed
by throwaway keys, a group larger than one message still syncs and joins (pages), fork
evidence reaches both replicas and is kept on disk, and a member that leaves cannot keep
writing to its partition under a cut-off it named itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corestate.node.core import catalog as cat
from corestate.node.core import membership as mem
from corestate.node.group import GroupNode
from corestate.protocol import group as gw
from corestate.protocol import messages
from corestate.protocol.keys import NodeKeys

KEYS = [NodeKeys.from_root(bytes([0x70 + i]) * 32) for i in range(5)]


def wire(msg: messages.Message) -> messages.Message:
    """The message as the receiver decodes it (and no frame over the limit)."""
    payload = messages.encode(msg)
    assert len(payload) <= gw.SYNC_MAX_FRAME, f"{msg.TYPE}: {len(payload)} bytes"
    return gw.decode(payload)


def exchange(x: GroupNode, y: GroupNode) -> bool:
    """One sync exchange initiated by x with y; whether x would start another."""
    open_ = wire(x.sync_open())
    assert isinstance(open_, gw.SyncOpen)
    reply = wire(y.sync_reply(x.me, open_))
    assert isinstance(reply, gw.SyncReply)
    push, _ = x.sync_finish(reply)
    push = wire(push)
    assert isinstance(push, gw.SyncPush)
    if push.ops or push.catalog:
        y.sync_absorb(x.me, push)
    return not x.last_reply_complete


def sync(x: GroupNode, y: GroupNode, limit: int = 50) -> int:
    for n in range(1, limit + 1):
        if not exchange(x, y):
            return n
    raise AssertionError(f"no end after {limit} exchanges")


def join(admin: GroupNode, node: GroupNode) -> int:
    """Invite, redeem and the JoinReply pages; returns how many pages came."""
    inv = admin.invite("member", 3600, [])
    admin.redeem(node.me, inv.group, inv.secret)
    pages = [wire(gw.JoinReply(ops=p, more=i < len(admin.join_pages()) - 1, addrs=()))
             for i, p in enumerate(admin.join_pages())]
    node.adopt(inv.group, [op for p in pages for op in p.ops])
    assert node.is_member(node.me)
    return len(pages)


@pytest.fixture
def office(tmp_path: Path) -> list[GroupNode]:
    nodes = [GroupNode(tmp_path / f"g{i}.db", KEYS[i]) for i in range(3)]
    nodes[0].create("office")
    for n in nodes[1:]:
        join(nodes[0], n)
    return nodes


def test_a_member_cannot_jam_the_group(office: list[GroupNode], tmp_path: Path) -> None:
    admin, member, other = office
    g = admin.group
    assert g is not None
    heads = list(member.state.heads)
    # The member pushes 8,200 validly signed ops naming the group, signed by throwaway keys,
    # and some of its own (void: it is no admin), in pushes of at most MAX_OPS.
    junk = [mem.encode_op(mem.sign_op(NodeKeys.from_root(os.urandom(32)).signing_key, kind="add", group=g,
                                      subject=NodeKeys.from_root(os.urandom(32)).peer_id, role="admin",
                                      parents=heads)) for _ in range(8_200)]
    junk += [mem.encode_op(mem.sign_op(member.keys.signing_key, kind="add", group=g, role="admin",
                                       subject=NodeKeys.from_root(os.urandom(32)).peer_id, parents=heads))
             for _ in range(100)]
    for i in range(0, len(junk), 4_000):
        admin.sync_absorb(member.me, gw.SyncPush(ops=tuple(junk[i:i + 4_000]), catalog=b""))
    assert len(admin.ops) <= 4 + mem.MAX_IDLE_OPS_PER_SIGNER, len(admin.ops)

    def still_works(admin: GroupNode) -> None:
        # The admin opens sync rounds and answers them, and answers joins.
        sync(admin, member)
        sync(member, admin)
        newcomer = GroupNode(tmp_path / f"new{len(admin.members())}.db",
                             NodeKeys.from_root(os.urandom(32)))
        join(admin, newcomer)
        sync(newcomer, admin)
        newcomer.close()

    still_works(admin)
    # Also after a restart: the admin's group.db holds nothing that jams it.
    admin.close()
    admin = GroupNode(tmp_path / "g0.db", KEYS[0])
    assert len(admin.ops) <= 4 + mem.MAX_IDLE_OPS_PER_SIGNER + 2
    still_works(admin)
    # And removals still spread: the admin removes `other`, the member learns it.
    admin.remove(other.me)
    sync(member, admin)
    assert other.me in member.removed() and other.me not in member.members()


def test_ops_beyond_one_message_travel_in_pages(office: list[GroupNode], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    admin, member, _ = office
    monkeypatch.setattr(gw, "OPS_PAGE_BYTES", 16 << 10)
    # The admin adds 600 members (ops signed in a chain, stored at once).
    g = admin.group
    assert g is not None and admin.state is not None
    parent, ops = admin.state.heads, []
    for _ in range(600):
        op = mem.sign_op(admin.keys.signing_key, kind="add", group=g, role="member",
                         subject=NodeKeys.from_root(os.urandom(32)).peer_id, parents=parent)
        ops.append(op)
        parent = (op.op_id,)
    admin._store_ops(ops)
    assert len(admin.members()) == 603
    # A member gets them over several exchanges, a newcomer over several JoinReplies.
    assert sync(member, admin) > 1
    assert member.members() == admin.members() and member.ops.keys() == admin.ops.keys()
    newcomer = GroupNode(tmp_path / "new.db", KEYS[4])
    assert join(admin, newcomer) > 1
    assert newcomer.ops.keys() == admin.ops.keys()
    newcomer.close()


def test_equivocation_is_recorded_by_both_replicas_and_kept(office: list[GroupNode], tmp_path: Path) -> None:
    admin, member, other = office
    # `other` writes, then signs two different batches for its next seq and extends both;
    # each history reaches a different replica.
    other.write({b"c": b"1"})
    sync(admin, other)
    sync(member, other)
    head = other.catalog.head(other.me)
    assert head is not None
    x = y = head[2]
    xs, ys = [], []
    for i in range(2):
        bx = cat.sign_batch(other.keys.signing_key, epoch=0, seq_first=head[1] + 1 + i, prev=x, hlc=1,
                            entries=[(b"k", b"x%d" % i)])
        by = cat.sign_batch(other.keys.signing_key, epoch=0, seq_first=head[1] + 1 + i, prev=y, hlc=1,
                            entries=[(b"k", b"y%d" % i)])
        xs.append(bx.raw)
        ys.append(by.raw)
        x, y = bx.batch_id, by.batch_id
    from corestate.node.core import sync as csync
    admin.sync_absorb(other.me, gw.SyncPush(ops=(), catalog=csync.encode(csync.Push(tuple(xs)))))
    member.sync_absorb(other.me, gw.SyncPush(ops=(), catalog=csync.encode(csync.Push(tuple(ys)))))
    assert admin.catalog.version_vector() == member.catalog.version_vector()  # same (epoch, seq)...
    assert admin.catalog.head(other.me) != member.catalog.head(other.me)  # ...different histories
    sync(admin, member)
    for n in (admin, member):
        (ev, *_) = n.catalog.forks()
        assert ev.author == other.me
    # The evidence is on disk.
    admin.close()
    again = GroupNode(tmp_path / "g0.db", KEYS[0])
    assert [ev.author for ev in again.catalog.forks()] == [other.me]
    again.close()


def test_a_leaving_member_cannot_keep_writing(office: list[GroupNode]) -> None:
    admin, member, _ = office
    member.write({b"c": b"before"})
    sync(admin, member)
    seen = admin.catalog.head(member.me)
    assert seen is not None
    # The member leaves naming a cut far beyond what it published, then keeps writing.
    leave = mem.sign_op(member.keys.signing_key, kind="remove", group=admin.group, subject=member.me,
                        parents=member.state.heads, upto=(0, 1_000_000))
    member._store_ops([leave])
    mine = member.catalog.head(member.me)
    assert mine is not None
    later = [cat.sign_batch(member.keys.signing_key, epoch=0, seq_first=mine[1] + 1, prev=mine[2],
                            hlc=1, entries=[(b"c", b"after")])]
    from corestate.node.core import sync as csync
    # An accomplice forwards the leave and the later batch; the admin keeps only what it held.
    admin.sync_absorb(KEYS[2].peer_id, gw.SyncPush(ops=(mem.encode_op(leave),),
                                                   catalog=csync.encode(csync.Push(tuple(b.raw for b in later)))))
    assert member.me in admin.removed()
    assert admin.catalog.head(member.me)[:2] == seen[:2]
    assert admin.catalog.get(member.me, b"c").value == b"before"
    assert admin.cutoffs() == {member.me: (seen[0], seen[1])}
