"""Screenshots (SVG) of the TUI's main screens at 80×24 and 120×40, compared with the ones
committed under tests/tui/screens/. The data comes from a scripted daemon on a real socket
(tests/tuiscripted.py) and the clock is frozen, so a picture changes only when the TUI does.

After a deliberate change of the screens, look at the new pictures, then write them:

    CORESTATE_UPDATE_SCREENS=1 .venv/bin/python -m pytest tests/tui/test_tui_screens.py -q

A mismatch leaves the picture as it is now next to the test's temporary folder (the
failure names it) to compare in a browser.
"""

from __future__ import annotations

import os
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
