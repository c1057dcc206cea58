"""Peers, groups and node info as typed calls through a real daemon (node/app/members.py):
the results' fields, paged listings, a Failure with a hint for a bad request, an invite
token kept out of the daemon's log on the typed path; and ``init``/``key passwd`` of
node/app/keys.py in process (they never go to a daemon)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from corestate.node.app import Local
from corestate.node.app import keys as app_keys
from corestate.node.group import Invite
from corestate.node.runtime.client import Connection, DaemonRefused, call, connect, subscribe
from corestate.node.runtime.localmesh import LocalMesh
from corestate.protocol import control as c
from meshutil import make_mesh, running, wait_for

from corestate.errors import CoreStateError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    mesh = make_mesh(tmp_path_factory.mktemp("members"), 2)
    with running(mesh):
        yield mesh


def ask(mesh: LocalMesh, request: c.Message, i: int = 0) -> c.Message:
    s = wait_for(lambda: connect(mesh.nodes[i].home, timeout=10), 30, "the daemon to accept")
    with s:
        return call(s, request)


def test_node_info_is_a_typed_call(pair: LocalMesh) -> None:
    node = pair.nodes[0]
    res = ask(pair, c.NodeInfoCall())
    assert isinstance(res, c.NodeInfoResult)
    assert res.peer_id == node.peer_id and res.home == os.fsencode(node.home)
    assert node.addr in res.addrs and all(a.endswith(f"/p2p/{node.peer_id}") for a in res.addrs)
    assert 0 < res.uptime_ms < 3600_000
    assert isinstance(res.held_for_peers, c.VaultStats)


def test_peers_through_the_daemon(pair: LocalMesh) -> None:
    other = pair.nodes[1]
    removed = ask(pair, c.PeerRemoveCall(peer=other.peer_id[-8:]))  # the end of a PeerID will do
    assert isinstance(removed, c.PeerRemoveResult) and removed.removed == other.peer_id
    added = ask(pair, c.PeerAddCall(addr=other.addr, domains=("home", "rack1")))
    assert isinstance(added, c.PeerAddResult)
    assert added.peer == other.peer_id and added.trusted and added.domains == ("home", "rack1")
    assert added.reachable is True  # a daemon asked it for its capacity
    assert added.addrs == (other.addr.rsplit("/p2p/", 1)[0],)
    # The listing comes as pages of records, then Done; only a daemon knows who is online.
    s = wait_for(lambda: connect(pair.nodes[0].home, timeout=10), 30, "the daemon to accept")
    with s:
        conn = Connection(s)
        conn.send(c.PeerListCall())
        replies = list(conn.messages())
    assert isinstance(replies[-1], c.Done)
    rows = [r for page in replies[:-1] if isinstance(page, c.PeerListPage) for r in page.peers]
    assert replies[-1].items == len(rows) >= 1
    row = next(r for r in rows if r.peer == other.peer_id)
    assert row.trusted and row.domains == ("home", "rack1") and row.connected is True
    assert row.bytes_we_hold == 0


@pytest.mark.parametrize(("request_", "words", "hint"), [
    (c.PeerAddCall(addr="/ip4/127.0.0.1/tcp/1"), "not a peer address", "node info"),
    (c.PeerRemoveCall(peer="nobody"), "no peer nobody", "peer list"),
    (c.GroupMembersCall(), "not in a group", "group create"),
    (c.GroupInviteCall(admin=False, expires="1h"), "not in a group", "group join"),
    (c.GroupRemoveCall(peer="x"), "not in a group", "group create"),
])
def test_a_bad_request_fails_with_a_hint(pair: LocalMesh, request_: c.Message, words: str, hint: str) -> None:
    with pytest.raises(DaemonRefused) as refused:
        ask(pair, request_)
    assert words in str(refused.value) and hint in refused.value.hint
    assert not refused.value.retryable
    assert isinstance(ask(pair, c.NodeInfoCall()), c.NodeInfoResult)  # and the daemon lives on


def test_a_group_through_typed_calls_and_a_join_token_kept_out_of_the_log(pair: LocalMesh) -> None:
    a, b = pair.nodes
    with wait_for(lambda: connect(a.home, timeout=10), 30, "the daemon to accept") as follower:
        events = subscribe(follower, ("group",))
        made = ask(pair, c.GroupCreateCall(name="office"))  # (the caller gets the event too: skipped)
        assert isinstance(made, c.GroupCreateResult) and made.admin == a.peer_id and len(made.group) == 64
        follower.settimeout(30)
        ev = next(events)  # subscribers hear of it
        assert isinstance(ev, c.GroupChanged) and ev.group == made.group and ev.members == 1
        assert ev.reason == "created"
    with pytest.raises(DaemonRefused) as refused:
        ask(pair, c.GroupInviteCall(admin=False, expires="soon"))
    assert "not a duration" in str(refused.value)
    inv = ask(pair, c.GroupInviteCall(admin=False, expires="1h"))
    assert isinstance(inv, c.GroupInviteResult) and inv.role == "member"
    assert inv.expires_ms > time.time() * 1000 + 3500_000
    # A well-formed token whose admin cannot be reached: refused, and not in the log.
    lost = Invite(os.urandom(32), _other_peer(), ("/ip4/127.0.0.1/tcp/1",), os.urandom(16), "member",
                  int(time.time() * 1000) + 60_000).token()
    with pytest.raises(DaemonRefused):
        ask(pair, c.GroupJoinCall(token=lost), 1)
    joined = ask(pair, c.GroupJoinCall(token=inv.token), 1)
    assert isinstance(joined, c.GroupJoinResult) and joined.group == made.group and joined.rebuilt is None
    assert {(m.peer_id, m.role) for m in joined.view.members} == {(a.peer_id, "admin"), (b.peer_id, "member")}
    assert joined.view.me == b.peer_id and joined.view.name == "office"
    log = (b.home / "daemon.log").read_text()
    assert "running: group join" in log  # the call is logged ...
    for token in (lost, inv.token):
        assert token not in log and token[len("csinv1."):][:40] not in log  # ... its token is not
        assert token not in repr(c.GroupJoinCall(token=token))  # nor in any repr a log could show
    members = ask(pair, c.GroupMembersCall())
    assert isinstance(members, c.GroupMembersResult) and len(members.view.members) == 2
    synced = ask(pair, c.GroupSyncCall(), 1)
    assert isinstance(synced, c.GroupSyncResult)
    assert [(p.peer_id, p.result) for p in synced.peers] == [(a.peer_id, "ok")]
    assert {v.author for v in synced.vector} >= {a.peer_id}
    left = ask(pair, c.GroupLeaveCall(), 1)
    assert isinstance(left, c.GroupLeaveResult) and left.left


def _other_peer() -> str:
    from corestate.protocol.keys import peer_id_from_public_key
    return peer_id_from_public_key(bytes(nacl.signing.SigningKey(os.urandom(32)).verify_key))


# -- init and key passwd: in process, never a daemon call ------------------------------------


def test_init_and_passwd_as_app_functions(tmp_path: Path) -> None:
    made = app_keys.init(app_keys.InitRequest(home=tmp_path / "a", passphrase=b"one"), Local())
    assert not made.recovered and len(made.phrase.split()) == 24 and made.from_group is None
    again = app_keys.init(app_keys.InitRequest(home=tmp_path / "b", passphrase=b"two", phrase=made.phrase),
                          Local())
    assert again.recovered and again.peer_id == made.peer_id  # the phrase alone: the same identity
    with pytest.raises(CoreStateError):
        app_keys.check_init(tmp_path / "a", None, None)  # the home exists
    with pytest.raises(CoreStateError, match="both --hsm-module and --hsm-token"):
        app_keys.check_init(tmp_path / "c", "/lib.so", None)
    # A wrong passphrase fails before the new one is asked for.
    asked: list[str] = []

    def new() -> bytes:
        asked.append("new")
        return b"three"
    with pytest.raises(CoreStateError):
        app_keys.key_passwd(tmp_path / "a", lambda: b"wrong", new)
    assert asked == []
    app_keys.key_passwd(tmp_path / "a", lambda: b"one", new)
    assert asked == ["new"]
    from corestate.node import keystore
    from corestate.node.home import Home
    sealed = Home(tmp_path / "a").key_path.read_bytes()
    assert keystore.unseal(sealed, b"three")


def test_node_info_in_place_says_no_daemon_runs(tmp_path: Path) -> None:
    from corestate.node.app.members import node_info
    from corestate.node.home import Home
    from corestate.node.local import LocalNode
    app_keys.init(app_keys.InitRequest(home=tmp_path / "a", passphrase=b"pw"), Local())
    with LocalNode.open(Home(tmp_path / "a"), b"pw") as node, pytest.raises(CoreStateError) as err:
        node_info(node, c.NodeInfoCall(), Local())
    assert "no daemon runs" in str(err.value) and "corestate node run" in err.value.hint
