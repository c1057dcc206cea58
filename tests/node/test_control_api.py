"""The typed control API with a real daemon: the handshake, ``status``, the event stream
(``node events``), and clients that misbehave (garbage, oversize frames, other versions,
silence, floods, subscribers that vanish or read too slowly)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from corestate.node.runtime.client import Connection, DaemonRefused, call, connect, subscribe
from corestate.node.runtime.daemon import HANDSHAKE_TIMEOUT, MAX_CLIENTS
from corestate.node.runtime.events import EventBus, alert
from corestate.node.runtime.localmesh import LocalMesh
from corestate.protocol import control as c
from corestate.protocol import wire
from meshutil import (
    clean_env,
    edit_config,
    last_json,
    make_mesh,
    random_tree,
    run_plain,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    mesh = make_mesh(tmp_path_factory.mktemp("api"), 1)
    edit_config(mesh.nodes[0].home, "backup_every = 0", 'backup_every = "6h"')
    with running(mesh, 0):
        yield mesh


def raw(mesh: LocalMesh) -> socket.socket:
    # A burst of connects can find the listen backlog full for a moment: try again.
    return wait_for(lambda: connect(mesh.nodes[0].home, timeout=10), 30, "the daemon to accept")


def alive(mesh: LocalMesh) -> None:
    """The daemon still answers a status call promptly."""
    t0 = time.monotonic()
    with raw(mesh) as s:
        res = call(s, c.StatusCall())
    assert isinstance(res, c.StatusResult) and time.monotonic() - t0 < 10


def test_status_with_a_daemon_and_without(solo: LocalMesh, tmp_path: Path) -> None:
    mesh, node = solo, solo.nodes[0]
    p = mesh.run(node, "status", "--json")
    assert p.returncode == 0, p.stderr
    st = last_json(p)
    for key in ("peer_id", "daemon", "peers", "last_backup", "next_backup", "redundancy", "alerts"):
        assert key in st, key
    assert st["daemon"] is True and st["peer_id"] == node.peer_id
    # The schedule is the core's: six hours from the daemon's start, as wall-clock ns.
    assert st["next_backup"] is not None
    assert 5.9 * 3600 < st["next_backup"] / 1e9 - time.time() < 6 * 3600 + 5
    src = random_tree(tmp_path / "src", 2, seed=3)
    snap = last_json(mesh.run(node, "backup", str(src), "--json"))["snapshot_id"]
    st = last_json(mesh.run(node, "status", "--json"))
    assert st["last_backup"]["snapshot_id"] == snap and st["last_backup"]["time_ns"] > 0
    assert st["redundancy"]["packs"] >= 2 and st["redundancy"]["local"] == st["redundancy"]["packs"]
    text = mesh.run(node, "status")
    assert text.returncode == 0 and snap[:8] in text.stdout and "local only" in text.stdout
    # Without a daemon: the same keys, nobody knows who is online, nothing is scheduled.
    mesh.stop(0)
    try:
        st = last_json(mesh.run(node, "status", "--json"))
        assert st["daemon"] is False and st["next_backup"] is None
        assert st["last_backup"]["snapshot_id"] == snap
    finally:
        mesh.start(0)


def test_node_events_follow_a_backup(solo: LocalMesh, tmp_path: Path) -> None:
    mesh, node = solo, solo.nodes[0]
    follower = subprocess.Popen(mesh.cmd(node, "node", "events", "--json"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        wait_for(lambda: _subscribers(mesh) >= 1, 30, "the follower to subscribe")
        src = random_tree(tmp_path / "src", 1, seed=4)
        snap = last_json(mesh.run(node, "backup", str(src), "--json"))["snapshot_id"]
        seen: list[dict] = []
        assert follower.stdout is not None
        while not any(e["kind"] == "backup.finished" for e in seen):
            line = follower.stdout.readline()
            assert line, follower.stderr.read() if follower.stderr else "events ended"
            seen.append(json.loads(line))
    finally:
        follower.terminate()
        follower.communicate(timeout=30)
    kinds = [e["kind"] for e in seen]
    assert kinds.index("backup.started") < kinds.index("backup.progress") < kinds.index("backup.finished")
    done = next(e for e in seen if e["kind"] == "backup.finished")
    assert done["snapshot_id"] == snap and done["code"] == 0 and done["scheduled"] is False
    assert all(isinstance(e["time_ns"], int) for e in seen)


def _subscribers(mesh: LocalMesh) -> int:
    """How many subscribers the daemon has (it logs each; a status call is the cheap probe)."""
    log = (mesh.nodes[0].home / "daemon.log").read_text()
    return log.count("subscriber joined")


def test_node_events_without_a_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path / "m", 1)
    p = run_plain(mesh, mesh.nodes[0], "node", "events", "--json")
    assert p.returncode == 1 and "corestate node run" in p.stderr, p.stderr


def test_another_version_is_refused_clearly(solo: LocalMesh) -> None:
    with raw(solo) as s:
        s.sendall(wire.encode_frame(c.encode(c.Hello(version=1, client="old"))))
        reply = _read_one(s)
    assert isinstance(reply, c.Failure) and reply.kind == "version"
    assert "version 2" in reply.message and "version 1" in reply.message
    with raw(solo) as s:  # a request without the handshake
        s.sendall(wire.encode_frame(c.encode(c.StatusCall())))
        reply = _read_one(s)
    assert isinstance(reply, c.Failure) and reply.kind == "version"
    alive(solo)


def _read_one(s: socket.socket) -> c.Message | None:
    dec = wire.FrameDecoder(max_frame=c.CONTROL_MAX_FRAME)
    while (frame := dec.next_frame()) is None:
        data = s.recv(65536)
        if not data:
            return None
        dec.feed(data)
    return c.decode(frame)


@pytest.mark.parametrize("junk", [
    b"\xff" * 64,  # not a frame
    wire.encode_frame(b"\xa1\x61t\x63zzz"),  # a frame, no message
    b"\xff\xff\xff\xff\x0f",  # a length past every limit
    wire.encode_frame(b"\x00" * 100)[:20],  # cut short, then silence ... then close
])
def test_garbage_gets_dropped_and_hurts_nobody(solo: LocalMesh, junk: bytes) -> None:
    with raw(solo) as s:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(15)
        with pytest.raises(OSError):  # closed without an answer, or an error then closed
            while s.recv(65536):
                pass
            raise OSError("closed")
    alive(solo)


def test_an_oversize_frame_is_refused_before_it_is_read(solo: LocalMesh) -> None:
    with raw(solo) as s:
        Connection(s)  # the handshake, then a request announced at 64 MiB
        s.sendall(wire.encode_varint(64 << 20))
        s.settimeout(15)
        sent = 0
        with pytest.raises(OSError):
            while sent < 64 << 20:  # the daemon hangs up long before 64 MiB
                s.sendall(b"\0" * (1 << 20))
                sent += 1 << 20
        assert sent < 64 << 20
    alive(solo)


def test_silent_and_flooding_clients_do_not_block_the_others(solo: LocalMesh) -> None:
    # More silent connections than the daemon serves at once: the first MAX_CLIENTS take
    # every slot, the next are told the daemon is busy (and may retry); the silent ones are
    # dropped after the handshake timeout, and a well-behaved client then gets its answer.
    socks = [raw(solo) for _ in range(MAX_CLIENTS)]
    try:
        time.sleep(0.5)  # let the daemon take them all in
        with raw(solo) as s, pytest.raises(DaemonRefused) as refused:
            call(s, c.StatusCall())
        assert refused.value.kind == "busy" and refused.value.retryable
        t0 = time.monotonic()

        def answered() -> bool:
            with raw(solo) as s:
                try:
                    return isinstance(call(s, c.StatusCall()), c.StatusResult)
                except DaemonRefused:
                    time.sleep(0.5)
                    return False
        wait_for(answered, 60, "a slot to free up")
        assert time.monotonic() - t0 < HANDSHAKE_TIMEOUT + 20
    finally:
        for s in socks:
            s.close()
    alive(solo)


def test_a_subscriber_that_vanishes_is_forgotten(solo: LocalMesh) -> None:
    before = _subscribers(solo)
    s = raw(solo)
    events = subscribe(s)
    wait_for(lambda: _subscribers(solo) > before, 30, "the subscription")
    s.close()
    del events
    wait_for(lambda: "subscriber left" in (solo.nodes[0].home / "daemon.log").read_text(), 30,
             "the daemon to notice the subscriber is gone")
    alive(solo)


# -- the event bus itself: bounded, with a "missed" marker -----------------------------------


async def test_a_slow_subscriber_gets_a_missed_marker_not_unbounded_memory() -> None:
    bus = EventBus()
    slow = bus.subscribe(size=8)
    picky = bus.subscribe(("backup",), size=8)
    for i in range(100):
        bus.publish(alert("test", f"number {i}"))
    bus.publish(c.BackupStarted(time_ns=1, scheduled=False, paths=()))
    got: list[c.Message] = []
    with trio.move_on_after(0.5):
        async for ev in slow:
            got.append(ev)
    assert len(got) == 8  # the queue's size, nothing more was kept
    assert all(isinstance(e, c.Alert) for e in got)
    assert slow.missed == 93  # 92 more alerts and the backup event, not yet reported
    bus.publish(alert("test", "after"))
    with trio.move_on_after(0.5):
        async for ev in slow:
            got.append(ev)
    assert isinstance(got[8], c.Missed) and got[8].count == 93
    assert isinstance(got[9], c.Alert) and got[9].message == "after"
    # The picky one asked for backups only: it got exactly that, nothing missed.
    only: list[c.Message] = []
    with trio.move_on_after(0.5):
        async for ev in picky:
            only.append(ev)
    assert [type(e) for e in only] == [c.BackupStarted]
    assert len(bus.recent_alerts) == 32


async def test_the_default_queue_holds_256_events_and_counts_a_burst_past_it() -> None:
    # The daemon's real size: a burst of 10,000 events (a long backup's progress and a storm
    # of alerts) keeps 256 for a subscriber that is not reading, and counts the rest.
    from corestate.node.runtime.events import QUEUE
    bus = EventBus()
    sub = bus.subscribe()
    for i in range(10_000):
        bus.publish(alert("test", f"number {i}"))
    got: list[c.Message] = []
    with trio.move_on_after(0.5):
        async for ev in sub:
            got.append(ev)
    assert QUEUE == 256 and len(got) == QUEUE and sub.missed == 10_000 - QUEUE


def test_listings_through_the_daemon_are_paged_typed_and_keep_raw_names(solo: LocalMesh, tmp_path: Path) -> None:
    # More entries than one page holds, and a name that is not UTF-8: `ls` and `diff`
    # through the daemon answer exactly what the CLI in place answers.
    mesh, node = solo, solo.nodes[0]
    src = tmp_path / "many"
    (src / "d").mkdir(parents=True)
    for i in range(5000):
        (src / "d" / f"f{i:05d}").write_bytes(b"x")
    odd = os.fsencode(str(src / "d")) + b"/caf\xe9"
    with open(odd, "wb") as f:
        f.write(b"latin-1 name")
    mesh.run(node, "backup", str(src), "--json")
    (src / "d" / "f00001").write_bytes(b"changed")
    mesh.run(node, "backup", str(src), "--json")
    via_daemon = mesh.run(node, "ls", "latest", str(src), "--recursive", "--json").stdout.splitlines()
    entries = [json.loads(line) for line in via_daemon]
    assert len(entries) == 5000 + 2  # the folder d, its 5000 files and the odd one
    assert any(e["path"].endswith("caf\udce9") for e in entries)
    diff = last_json(mesh.run(node, "diff", "latest~1", "latest", "--json"))
    assert {"op": "M", "path": str(src / "d" / "f00001")} in diff
    with raw(mesh) as s:  # the raw answer really came in pages
        conn = Connection(s)
        conn.send(c.LsCall(snapshot="latest", path=os.fsencode(str(src)), recursive=True))
        replies = list(conn.messages())
    pages = [r for r in replies if isinstance(r, c.LsPage)]
    assert len(pages) >= 2 and isinstance(replies[-1], c.Done) and replies[-1].items == 5002
    assert b"caf\xe9" in {e.path.rsplit(b"/", 1)[-1] for p in pages for e in p.entries}
    mesh.stop(0)
    try:  # the same listing in place, without the daemon
        here = mesh.run(node, "ls", "latest", str(src), "--recursive", "--json").stdout.splitlines()
    finally:
        mesh.start(0)
    assert here == via_daemon


def test_a_failing_call_says_what_to_do(solo: LocalMesh) -> None:
    p = run_plain(solo, solo.nodes[0], "ls", "ffffffffff", "--json")
    assert p.returncode == 1 and "error:" in p.stderr, p.stderr
    with raw(solo) as s, pytest.raises(DaemonRefused) as refused:
        call(s, c.DiffCall(a="nope", b="latest"))
    assert refused.value.kind and str(refused.value)
    alive(solo)


def test_peers_going_up_and_down_are_events(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path / "m", 2)
    mesh.start()
    try:
        owner, holder = mesh.nodes
        s = raw(mesh)
        with s:
            events = subscribe(s, ("peer",))
            s.settimeout(60)
            src = random_tree(tmp_path / "src", 2, seed=5)
            mesh.run(owner, "backup", str(src), "--json", check=False)  # talks to the holder
            ev = next(events)
            assert isinstance(ev, c.PeerUp) and ev.peer_id == holder.peer_id
            mesh.kill(1)
            ev = next(events)
            assert isinstance(ev, c.PeerDown) and ev.peer_id == holder.peer_id
    finally:
        mesh.close()


async def test_a_silent_subscriber_stays_subscribed_and_its_hang_up_ends_it() -> None:
    # Hours of silence are what a subscriber does (here: many read timeouts of 50 ms).
    from corestate.node.runtime.daemon import Daemon
    from corestate.protocol.streams import Channel, memory_stream_pair
    daemon = Daemon.__new__(Daemon)
    daemon.events = EventBus()
    ours, theirs = memory_stream_pair()
    server = Channel(ours, timeout=0.05, max_frame=c.CONTROL_MAX_FRAME, decode=c.decode)
    client = Channel(theirs, timeout=5, max_frame=c.CONTROL_MAX_FRAME, decode=c.decode)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon._subscribe, server, c.Subscribe(topics=()))
        assert isinstance(await client.receive(), c.Ok)
        await trio.sleep(0.5)
        daemon.events.publish(alert("test", "still here"))
        ev = await client.receive()
        assert isinstance(ev, c.Alert) and ev.message == "still here"
        await client.aclose()
        with trio.fail_after(5):  # the hang-up ends the subscription
            while daemon.events.subscribers:
                await trio.sleep(0.01)
