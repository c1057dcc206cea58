"""The TUI driven by Textual's Pilot against a real daemon (a separate process on a real
home): the dashboard, a restore end to end (the file comes back identical, an overwrite is
confirmed first), forget with a dry-run preview and confirmation, an invite with its token
and QR code, and the live disconnect → reconnect."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.runtime.client import call, connect
from corestate.node.runtime.localmesh import LocalMesh, free_port
from corestate.protocol import control as c
from corestate.tui.app import CoreStateApp
from corestate.tui.screens import AskText, Confirm, Invite, RestoreDialog, TextView
from meshutil import last_json, make_mesh, popen, random_tree, restored
from textual.widgets import DataTable, Input, Label, OptionList, RichLog, Static
from tuiutil import run, text_of, until

pytestmark = pytest.mark.slow

WAIT = 60.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, Path, list[str]]]:
    """One daemon with a group and two snapshots of a small tree; the first holds the old
    version of ``docs/report.txt``."""
    base = tmp_path_factory.mktemp("tui")
    mesh = make_mesh(base, 1)
    node = mesh.nodes[0]
    src = base / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("the first version\n" * 50)
    (src / "docs" / "plan.md").write_text("plans\n")
    (src / "photo.raw").write_bytes(bytes(range(256)) * 2000)
    mesh.start(0)
    try:
        mesh.run(node, "group", "create", "home-lab")
        first = last_json(mesh.run(node, "backup", str(src), "--json"))["snapshot_id"]
        (src / "docs" / "report.txt").write_text("the second version\n")
        second = last_json(mesh.run(node, "backup", str(src), "--json"))["snapshot_id"]
        yield mesh, src, [first, second]
    finally:
        mesh.close()


def app_for(mesh: LocalMesh, target: Path | None = None) -> CoreStateApp:
    home = mesh.nodes[0].home
    return CoreStateApp(home / "control.sock", home, restore_target=str(target) if target else None)


def test_dashboard_shows_the_node_its_backups_and_safety(solo: tuple[LocalMesh, Path, list[str]]) -> None:
    mesh, _, snaps = solo
    node = mesh.nodes[0]

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.status is not None and len(app.snaps) == 2, WAIT, "status")
            await pilot.pause(0.5)
            assert "connected" in text_of(app, "#conn")
            assert node.peer_id[-8:] in text_of(app, "#node")
            assert app.status is not None and app.status.group is not None
            assert app.status.group[:16] in text_of(app, "#node")
            backups = text_of(app, "#backups")
            assert snaps[1][:8] in backups and "snaps    2" in backups
            safety = text_of(app, "#safety")
            packs = app.status.redundancy.packs
            assert packs > 0 and f"packs    {packs}" in safety and f"local    {packs}" in safety
            # The snapshots screen lists both, newest selected.
            await pilot.press("2")
            table = app.query_one("#snaps", DataTable)
            assert table.row_count == 2
            assert app.selected_snapshot() is not None
            assert app.selected_snapshot().short_id == snaps[1][:8]  # type: ignore[union-attr]
            # ? shows the keys, quit among them; Esc closes.
            await pilot.press("question_mark")
            assert "quit" in str(app.screen.query_one(".detail Static", Static).content)
            await pilot.press("escape")
            await pilot.press("q")
        assert app.return_code in (0, None)

    run(scenario)


def test_restore_a_file_from_an_earlier_snapshot(solo: tuple[LocalMesh, Path, list[str]],
                                                 tmp_path: Path) -> None:
    """The newcomer's path: 2 (snapshots), up to the earlier one, enter (browse), / and a few
    letters, enter, enter (restore dialog), enter (restore). Then again: overwrite asks first."""
    mesh, src, snaps = solo
    target = tmp_path / "out"
    want = "the first version\n" * 50
    assert (src / "docs" / "report.txt").read_text() != want

    async def scenario() -> None:
        app = app_for(mesh, target)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: len(app.snaps) == 2, WAIT, "the snapshots")
            await pilot.press("2", "up", "enter")
            await until(pilot, lambda: app.entries and app.browse_snapshot == snaps[0][:8], WAIT,
                        "the earlier snapshot's tree")
            await pilot.press("slash", *"reprt", "enter")
            matches = app.query_one("#matches", OptionList)
            assert matches.highlighted == 0
            best = matches.get_option_at_index(0).id
            assert best is not None and best.endswith("docs/report.txt"), best
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, RestoreDialog), WAIT, "the restore dialog")
            dialog = app.screen
            assert isinstance(dialog, RestoreDialog)
            assert dialog.query_one("#target", Input).value == str(target)
            # A dry run writes nothing.
            await pilot.click("#dry")
            await until(pilot, lambda: "would restore 1 file," in text_of(dialog, "#outcome"), WAIT,
                        "the dry run")
            assert not target.exists()
            dialog.query_one("#target", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: "restored 1 file," in text_of(dialog, "#outcome"), WAIT,
                        "the restore")
            back = restored(target, src) / "docs" / "report.txt"
            assert back.read_text() == want
            # Again: the file is there now, so the TUI asks before overwriting. No keeps it.
            back.write_text("edited since\n")
            dialog.query_one("#target", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the overwrite question")
            await pilot.press("n")
            await pilot.pause(0.5)
            assert back.read_text() == "edited since\n"
            dialog.query_one("#target", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the overwrite question")
            await pilot.press("y")
            await until(pilot, lambda: back.read_text() == want, WAIT, "the overwrite")
            await pilot.press("escape", "q")

    run(scenario)


def test_forget_previews_then_asks(solo: tuple[LocalMesh, Path, list[str]], tmp_path: Path) -> None:
    mesh, src, _ = solo
    node = mesh.nodes[0]
    (src / "extra.txt").write_text("one more\n")
    third = last_json(mesh.run(node, "backup", str(src), "--json"))["snapshot_id"]

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: any(s.snapshot_id == third for s in app.snaps), WAIT, "the third")
            await pilot.press("2")
            assert app.selected_snapshot().snapshot_id == third  # type: ignore[union-attr]
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the preview")
            preview = str(app.screen.query_one(".detail Static", Static).content)
            assert f"forget {third[:8]}" in preview and "then prune" in preview
            await pilot.press("n")
            await pilot.pause(1.0)
            assert len(_snapshots(mesh)) == 3  # nothing happened
            await pilot.press("f")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the preview")
            await pilot.press("y")
            await until(pilot, lambda: len(app.snaps) == 2, WAIT, "the list without it")
            assert third not in _snapshots(mesh)
            await pilot.press("q")

    run(scenario)


def test_invite_shows_a_token_and_its_qr_code(solo: tuple[LocalMesh, Path, list[str]]) -> None:
    mesh, _, _ = solo

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.group is not None and app.group.members, WAIT, "the group")
            await pilot.press("4")
            assert "home-lab" in text_of(app, "#group-head")
            assert app.query_one("#members", DataTable).row_count == 1
            # Removing a member asks first; no leaves it.
            app.query_one("#members", DataTable).focus()
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the question")
            await pilot.press("n")
            await pilot.pause(0.5)
            assert app.group is not None and len(app.group.members) == 1
            # The command palette finds the invite by name too.
            await pilot.press("ctrl+p")
            await pilot.press(*"invite a")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, Invite), WAIT, "the invite")
            token = text_of(app.screen, "#token")
            qr = text_of(app.screen, "#qr")
            assert len(token) > 40 and " " not in token
            assert qr.count("\n") > 10 and "▀" in qr
            await pilot.press("escape", "q")
        return token

    token = run(scenario)
    # The token is a real one: another node could redeem it; here, the admin's daemon knows
    # it (a second invite differs: each is one-time).
    with connect(mesh.nodes[0].home) as s:  # type: ignore[union-attr]
        other = call(s, c.GroupInviteCall(admin=False, expires="1h"))
    assert isinstance(other, c.GroupInviteResult) and other.token != token


def test_a_backup_shows_live_progress_then_the_new_snapshot(
        solo: tuple[LocalMesh, Path, list[str]], tmp_path: Path) -> None:
    """Driven by events: the backup's progress shows while it runs (a CLI backup, not one the
    TUI asked for), and the new snapshot appears without a key pressed."""
    mesh, _, _ = solo
    node = mesh.nodes[0]
    big = random_tree(tmp_path / "big", 24, seed=11)

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.status is not None and app.snaps, WAIT, "status")
            before = len(app.snaps)
            seen: list[str] = []
            proc = popen(mesh, node, "backup", str(big))
            try:
                def watch() -> bool:
                    if app.query_one("#live").display:
                        seen.append(text_of(app, "#live-text"))
                    return len(app.snaps) == before + 1
                await until(pilot, watch, WAIT * 2, "the new snapshot")
            finally:
                _, err = proc.communicate(timeout=WAIT)
                assert proc.returncode == 0, err
            assert any(t.startswith("Backup") for t in seen), seen
            assert any("reading:" in t and "ETA" in t for t in seen), seen
            assert not app.query_one("#live").display  # gone once it finished
            new = app.snaps[-1].short_id
            await until(pilot, lambda: new in text_of(app, "#backups"), WAIT, "the dashboard's last backup")
            # The log has the daemon's events; a filter keeps the matching lines only.
            await pilot.press("6")
            log = app.query_one("#log-view", RichLog)
            everything = len(log.lines)
            await pilot.press("slash", *"finished")
            await until(pilot, lambda: 0 < len(log.lines) < everything, WAIT, "the filtered log")
            assert all("finished" in "".join(seg.text for seg in line) for line in log.lines)
            await pilot.press("escape")
            app.query_one("#log-filter", Input).value = ""
            await until(pilot, lambda: len(log.lines) == everything, WAIT, "the whole log again")
            await pilot.press("q")

    run(scenario)


def test_disconnected_then_reconnects_by_itself(solo: tuple[LocalMesh, Path, list[str]]) -> None:
    mesh, _, _ = solo

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.connected, WAIT, "the connection")
            mesh.stop(0)
            try:
                await until(pilot, lambda: "disconnected" in text_of(app, "#conn"), WAIT, "disconnected")
                assert "corestate" in text_of(app, "#conn") and "node run" in text_of(app, "#conn")
            finally:
                mesh.start(0)
            await until(pilot, lambda: app.connected and "● connected" in text_of(app, "#conn"), WAIT,
                        "the reconnect")
            await pilot.press("q")

    run(scenario)


def test_diff_of_two_snapshots(solo: tuple[LocalMesh, Path, list[str]]) -> None:
    mesh, src, _ = solo

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: len(app.snaps) >= 2, WAIT, "the snapshots")
            await pilot.press("2")
            # Select the second snapshot: D diffs it against the one before.
            table = app.query_one("#snaps", DataTable)
            table.move_cursor(row=1)
            await pilot.press("D")
            await until(pilot, lambda: isinstance(app.screen, TextView), WAIT, "the diff")
            body = text_of(app.screen, "#text")
            assert "M /" in body and body.strip().endswith("docs/report.txt"), body
            # Below the backed-up folder only the edited file changed. The folders above it
            # (/tmp, pytest's base) are in the snapshot too, and their times move whenever
            # anyone else on the machine creates a file there between the two backups.
            modified = [line[2:] for line in body.splitlines() if line.startswith("M ")]
            assert [m for m in modified if Path(m).is_relative_to(src)] == [str(src / "docs" / "report.txt")], body
            assert all(src.is_relative_to(m) for m in modified if not Path(m).is_relative_to(src)), body
            title = str(app.screen.query_one(".title", Label).content)
            assert re.search(rf"\b{len(modified)} modified\b", title), title
            await pilot.press("escape", "q")

    run(scenario)


def test_trust_then_untrust_a_peer(solo: tuple[LocalMesh, Path, list[str]], tmp_path: Path) -> None:
    mesh, _, _ = solo
    other = tmp_path / "other"
    p = subprocess.run([*mesh.cmd(mesh.nodes[0], "init")[:4], "--home", str(other), "init", "--json",
                        "--passphrase-file", str(mesh.pw)], capture_output=True, text=True, env=mesh.env)
    assert p.returncode == 0, p.stderr
    peer = last_json(p.stdout)["peer_id"]
    addr = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{peer}"  # nobody listens there

    async def scenario() -> None:
        app = app_for(mesh)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.status is not None, WAIT, "status")
            await pilot.press("4", "t")
            await until(pilot, lambda: isinstance(app.screen, AskText), WAIT, "the address question")
            await pilot.press(*addr, "enter")
            await until(pilot, lambda: any(r.peer == peer for r in app.peer_rows), WAIT, "the new peer")
            assert next(r for r in app.peer_rows if r.peer == peer).trusted
            pt = app.query_one("#peer-table", DataTable)
            pt.focus()
            pt.move_cursor(row=[r.peer for r in app.peer_rows].index(peer))
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, Confirm), WAIT, "the question")
            await pilot.press("y")
            await until(pilot, lambda: not any(r.peer == peer and r.trusted for r in app.peer_rows),
                        WAIT, "the peer untrusted")
            await pilot.press("q")

    run(scenario)


def test_the_daemon_answers_an_alert_ack(solo: tuple[LocalMesh, Path, list[str]]) -> None:
    """The call travels to a real daemon and back: no alert is known by that key."""
    mesh, _, _ = solo
    with connect(mesh.nodes[0].home) as s:  # type: ignore[union-attr]
        res = call(s, c.AlertAckCall(alerts=(c.AlertKey(time_ns=1, alert="failed-audit"),)))
    assert res == c.AlertAckResult(acked=0)
    with connect(mesh.nodes[0].home) as s:  # type: ignore[union-attr]
        st = call(s, c.StatusCall())
    assert isinstance(st, c.StatusResult) and all(not a.acked for a in st.alerts)


def _snapshots(mesh: LocalMesh) -> list[str]:
    p = mesh.run(mesh.nodes[0], "snapshots", "--json")
    return [s["id"] for s in last_json(p)]
