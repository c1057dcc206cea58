"""The TUI's asyncio client and its limits, against the scripted daemon on a real socket:
no daemon, a refusal, a daemon that goes silent past the call timeout, and the log and
search limits of the app (past each with realistic sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corestate.protocol import control as c
from corestate.tui import client as tc
from corestate.tui.app import LOG_LINES, SEARCH_RESULTS, CoreStateApp
from textual.widgets import Input, OptionList, RichLog
from tuiscripted import NOW_NS, scripted
from tuiutil import run, until


def test_no_daemon_a_refusal_and_a_silent_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sock = Path("control.sock")
    monkeypatch.setattr(tc, "CALL_TIMEOUT", 1.0)  # the limit is 120 s; the same code path

    async def scenario() -> None:
        client = tc.Client(sock)
        with pytest.raises(tc.Disconnected) as no:
            await client.call(c.StatusCall())
        assert "node run" in no.value.hint
        async with scripted(sock) as daemon:
            st = await client.call(c.StatusCall())
            assert isinstance(st, c.StatusResult) and st.snapshots == 8
            with pytest.raises(tc.DaemonFailure) as refused:
                await client.call(c.CheckCall(read_data=False, rebuild_index=False))
            assert refused.value.kind == "bad-request" and not refused.value.retryable
            daemon.silent = True
            with pytest.raises(tc.Disconnected, match="said nothing for 1s"):
                await client.call(c.StatsCall())

    run(scenario)


def test_the_log_keeps_the_newest_lines_and_the_search_the_best_matches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sock = Path("control.sock")
    burst = LOG_LINES + 500

    async def scenario() -> None:
        async with scripted(sock) as daemon:
            daemon.events = [c.PeerUp(time_ns=NOW_NS, peer_id=f"peer{i:05d}") for i in range(burst)]
            daemon.listing = [c.Entry(path=f"/data/file{i:05d}.txt".encode(), type="f", mode=0o644, uid=0,
                                      gid=0, mtime_ns=NOW_NS, size=1, target=None) for i in range(5000)]
            app = CoreStateApp(sock, None, clock=lambda: NOW_NS)
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: bool(app.log_lines) and f"peer{burst - 1:05d}" in app.log_lines[-1][0], 60, "the burst")
                await pilot.press("6")
                log = app.query_one("#log-view", RichLog)
                assert len(app.log_lines) == LOG_LINES and len(log.lines) == LOG_LINES
                # "connected", then 2,500 events: the newest 2,000 are kept.
                assert f"peer{burst - LOG_LINES:05d}" in app.log_lines[0][0]
                # Search: thousands match, the best SEARCH_RESULTS are listed.
                await until(pilot, lambda: app.snaps, 30, "the snapshots")
                await pilot.press("3")
                await until(pilot, lambda: len(app.entries) == 5000, 30, "the listing")
                app.query_one("#search", Input).value = "file"
                matches = app.query_one("#matches", OptionList)
                await until(pilot, lambda: matches.option_count == SEARCH_RESULTS, 30, "the matches")
                await pilot.press("q")

    run(scenario)
