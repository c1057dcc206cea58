"""The node daemon as a user runs it: ``corestate node run`` in its own process.

- the control socket is mode 0600 and appears only once the daemon serves on it;
- a socket left by a SIGKILLed daemon is stale: the CLI runs alone meanwhile, and the next
  daemon replaces it;
- ``node info`` answers from a running daemon and fails plainly without one;
- CLI commands go to the daemon (no passphrase needed), and a second daemon on the same
  home is refused;
- SIGTERM stops the daemon cleanly (exit 0, socket gone, home free);
- a node without peers backs up exactly as before the mesh existed; a node whose trusted
  peers are all offline says its data is on this machine only (exit 3).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corestate.node.runtime.client import connect
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from meshutil import clean_env, last_json, make_mesh, random_tree, restored, run_plain, wait_for


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """One node, no peers."""
    lm = make_mesh(tmp_path_factory.mktemp("solo"), 1)
    try:
        yield lm
    finally:
        lm.close()


@pytest.fixture
def node_down(solo: LocalMesh) -> Iterator[LocalMesh]:
    """The solo node with its daemon stopped, before and after the test."""
    solo.stop(0)
    yield solo
    solo.stop(0)


def sock_of(mesh: LocalMesh) -> Path:
    return mesh.nodes[0].home / "control.sock"


def test_control_socket_appears_only_when_ready_and_is_private(node_down: LocalMesh) -> None:
    mesh = node_down
    node, sock = mesh.nodes[0], sock_of(mesh)
    assert not sock.exists()
    with open(node.home / "daemon-manual.log", "ab") as log:
        proc = subprocess.Popen(mesh.cmd(node, "node", "run", "--passphrase-file", str(mesh.pw)),
                                stdout=subprocess.PIPE, stderr=log, env=mesh.env)
    try:
        assert proc.stdout is not None
        # The moment the socket is there, a client can use it: it is bound, listening and
        # private before it gets its name.
        wait_for(lambda: sock.exists() or proc.poll() is not None, 60, "the control socket")
        s = connect(node.home)
        assert s is not None, "control.sock exists but nobody answers on it"
        s.close()
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(node.home).st_mode) & 0o077 == 0  # a folder only we enter
        line = proc.stdout.readline().decode()
        assert line.startswith(f"ready {node.peer_id} "), line
        assert not list(node.home.glob(".control-*")), "the temporary socket name stayed"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    assert not sock.exists()


def test_sigterm_stops_the_daemon_cleanly(node_down: LocalMesh) -> None:
    mesh = node_down
    mesh.start(0)
    s = connect(mesh.nodes[0].home)
    assert s is not None
    s.close()
    assert mesh.stop(0, signal.SIGTERM) == 0
    assert not sock_of(mesh).exists()
    # The home lock went with it: the CLI runs on its own again.
    p = mesh.run(mesh.nodes[0], "snapshots", "--json")
    assert isinstance(last_json(p), list)


def test_stale_socket_of_a_killed_daemon_is_replaced(node_down: LocalMesh) -> None:
    mesh = node_down
    node, sock = mesh.nodes[0], sock_of(mesh)
    mesh.start(0)
    first = os.lstat(sock).st_ino
    mesh.kill(0)
    assert sock.exists(), "SIGKILL leaves the socket behind"
    assert connect(node.home) is None, "nobody may answer on a dead daemon's socket"
    # Meanwhile the CLI runs the command itself (the dead daemon holds no lock)...
    p = mesh.run(node, "snapshots", "--json")
    assert isinstance(last_json(p), list)
    # ...and says plainly that no daemon runs.
    p = run_plain(mesh, node, "node", "info", "--json")
    assert p.returncode == 1 and "no daemon runs" in p.stderr, p.stderr
    mesh.start(0)
    assert os.lstat(sock).st_ino != first
    p = run_plain(mesh, node, "snapshots", "--json")  # no passphrase: the daemon answers
    assert p.returncode == 0, p.stderr
    assert isinstance(last_json(p), list)


def test_node_info_with_and_without_a_daemon(node_down: LocalMesh) -> None:
    mesh = node_down
    node = mesh.nodes[0]
    p = run_plain(mesh, node, "node", "info", "--json")
    assert p.returncode == 1
    assert f"no daemon runs for the home {node.home}" in p.stderr, p.stderr
    assert "corestate node run" in p.stderr  # the hint says what to do
    assert p.stdout == ""
    mesh.start(0)
    p = run_plain(mesh, node, "node", "info", "--json")
    assert p.returncode == 0, p.stderr
    info = last_json(p)
    assert info["peer_id"] == node.peer_id
    assert info["addrs"] and all(a.endswith(f"/p2p/{node.peer_id}") for a in info["addrs"])
    assert node.addr in info["addrs"]  # the configured loopback port
    assert info["held_for_peers"] == {"shares": 0, "bytes": 0, "senders": 0}
    p = run_plain(mesh, node, "node", "info")
    assert p.returncode == 0 and node.peer_id in p.stdout and node.addr in p.stdout


def test_cli_commands_go_to_the_running_daemon(node_down: LocalMesh, tmp_path: Path) -> None:
    mesh = node_down
    node = mesh.nodes[0]
    # Alone, the CLI needs the key, hence a passphrase, and has no way to ask for one.
    p = run_plain(mesh, node, "snapshots", "--json")
    assert p.returncode == 1 and "passphrase is needed" in p.stderr, p.stderr
    mesh.start(0)
    src = random_tree(tmp_path / "src", 1, seed=11)
    p = run_plain(mesh, node, "backup", str(src), "--json")
    assert p.returncode == 0, p.stderr
    snap = last_json(p)["snapshot_id"]
    p = run_plain(mesh, node, "snapshots", "--json")
    assert p.returncode == 0, p.stderr
    assert snap in [s["id"] for s in last_json(p)]
    # Relative paths are the client's, not the daemon's.
    p = subprocess.run([*mesh.cmd(node, "restore"), snap, "--target", "out"], cwd=tmp_path,
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert differences(src, restored(tmp_path / "out", src)) == []
    # A second daemon on the same home is refused, and the first serves on.
    p = run_plain(mesh, node, "node", "run", timeout=60)
    assert p.returncode == 1
    assert "another corestate process" in p.stderr and f"is using {node.home}" in p.stderr, p.stderr
    assert mesh.nodes[0].running
    assert run_plain(mesh, node, "snapshots").returncode == 0


def test_a_command_sent_while_another_runs_waits_its_turn(node_down: LocalMesh, tmp_path: Path) -> None:
    mesh = node_down
    node = mesh.nodes[0]
    mesh.start(0)
    src = random_tree(tmp_path / "src", 200, seed=12)  # long enough to still run below
    log = node.home / "daemon.log"
    seen = len(log.read_bytes()) if log.exists() else 0  # earlier tests' lines don't count
    first = subprocess.Popen(mesh.cmd(node, "backup", str(src), "--json"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        def started() -> bool:
            new = log.read_bytes()[seen:].decode(errors="replace")
            return "running: " in new and "backup" in new.rsplit("running: ", 1)[-1]
        wait_for(started, 30, "the daemon to start the backup")
        # The second client speaks from this process (no interpreter to start, so it
        # surely arrives while the backup runs), as the CLI does.
        from corestate.node.runtime.client import Connection
        from corestate.protocol import control as c
        s = connect(node.home, timeout=30)
        assert s is not None
        with s:
            conn = Connection(s)
            s.settimeout(300)
            conn.send(c.SnapshotsCall())
            replies = list(conn.messages())
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    # The second client was told it waits, and got its answer once the backup was done.
    assert isinstance(replies[-1], c.Done), replies
    assert any(isinstance(r, c.Notice) and r.kind == "waiting"
               and "waiting for the command already running" in r.message for r in replies), replies
    listed = [snap.snapshot_id for r in replies if isinstance(r, c.SnapshotsPage) for snap in r.snapshots]
    assert last_json(out)["snapshot_id"] in listed


def test_standalone_node_backs_up_as_before(node_down: LocalMesh, tmp_path: Path) -> None:
    mesh = node_down
    node = mesh.nodes[0]
    src = random_tree(tmp_path / "src", 2, seed=12)

    def backup(*extra: str) -> subprocess.CompletedProcess[str]:
        return mesh.run(node, "backup", str(src), *extra, check=False)

    # Exit 0 and no mesh anywhere in the output: in words without a daemon...
    p = backup()
    assert p.returncode == 0, p.stderr
    assert "snapshot" in p.stdout and "saved" in p.stdout
    assert "mesh" not in p.stdout and "DEGRADED" not in p.stdout, p.stdout
    assert p.stderr == "", p.stderr
    # ...and in JSON, without a daemon and through one.
    for daemon in (False, True):
        if daemon:
            mesh.start(0)
        (src / "notes.txt").write_text(f"daemon: {daemon}\n")
        p = backup("--json")
        assert p.returncode == 0, p.stderr
        out = last_json(p)
        assert out["mesh"] is None and out["complete"] is True, out
        assert out["bytes_read"] > 0  # a real backup of the change, not a no-op
    p = backup("--k", "2", "--n", "4")
    assert p.returncode == 0
    assert "--k/--n ignored: this node has no trusted peers" in p.stderr
    p = mesh.run(node, "restore", "latest", "--target", str(tmp_path / "r"))
    assert differences(src, restored(tmp_path / "r", src)) == []


def test_trusted_peers_all_offline_means_this_machine_only(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path / "pair", 2)
    node, peer = mesh.nodes
    src = random_tree(tmp_path / "src", 2, seed=13)
    try:
        mesh.start(0)  # its only peer never starts
        p = mesh.run(node, "backup", str(src), "--json", check=False)
        assert p.returncode == 3, p.stderr
        out = last_json(p)
        assert out["complete"] is False
        m = out["mesh"]
        assert m["safe"] is False and m["peers_online"] == [] and m["peers_offline"] == [peer.peer_id]
        assert any("stored on this machine only" in x for x in m["problems"]), m
        assert m["packs_uploaded"] == 0 and m["local_copies_dropped"] == 0
        # In words too, and the same from a CLI with no daemon (a transient host tries).
        mesh.stop(0)
        (src / "new.txt").write_text("one more\n")
        p = mesh.run(node, "backup", str(src), check=False)
        assert p.returncode == 3, p.stderr
        assert "no trusted peer is reachable: the snapshot is stored on this machine only" in p.stderr
        assert "DEGRADED" in p.stdout
        # Nothing was lost: the data is here.
        p = mesh.run(node, "restore", "latest", "--target", str(tmp_path / "r"))
        assert differences(src, restored(tmp_path / "r", src)) == []
    finally:
        mesh.close()


class _Hang(Exception):
    pass


def test_localmesh_start_returns_for_a_daemon_that_already_runs(node_down: LocalMesh) -> None:
    mesh = node_down
    mesh.start(0)

    def alarm(*_: Any) -> None:
        raise _Hang("LocalMesh.start(0) still waiting after 3 s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 3)
    try:
        mesh.start(0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert mesh.nodes[0].running


def test_control_frames_are_held_to_the_spec_limit(node_down: LocalMesh) -> None:
    """SPEC §8.6: 1,064,960 bytes. The largest call fits and is answered; a longer frame is
    refused as soon as its length is read (the daemon closes without waiting for a body)."""
    import socket as sk

    from corestate.protocol import control as c
    from corestate.protocol import wire
    from corestate.protocol.errors import ProtocolError
    assert c.CONTROL_MAX_FRAME == 1_064_960
    mesh = node_down
    mesh.start(0)
    largest = wire.encode_frame(c.encode(c.BackupCall(
        paths=tuple(b"/nowhere/" + b"d" * 4087 for _ in range(200)), exclude=tuple("e" * 1024 for _ in range(200)),
        k=0, n=0, estimate=False, skipped=False)))
    assert len(largest) - len(wire.encode_varint(len(largest))) <= c.CONTROL_MAX_FRAME
    s = connect(mesh.nodes[0].home, timeout=30)
    assert s is not None
    with s:
        s.sendall(wire.encode_frame(c.encode(c.Hello(version=c.CONTROL_VERSION, client="test"))) + largest)
        got = b""
        while b"retryable" not in got and (data := s.recv(1 << 16)):
            got += data
        # Read, decoded and answered: a Failure naming the first path (none exists).
        assert b"fail" in got and b"/nowhere/ddd" in got, got[-300:]
    s = connect(mesh.nodes[0].home, timeout=15)
    assert s is not None
    with s:
        client_hello = wire.encode_frame(c.encode(c.Hello(version=c.CONTROL_VERSION, client="test")))
        s.sendall(client_hello + wire.encode_varint(c.CONTROL_MAX_FRAME + 1))  # a length only, no body
        welcome = b""
        while b"welcome" not in welcome:
            welcome += s.recv(1 << 16)
        try:
            assert s.recv(1 << 16) == b""  # closed at once, not waiting for the body
        except TimeoutError:
            raise AssertionError("the daemon waited for an over-limit frame's body") from None
    # The client holds the daemon to the same limit.
    from corestate.node.runtime import client
    a, b = sk.socketpair()
    with a, b:
        a.sendall(wire.encode_varint(c.CONTROL_MAX_FRAME + 1))
        with pytest.raises(ProtocolError):
            client.Connection(b)  # the daemon's welcome would be over the limit
    assert last_json(mesh.run(mesh.nodes[0], "node", "info", "--json"))["peer_id"]
