"""``backup`` and ``restore`` as typed calls through a real daemon: the paged answer (issues,
then the summary, last), the progress events the calling client and a subscriber get, a
bad request refused with a hint, the daemon's own scheduled backup through the app layer,
and the CLI's JSON status lines drawn from the events."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.runtime.client import Connection, connect, subscribe
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.treecompare import differences
from corestate.protocol import control as c
from meshutil import edit_config, make_mesh, random_tree, running, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """Two nodes that trust each other; only the first runs (its peer is offline)."""
    mesh = make_mesh(tmp_path_factory.mktemp("bapi"), 2)
    with running(mesh, 0):
        yield mesh


def raw(mesh: LocalMesh) -> socket.socket:
    return wait_for(lambda: connect(mesh.nodes[0].home, timeout=10), 30, "the daemon to accept")


def ask(mesh: LocalMesh, call: c.Message) -> list[c.Message]:
    """Everything the daemon answers to ``call``: events, pages, then Done or a Failure."""
    with raw(mesh) as s:
        conn = Connection(s)
        s.settimeout(300)
        conn.send(call)
        return list(conn.messages())


class Follower:
    """A subscriber reading the daemon's events in a thread."""

    def __init__(self, mesh: LocalMesh, topics: tuple[str, ...]) -> None:
        self.sock = raw(mesh)
        self.events: list[c.Message] = []
        stream = subscribe(self.sock, topics)
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Iterator[c.Message]) -> None:
        try:
            for ev in stream:
                self.events.append(ev)
        except OSError:
            pass

    def wait(self, kind: type[c.Message], timeout: float = 120) -> list[c.Message]:
        wait_for(lambda: any(isinstance(e, kind) for e in self.events), timeout, kind.TYPE)
        return list(self.events)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)


def _backup_call(*paths: Path) -> c.BackupCall:
    return c.BackupCall(paths=tuple(os.fsencode(p) for p in paths), exclude=(), k=0, n=0,
                        estimate=False, skipped=False)


def test_a_typed_backup_and_restore_with_their_events(pair: LocalMesh, tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 2, seed=21)
    follower = Follower(pair, ("backup", "restore"))
    try:
        replies = ask(pair, _backup_call(src))
        seen = follower.wait(c.BackupFinished)
    finally:
        follower.close()
    assert isinstance(replies[-1], c.Done), replies[-1]
    items = [i for p in replies if isinstance(p, c.BackupPage) for i in p.items]
    assert replies[-1].items == len(items)
    summary = items[-1]
    assert isinstance(summary, c.BackupSummary)
    assert summary.files == 4 and summary.errors == 0 and summary.snapshot_id
    # The peer is offline: stored here only, said in the summary, exit code 3.
    assert summary.mesh is not None and summary.code == 3 and not summary.mesh.safe
    assert summary.mesh.offline == (pair.nodes[1].peer_id,) and summary.mesh.seconds is None
    assert any("stored on this machine only" in p for p in summary.mesh.problems)
    # The calling client got the events in order, and so did the subscriber.
    for got in ([r for r in replies if type(r) in c.EVENTS], seen):
        kinds = [type(e) for e in got]
        assert kinds[0] is c.BackupStarted and kinds[-1] is c.BackupFinished, kinds
        progress = [e for e in got if isinstance(e, c.BackupProgress)]
        assert len(progress) >= 2 and {e.phase for e in progress} == {"files", "shares"}
        assert progress[-1].files == 4 and progress[-1].bytes_done > 2 << 20
        done = got[-1]
        assert isinstance(done, c.BackupFinished)
        assert done.snapshot_id == summary.snapshot_id and done.code == 3 and not done.scheduled

    # Restore below a target whose name is not UTF-8: the path stays bytes end to end.
    target = os.fsencode(str(tmp_path)) + b"/r\xe9"
    replies = ask(pair, c.RestoreCall(snapshot=summary.snapshot_id[:10], target=target, paths=(),
                                      dry_run=False))
    assert isinstance(replies[-1], c.Done)
    items = [i for p in replies if isinstance(p, c.RestorePage) for i in p.items]
    rs = items[-1]
    assert isinstance(rs, c.RestoreSummary)
    assert rs.target == target and rs.code == 0 and rs.files == 4 and rs.errors == 0 and not rs.dry_run
    assert differences(src, Path(os.fsdecode(target)) / str(src).lstrip("/")) == []
    kinds = [type(r) for r in replies if type(r) in c.EVENTS]
    assert kinds[0] is c.RestoreStarted and kinds[-1] is c.RestoreFinished
    phases = {r.phase for r in replies if isinstance(r, c.RestoreProgress)}
    assert phases == {"write"}
    # A dry run writes nothing, and only its progress is an event.
    replies = ask(pair, c.RestoreCall(snapshot="latest", target=target + b"-dry", paths=(b"/nope",),
                                      dry_run=True))
    assert isinstance(replies[-1], c.Failure) and "nope" in replies[-1].message  # not in the snapshot
    replies = ask(pair, c.RestoreCall(snapshot="latest", target=target + b"-dry",
                                      paths=(os.fsencode(str(src / "notes.txt")),), dry_run=True))
    rs = [i for p in replies if isinstance(p, c.RestorePage) for i in p.items][-1]
    assert isinstance(rs, c.RestoreSummary) and rs.dry_run and rs.files == 1
    assert not os.path.lexists(target + b"-dry")
    assert {type(r) for r in replies if type(r) in c.EVENTS} == {c.RestoreProgress}


