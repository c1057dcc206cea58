"""Screenshots (SVG) of the TUI's main screens at 80×24 and 120×40, compared with the ones
committed under tests/tui/screens/. The data comes from a scripted daemon on a real socket
(tests/tuiscripted.py) and the clock is frozen, so a picture changes only when the TUI does.

After a deliberate change of the screens, look at the new pictures, then write them:

    CORESTATE_UPDATE_SCREENS=1 .venv/bin/python -m pytest tests/tui/test_tui_screens.py -q

A mismatch leaves the picture as it is now next to the test's temporary folder (the
failure names it) to compare in a browser.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from corestate.tui.app import CoreStateApp
from textual.widgets import DataTable
from tuiscripted import NOW_NS, scripted
from tuiutil import run, until

HERE = Path(__file__).parent / "screens"
UPDATE = os.environ.get("CORESTATE_UPDATE_SCREENS") == "1"
SCREENS = ["dashboard", "snapshots", "browse", "peers", "alerts", "log", "help", "disconnected"]


def shoot(screen: str, size: tuple[int, int]) -> str:
    sock = Path("control.sock")  # relative, in the test's folder: the same words on every run

    async def scenario() -> str:
        async def inside() -> str:
            app = CoreStateApp(sock, Path("/home/ada/.corestate"), clock=lambda: NOW_NS)
            async with app.run_test(size=size) as pilot:
                if screen == "disconnected":
                    await until(pilot, lambda: "disconnected" in str(app.query_one("#conn").content),
                                30, "disconnected")
                else:
                    await until(pilot, lambda: app.status is not None and app.info is not None
                                and app.group is not None and app.snaps, 30, "the data")
                    if screen == "help":
                        await pilot.press("question_mark")
                    elif screen != "dashboard":
                        await pilot.press(str(1 + ["dashboard", "snapshots", "browse", "peers", "alerts",
                                                   "log"].index(screen)))
                    if screen == "browse":
                        await until(pilot, lambda: len(app.entries) > 3, 30, "the tree")
                await pilot.pause(0.3)
                await pilot.wait_for_scheduled_animations()
                return app.export_screenshot(title=f"corestate tui — {screen}")
        if screen == "disconnected":
            return await inside()
        async with scripted(sock):
            return await inside()

    return run(scenario)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, screen: str, size: tuple[int, int]) -> None:
    monkeypatch.chdir(tmp_path)
    svg = shoot(screen, size)
    want = HERE / f"{screen}-{size[0]}x{size[1]}.svg"
    if UPDATE or not want.exists():
        HERE.mkdir(exist_ok=True)
        want.write_text(svg)
        if not UPDATE:
            pytest.fail(f"no picture yet: wrote {want}; look at it, then commit it")
        return
    if svg != want.read_text():
        got = tmp_path / want.name
        got.write_text(svg)
        pytest.fail(f"{screen} at {size[0]}x{size[1]} differs from {want}: now it looks like {got} "
                    "(CORESTATE_UPDATE_SCREENS=1 writes the new one, after you looked)")


def test_acknowledge_an_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """k on the alerts screen sends AlertAckCall; the alert shows as seen and leaves the
    dashboard's recent alerts (the daemon's side: tests/node/test_alert_ack.py)."""
    monkeypatch.chdir(tmp_path)

    async def scenario() -> set[tuple[int, str]]:
        async with scripted(Path("control.sock")) as daemon:
            app = CoreStateApp(Path("control.sock"), None, clock=lambda: NOW_NS)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.status is not None, 30, "the data")
                assert "failed-audit" in str(app.query_one("#dash-alerts").content)
                await pilot.press("5")
                table = app.query_one("#alert-table", DataTable)
                assert [str(table.get_row_at(i)[3]) for i in range(2)] == ["new", "new"]
                assert "3f9a3f9a" in str(app.query_one("#alert-detail").content)  # its details
                await pilot.press("k")
                await until(pilot, lambda: str(table.get_row_at(0)[3]) == "✓", 30, "the alert seen")
                assert str(table.get_row_at(1)[3]) == "new"
                dash = str(app.query_one("#dash-alerts").content)
                assert "failed-audit" not in dash and "holder-lost" in dash
                await pilot.press("q")
            return daemon.acked

    acked = run(scenario)
    assert acked == {(NOW_NS - 20 * 60 * 10**9, "failed-audit")}


def test_a_snapshot_past_the_listing_limit_browses_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot of 130,000 files (more than MAX_ENTRIES, the names held for the search):
    the TUI stops reading the listing at the limit (the call is cancelled), the tree shows
    without a node per file (folders fill in when opened), a folder past the limit lists in full when opened (asked of the daemon), and
    the details say the search covers only the first names."""
    from corestate.protocol import control as c
    from corestate.tui.app import MAX_ENTRIES
    from textual.widgets import Tree
    monkeypatch.chdir(tmp_path)
    folders, per = 1300, 99
    assert folders * (per + 1) > MAX_ENTRIES

    def entry(path: str, kind: str) -> c.Entry:
        return c.Entry(path=path.encode(), type=kind, mode=0o644, uid=1000, gid=1000, mtime_ns=NOW_NS,
                       size=4096, target=None)
    big = [entry("/srv", "d")]
    for d in range(folders):
        big.append(entry(f"/srv/d{d:04d}", "d"))
        big += [entry(f"/srv/d{d:04d}/f{i:02d}.txt", "f") for i in range(per)]

    async def scenario() -> None:
        async with scripted(Path("control.sock")) as daemon:
            daemon.listing = big
            app = CoreStateApp(Path("control.sock"), None, clock=lambda: NOW_NS)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.snaps, 30, "the snapshots")
                t0 = time.monotonic()
                await pilot.press("3")
                tree = app.query_one("#tree", Tree)
                await until(pilot, lambda: len(app.entries) > 0 and len(tree.root.children) == 1, 60, "the tree")
                took = time.monotonic() - t0
                assert not app.entries_complete and len(app.entries) == MAX_ENTRIES
                assert "search covers the first 100,000" in str(app.query_one("#details").content)
                srv = tree.root.children[0]
                # /srv opens by itself (it is alone); the cut went through it: asked in full.
                await until(pilot, lambda: len(srv.children) == folders, 30, "/srv in full")
                first = srv.children[0]  # d0000: held in full, opened from what is held
                calls = len(daemon.ls_calls)
                first.expand()
                await pilot.pause(0.2)
                assert len(first.children) == per and len(daemon.ls_calls) == calls
                last = srv.children[-1]  # d1299: its files lie past the limit
                last.expand()
                await until(pilot, lambda: len(last.children) == per, 30, "the folder past the limit")
                assert daemon.ls_calls[-1] == c.LsCall(snapshot=app.browse_snapshot or "", path=b"/srv/d1299",
                                                       recursive=False)
                await pilot.press("q")
            # The big listing was not read to its end.
            await until_true(lambda: "LsCall" in daemon.hung_up, 10)
        print(f"tree of {len(big):,} entries shown in {took:.1f}s")

    run(scenario)


async def until_true(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
