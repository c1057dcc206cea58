"""The TUI's pure words and pictures: sizes, durations, fuzzy ranking, plots, the QR code."""

from __future__ import annotations

import segno
from corestate.tui import format as f


def test_sizes_durations_and_missing_values() -> None:
    assert f.human(0) == "0 B" and f.human(1536) == "1.5 KiB" and f.human(3 << 30) == "3.0 GiB"
    assert f.human(None) == f.DASH and f.human(-1) == f.DASH  # -1: unknown on the wire
    assert f.duration(45) == "45s" and f.duration(125) == "2m 05s" and f.duration(7500) == "2h 05m"
    assert f.duration(3 * 86400 + 4 * 3600) == "3d 4h"
    now = 10_000 * 10**9
    assert f.ago(now - 90 * 10**9, now) == "1m 30s ago" and f.ago(now + 3600 * 10**9, now) == "in 1h 00m"
    assert f.ago(None, now) == f.DASH and f.when(None) == f.DASH
    assert f.plural(1, "file") == "1 file" and f.plural(2, "file") == "2 files"
    assert f.short_peer("12D3KooWabcdefgh12345678") == "12345678"


def test_fuzzy_search_ranks_names_over_scattered_letters() -> None:
    paths = ["/home/ada/raspberry/pie.txt", "/home/ada/Documents/report.odt",
             "/home/ada/Documents/reports/2026/q1.ods", "/srv/r/e/p/x.bin"]
    assert f.rank("report", paths, 10)[0] == "/home/ada/Documents/report.odt"
    assert f.rank("reprt", paths, 10)[0] == "/home/ada/Documents/report.odt"
    assert f.rank("zzz", paths, 10) == []
    assert f.fuzzy_score("", "anything") == 0
    assert len(f.rank("e", paths, 2)) == 2  # the limit holds
    # Case does not matter.
    assert f.rank("REPORT", paths, 1) == ["/home/ada/Documents/report.odt"]


def test_plots() -> None:
    assert f.sparkline([], 10) == ""
    line = f.sparkline([1, 2, 3, 4, 5, 6, 7, 8, 9], 9)
    assert line[0] == "▁" and line[-1] == "█" and len(line) == 9
    assert f.sparkline([5, 5, 5], 10) == "▄▄▄"  # flat: a middle line, not a wall
    assert len(f.sparkline(list(range(100)), 24)) == 24  # the newest 24
    assert f.bar(5, 10, 10) == "█████     " and f.bar(10, 10, 4) == "████" and f.bar(1, 0, 4) == ""


def test_the_qr_code_has_every_module_of_segnos_matrix() -> None:
    token = "cs-invite-1:" + "A" * 180
    text = f.qr_text(token)
    qr = segno.make(token, error="l", micro=False)
    side = qr.symbol_size(scale=1, border=2)[0]
    lines = text.split("\n")
    assert len(lines) == (side + 1) // 2 and all(len(line) == side for line in lines)
    # Two modules per cell: rebuild the matrix from the half blocks and compare.
    cell = {"█": (False, False), "▄": (True, False), "▀": (False, True), " ": (True, True)}
    rows = [[cell[ch][0] for ch in line] for line in lines]
    rows2 = [[cell[ch][1] for ch in line] for line in lines]
    rebuilt = [r for pair in zip(rows, rows2, strict=True) for r in pair][:side]
    want = [[bool(v) for v in row] for row in qr.matrix_iter(scale=1, border=2)]
    assert rebuilt == want
