"""Words and small pictures for the screens: sizes, times, ages, short ids, plots, fuzzy match.

Pure functions: no Textual, no I/O. A value the daemon does not send (a field another
feature adds later, or ``None``) is shown as ``—``, never as 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

DASH = "—"
BLOCKS = " ▁▂▃▄▅▆▇█"


def human(n: float | None) -> str:
    """Bytes as a person reads them: ``12.3 MiB``."""
    if n is None or n < 0:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def short_peer(peer: str) -> str:
    """The end of a PeerID, as ``peer list`` and ``status`` show it."""
    return peer[-8:] if len(peer) > 8 else peer


def when(ns: int | None) -> str:
    """A wall-clock time in the local zone, or ``—``."""
    if not ns:
        return DASH
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9))


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h 05m``, ``2d 4h``."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def ago(ns: int | None, now_ns: int) -> str:
    """How long ago ``ns`` was (``3m ago``), or how far ahead (``in 2h 00m``)."""
    if not ns:
        return DASH
    d = (now_ns - ns) / 1e9
    return f"{duration(d)} ago" if d >= 0 else f"in {duration(d)}"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def path_text(p: bytes) -> str:
    """A path from the file system (not always UTF-8) as text; undecodable bytes escaped."""
    return p.decode("utf-8", "backslashreplace")


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as block characters, from the smallest (one eighth) to the
    largest (a full block): the shape over time, as the numbers beside it say the scale."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    low, top = min(vals), max(vals)
    if top == low:
        return BLOCKS[4] * len(vals)
    steps = len(BLOCKS) - 2  # 1..8
    return "".join(BLOCKS[1 + round((v - low) / (top - low) * steps)] for v in vals)


def bar(value: float, top: float, width: int) -> str:
    """A horizontal bar of ``width`` cells, ``value`` of ``top`` filled (eighths for the end)."""
    if top <= 0 or width <= 0:
        return ""
    eighths = round(max(0.0, min(1.0, value / top)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def fuzzy_score(query: str, text: str) -> int | None:
    """How well ``query`` matches ``text`` as a subsequence (case-insensitive): higher is
    better; None when some letter of the query is missing. Consecutive letters and letters
    after a separator count more, so ``rep`` ranks ``report.txt`` above ``raspberry``."""
    q, t = query.lower(), text.lower()
    if not q:
        return 0
    score, ti, last = 0, 0, -2
    for ch in q:
        ti = t.find(ch, ti)
        if ti < 0:
            return None
        score += 1
        if ti == last + 1:
            score += 3
        if ti == 0 or t[ti - 1] in "/._- ":
            score += 2
        last = ti
        ti += 1
    # A match within the file name (after the last slash) beats one spread over folders.
    name_start = t.rfind("/") + 1
    if t.find(q[0], name_start) >= 0 and fuzzy_score_in(q, t[name_start:]):
        score += 5
    return score


def fuzzy_score_in(q: str, t: str) -> bool:
    """Whether ``q`` is a subsequence of ``t``."""
    it = iter(t)
    return all(ch in it for ch in q)


def rank(query: str, texts: Iterable[str], limit: int) -> list[str]:
    """The ``limit`` best fuzzy matches of ``query`` among ``texts``, best first (ties:
    the shorter path first)."""
    scored = [(s, t) for t in texts if (s := fuzzy_score(query, t)) is not None]
    scored.sort(key=lambda st: (-st[0], len(st[1]), st[1]))
    return [t for _, t in scored[:limit]]


def qr_text(data: str) -> str:
    """``data`` as a QR code drawn with half blocks (two modules per character cell),
    with the quiet zone the standard asks for. Dark modules are spaces on a light ground,
    so it scans on a dark terminal too."""
    import segno

    qr = segno.make(data, error="l", micro=False)
    rows = [[bool(v) for v in row] for row in qr.matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    out = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        # light = block drawn; dark = space: upper half-block when only the top is light.
        line = []
        for t, b in zip(top, bottom, strict=True):
            line.append({(False, False): "█", (True, False): "▄", (False, True): "▀",
                         (True, True): " "}[(t, b)])
        out.append("".join(line))
    return "\n".join(out)


__all__ = ["DASH", "ago", "bar", "duration", "fuzzy_score", "human", "path_text", "plural", "qr_text",
           "rank", "short_peer", "sparkline", "when"]