def test_bad_requests_are_refused_with_a_hint(pair: LocalMesh, tmp_path: Path) -> None:
    for call, words, hint in [
        (_backup_call(tmp_path / "missing"), "no such file", "check the path"),
        (c.BackupCall(paths=(b"relative/path",), exclude=(), k=0, n=0, estimate=False, skipped=False),
         "absolute", "client"),
        (c.RestoreCall(snapshot="latest", target=b"out", paths=(), dry_run=False), "absolute", "client"),
        (c.RestoreCall(snapshot="ffffffffff", target=os.fsencode(str(tmp_path / "r")), paths=(),
                       dry_run=False), "ffffffffff", "snapshots"),
    ]:
        replies = ask(pair, call)
        fail = replies[-1]
        assert isinstance(fail, c.Failure), replies
        assert words in fail.message and hint in fail.hint, fail
    # A backup that fails says so to subscribers too, and the daemon serves on.
    follower = Follower(pair, ("backup",))
    try:
        ask(pair, _backup_call(tmp_path / "missing"))
        failed = [e for e in follower.wait(c.BackupFailed) if isinstance(e, c.BackupFailed)]
    finally:
        follower.close()
    assert "no such file" in failed[0].message and failed[0].hint == "check the path"
    with raw(pair) as s:
        conn = Connection(s)
        conn.send(c.StatusCall())
        assert isinstance(conn.receive(), c.StatusResult)


def test_cli_json_status_lines_come_from_the_events(pair: LocalMesh, tmp_path: Path) -> None:
    # Long enough to run past a second: status lines, then the summary on the last line.
    src = random_tree(tmp_path / "big", 160, seed=22)
    p = pair.run(pair.nodes[0], "backup", str(src), "--json", check=False)
    assert p.returncode == 3, p.stderr  # the peer is offline
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["files"] == 162
    # Status lines come once a second: a quiet machine may finish before the first. Those
    # there are have the shape they always had (the drawing itself: the test below).
    status = [x for x in lines[:-1] if x["type"] == "status"]
    assert len(status) == len(lines) - 1, lines[:-1]
    for line in status:
        assert set(line) == {"type", "files", "bytes_read", "bytes_done", "bytes_added", "total_bytes",
                             "current"}, line
        assert line["total_bytes"] is None  # no estimate is made for --json


def test_json_status_lines_are_drawn_from_progress_events_every_second() -> None:
    from corestate.node.cli.backup import Phases, _backup_status
    from corestate.node.cli.output import Out
    written: list[str] = []
    out = Out(True, write=lambda fd, text: written.append(text), tty=False)

    def progress(files: int) -> c.BackupProgress:
        return c.BackupProgress(time_ns=1, files=files, bytes_done=files << 20, bytes_total=-1,
                                bytes_added=0, eta_s=-1, current=f"/f{files}", phase="files",
                                bytes_read=files << 20, packs_done=0, packs_total=0)
    with Phases(out, _backup_status, lambda ev: ("backup", 0, None, "")) as phases:
        phases.view.emit(progress(1))
        time.sleep(1.3)
        phases.view.emit(progress(7))
        time.sleep(1.0)
        phases.view.emit(c.BackupFinished(time_ns=2, scheduled=False, snapshot_id="ab", code=0, files=7,
                                          bytes_read=0, bytes_added=0, errors=0, seconds="2.3"))
    time.sleep(1.2)  # nothing more after the end
    lines = [json.loads(t) for t in written]
    assert 2 <= len(lines) <= 3 and all(x["type"] == "status" for x in lines), lines
    assert lines[0]["files"] == 1 and lines[-1]["files"] == 7 and lines[-1]["current"] == "/f7"


def test_the_scheduled_backup_runs_the_operation_and_tells_subscribers(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1, seed=23)
    mesh = make_mesh(tmp_path / "m", 1)
    home = mesh.nodes[0].home
    edit_config(home, "paths = []", f'paths = ["{src}"]')
    edit_config(home, "backup_every = 0", 'backup_every = "1s"')
    mesh.start(0)
    try:
        follower = Follower(mesh, ("backup",))
        try:
            seen = follower.wait(c.BackupFinished, timeout=60)
        finally:
            follower.close()
    finally:
        mesh.close()
    done = next(e for e in seen if isinstance(e, c.BackupFinished))
    assert done.scheduled and done.code == 0 and done.files == 3
    before = seen[:seen.index(done)]
    started = [e for e in before if isinstance(e, c.BackupStarted)]
    assert started and started[-1].scheduled and started[-1].paths == (str(src),)
    assert any(isinstance(e, c.BackupProgress) and e.phase == "files" for e in before)
