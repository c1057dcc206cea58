"""check, repair, forget and prune as typed calls (node/app/maintain.py).

Through a real daemon: paged records with the summary last, progress events to the calling
client and to subscribers, a Failure with a hint for a bad request, the scheduled retention
job as a typed forget (``retention.finished``). In process: a damage touching more files
than a record holds is split into records that fit a frame, and the CLI joins them again.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.app.maintain import _damage
from corestate.node.cli.inspect import _say_check
from corestate.node.cli.output import Out
from corestate.node.runtime.client import Connection, DaemonRefused, call, connect, subscribe
from corestate.node.runtime.localmesh import LocalMesh
from corestate.protocol import control as c
from meshutil import edit_config, last_json, make_mesh, random_tree, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    base = tmp_path_factory.mktemp("maint")
    mesh = make_mesh(base / "m", 1)
    mesh.start(0)
    try:
        src = random_tree(base / "src", 3, seed=21)
        mesh.run(mesh.nodes[0], "backup", str(src), "--json")
        (src / "extra").write_bytes(b"second snapshot")
        mesh.run(mesh.nodes[0], "backup", str(src), "--json")
        yield mesh
    finally:
        mesh.close()


def raw(mesh: LocalMesh) -> socket.socket:
    return wait_for(lambda: connect(mesh.nodes[0].home, timeout=10), 30, "the daemon to accept")


def answer(mesh: LocalMesh, request: c.Message) -> list[c.Message]:
    """Every message the daemon sends for ``request``, up to and including ``Done``."""
    with raw(mesh) as s:
        conn = Connection(s)
        s.settimeout(120)
        conn.send(request)
        got: list[c.Message] = []
        for msg in conn.messages():
            got.append(msg)
            if isinstance(msg, (c.Done, c.Failure)):
                break
    return got


def records(msgs: list[c.Message]) -> list[object]:
    return [item for m in msgs if isinstance(m, (c.CheckPage, c.RepairPage, c.PrunePage)) for item in m.items]


def test_check_answers_in_pages_with_progress_for_client_and_subscribers(solo: LocalMesh) -> None:
    with raw(solo) as sub_sock:
        events = subscribe(sub_sock, ("check",))
        msgs = answer(solo, c.CheckCall(read_data=True, rebuild_index=False))
        seen: list[c.Message] = []
        sub_sock.settimeout(30)
        for ev in events:
            seen.append(ev)
            if isinstance(ev, c.CheckFinished):
                break
    assert isinstance(msgs[-1], c.Done)
    items = records(msgs)
    assert msgs[-1].items == len(items)
    summary = items[-1]
    assert isinstance(summary, c.CheckSummary)
    assert summary.code == 0 and summary.packs >= 3 and summary.bytes_read > 0 and summary.snapshots == 2
    assert summary.surveyed is False and summary.index_packs is None
    # The calling client got the progress (first and last at least) and the end, before its answer.
    progress = [m for m in msgs if isinstance(m, c.CheckProgress)]
    assert len(progress) >= 2 and progress[-1].packs_done == progress[-1].packs == summary.packs
    assert any(isinstance(m, c.CheckFinished) and m.code == 0 for m in msgs)
    assert msgs.index(progress[-1]) < next(i for i, m in enumerate(msgs) if m.TYPE.endswith("-page"))
    # So did the subscriber.
    kinds = [e.TYPE for e in seen]
    assert kinds[0] == "check.progress" and kinds[-1] == "check.finished" and kinds.count("check.progress") >= 2


def test_check_rebuild_index_through_the_daemon_says_so(solo: LocalMesh) -> None:
    p = solo.run(solo.nodes[0], "check", "--rebuild-index", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("index rebuilt from ") and "no damage found" in p.stdout
    items = records(answer(solo, c.CheckCall(read_data=False, rebuild_index=True)))
    summary = items[-1]
    assert isinstance(summary, c.CheckSummary) and summary.index_packs == summary.packs


def test_a_bad_forget_gets_a_failure_with_a_hint(solo: LocalMesh) -> None:
    nothing = c.ForgetCall(snapshots=(), keep_last=0, keep_hourly=0, keep_daily=0, keep_weekly=0,
                           keep_monthly=0, keep_yearly=0, keep_within="", prune=False, dry_run=True)
    with raw(solo) as s, pytest.raises(DaemonRefused) as refused:
        call(s, nothing)
    assert "nothing says what to forget" in str(refused.value) and "--keep-daily" in refused.value.hint
    with raw(solo) as s, pytest.raises(DaemonRefused) as refused:
        call(s, c.ForgetCall(snapshots=("latest",), keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0,
                             keep_monthly=0, keep_yearly=0, keep_within="", prune=False, dry_run=True))
    assert "not both" in str(refused.value)
    with raw(solo) as s, pytest.raises(DaemonRefused) as refused:
        call(s, c.ForgetCall(snapshots=(), keep_last=0, keep_hourly=0, keep_daily=0, keep_weekly=0,
                             keep_monthly=0, keep_yearly=0, keep_within="soon", prune=False, dry_run=True))
    assert "not a duration" in str(refused.value) and refused.value.hint
    # Nothing was forgotten, and the daemon still answers.
    assert len(json.loads(solo.run(solo.nodes[0], "snapshots", "--json").stdout)) == 2


def test_forget_dry_run_prune_and_repair_as_typed_calls(solo: LocalMesh) -> None:
    msgs = answer(solo, c.ForgetCall(snapshots=(), keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0,
                                     keep_monthly=0, keep_yearly=0, keep_within="", prune=True, dry_run=True))
    items = records(msgs)
    verdicts = [v for v in items if isinstance(v, c.SnapshotVerdict)]
    summary = items[-1]
    assert isinstance(summary, c.PruneSummary) and summary.dry_run and summary.by_policy
    assert [v.keep for v in verdicts] == [False, True] and verdicts[1].reasons == ("last 1",)
    assert summary.forgotten == 1 and summary.code == 0
    assert not any(isinstance(m, c.RetentionFinished) for m in msgs)  # a person asked: not the schedule
    pruned = records(answer(solo, c.PruneCall(dry_run=True)))
    assert isinstance(pruned[-1], c.PruneSummary) and pruned[-1].forgotten == 0
    # No peer: nothing to repair, said in the summary; a repair still starts and finishes.
    msgs = answer(solo, c.RepairCall(dry_run=False))
    summary = records(msgs)[-1]
    assert isinstance(summary, c.RepairSummary) and summary.on_mesh is False and summary.code == 0
    kinds = [m.TYPE for m in msgs]
    assert kinds.index("repair.started") < kinds.index("repair.finished") < kinds.index("repair-page")
    assert len(json.loads(solo.run(solo.nodes[0], "snapshots", "--json").stdout)) == 2


def test_the_scheduled_retention_is_a_typed_forget_that_says_so(tmp_path: Path) -> None:
    src = random_tree(tmp_path / "src", 1, seed=5)
    mesh = make_mesh(tmp_path / "m", 1)
    home = mesh.nodes[0].home
    edit_config(home, "paths = []", f'paths = ["{src}"]')
    edit_config(home, "backup_every = 0", 'backup_every = "1s"')
    (home / "config.toml").write_text((home / "config.toml").read_text() + "keep_last = 1\n")
    mesh.start(0)
    try:
        with raw(mesh) as s:
            events = subscribe(s, ("retention", "backup"))
            s.settimeout(60)
            deadline = time.monotonic() + 60
            done: list[c.RetentionFinished] = []
            for ev in events:
                if isinstance(ev, c.BackupFinished):
                    (src / "changing").write_text(str(time.time()))  # the next backup differs
                if isinstance(ev, c.RetentionFinished):
                    done.append(ev)
                if len(done) >= 2 or time.monotonic() > deadline:
                    break
        assert len(done) >= 2 and all(ev.scheduled and ev.code == 0 for ev in done), done
        snaps = last_json(mesh.run(mesh.nodes[0], "snapshots", "--json"))
        assert len(snaps) == 1
        assert "retention did not finish" not in (home / "daemon.log").read_text()
    finally:
        mesh.close()


def test_a_damage_touching_many_files_is_split_into_records_and_joined_again() -> None:
    files = [f"{'ab' * 32}:/data/{'x' * 200}/{i:06d}" for i in range(5000)] + ["snap:/caf\udce9"]
    recs = list(_damage("blob", b"\x01" * 32, "bit rot", files))
    assert len(recs) >= 3 and not recs[0].continued and all(r.continued for r in recs[1:])
    for r in recs:  # every record fits a control frame, in a page of its own
        assert len(c.encode(c.CheckPage(items=(r,)))) < c.CONTROL_MAX_FRAME
    summary = c.CheckSummary(code=1, packs=1, blobs=1, snapshots=1, trees=1, bytes_read=0, remote=0,
                             index_packs=None, surveyed=False, shares={})
    lines: list[str] = []
    out = Out(True, write=lambda fd, text: lines.append(text) if fd == 1 else None, tty=False)

    class Args:
        read_data = False
    code = _say_check(Args(), out, [*recs, summary])
    report = json.loads(lines[-1])
    assert code == 1 and report["ok"] is False
    assert len(report["damage"]) == 1 and report["damage"][0]["files"] == files
