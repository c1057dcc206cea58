"""The anomaly model's state in a node's home: ``HOME/anomaly.json``.

What it holds: the per-series baseline (serialised by ``node/core/anomaly``, kept opaque
here) and one finding per judged backup (verdict, score, reasons, the numbers behind them,
the snapshot an alert protects, whether a person acknowledged it). ``HOME/anomaly.db``
(``AnomalyDB``, sqlite) holds what grows with every file or backup: each file's last
content probe, and each backup's volumes, which ``advise`` reads.

Invariants:

- the file stays small (it is rewritten after every backup): only alerts and the last
  ``DETAILED`` findings keep their numbers, ok findings are at most ``MAX_OK``, and other
  findings at most ``MAX_FINDINGS``, of which a standing alert is never dropped;
- the file is replaced atomically (a temporary file, fsynced, renamed over it, the folder
  fsynced): a crash leaves the old state or the new one, never half of one;
- a damaged or unreadable file never stops a backup or a command: it is set aside as
  ``anomaly.json.damaged``, the model starts from a fresh baseline, and ``load`` says so
  in words (the caller warns);
- an alert that stands (not acknowledged) protects the last snapshot of its series taken
  before the anomaly; ``protected()`` is the one place that answers which snapshots are
  protected and ``paused_series()`` which series retention must not touch.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_FILE = "anomaly.json"
FORMAT = 1
# Bounds: findings other than ok; ok findings; findings that keep their numbers; the
# volumes the optimizer reads (a year of hourly backups and more).
MAX_FINDINGS = 5_000
MAX_OK = 2_000
DETAILED = 50
MAX_HISTORY = 20_000
MAX_DETAIL_FILES = 20

Series = tuple[bytes, ...]


def series_key(paths: list[bytes] | tuple[bytes, ...]) -> Series:
    """A series: the backups of one set of paths (as retention judges them)."""
    return tuple(sorted(paths))


def _enc(paths: Series) -> list[str]:
    return [os.fsdecode(p) for p in paths]


def _dec(paths: list[str]) -> Series:
    return tuple(sorted(os.fsencode(p) for p in paths))


@dataclass(slots=True)
class Finding:
    """The model's verdict on one backup."""

    snapshot: str  # hex id
    time_ns: int
    series: list[str]  # the protected paths, sorted (file system encoding)
    verdict: str  # ok, suspect, alert
    score: float
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)  # the numbers behind each reason
    files: list[str] = field(default_factory=list)  # the files most responsible
    protects: str | None = None  # the snapshot an alert protects (hex), None if none before it
    acked_ns: int | None = None  # when a person said it was expected
    silent: list[str] = field(default_factory=list)  # files changed under an unchanged stat
    features: dict[str, float] = field(default_factory=dict)  # what the baseline learns on ack
    # Silent corruption found, path -> content digest (hex): the next backups do not report
    # the same content of the same file again.
    silent_digests: dict[str, str] = field(default_factory=dict)

    @property
    def standing(self) -> bool:
        """An alert nobody acknowledged yet."""
        return self.verdict == "alert" and self.acked_ns is None

    def series_key(self) -> Series:
        return _dec(self.series)


_FINDING_FIELDS = tuple(f.name for f in fields(Finding))


@dataclass(slots=True)
class Volume:
    """One backup's volumes, for the optimizer (node/core/advise.py)."""

    time_ns: int
    bytes_changed: int  # bytes of new and changed files read
    bytes_new: int  # plaintext bytes of new chunks
    bytes_added: int  # bytes of packs written to the store
    store_bytes: int  # the local store after the backup
    files_changed: int
    seconds: float


@dataclass(slots=True)
class AnomalyState:
    # Per series (``key``): "baseline", node/core/anomaly's serialised Baseline (base64),
    # and "exts", the file extensions its snapshots had.
    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    # -- what the rest of the node asks -------------------------------------------------

    def protected(self) -> dict[str, Finding]:
        """Protected snapshot (hex id) -> the standing alert that protects it."""
        return {f.protects: f for f in self.findings if f.standing and f.protects}

    def paused_series(self) -> set[Series]:
        """Series with a standing alert: scheduled retention leaves them alone."""
        return {f.series_key() for f in self.findings if f.standing}

    def finding(self, snapshot_hex: str) -> Finding | None:
        for f in reversed(self.findings):
            if f.snapshot == snapshot_hex:
                return f
        return None

    def add(self, f: Finding) -> None:
        self.findings.append(f)
        if len(self.findings) > DETAILED:
            old = self.findings[-DETAILED - 1]
            if old.verdict != "alert" and not old.silent:
                old.details, old.files, old.features = {}, [], {}
        if len(self.findings) % 256 == 0:
            self.compact()

    def compact(self) -> None:
        """Apply the bounds (``add`` does every 256 findings, ``save`` always)."""
        oks = [x for x in self.findings if x.verdict == "ok"]
        others = [x for x in self.findings if x.verdict != "ok"]
        if len(oks) <= MAX_OK and len(others) <= MAX_FINDINGS:
            return
        # Drop the oldest, never a standing alert (it still protects).
        drop = {id(x) for x in oks[:-MAX_OK]}
        over = len(others) - MAX_FINDINGS
        for x in others:
            if over <= 0:
                break
            if not x.standing:
                drop.add(id(x))
                over -= 1
        self.findings = [x for x in self.findings if id(x) not in drop]

    # -- the file ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        # Shallow: ``asdict`` deep-copies every list and dict of every finding (~15 us each,
        # 30 ms for a full state) only for json.dumps to read them once; same JSON.
        names = _FINDING_FIELDS
        return {"format": FORMAT, "series": self.series,
                "findings": [{n: getattr(f, n) for n in names} for f in self.findings]}

    @classmethod
    def from_json(cls, obj: Any) -> AnomalyState:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError("not an anomaly state of format 1")
        findings = []
        for x in obj.get("findings", []):
            f = Finding(**x)
            if f.verdict not in ("ok", "suspect", "alert") or not isinstance(f.score, (int, float)):
                raise ValueError(f"a finding of {f.snapshot!r} has no valid verdict")
            if not isinstance(f.reasons, list) or not isinstance(f.series, list):
                raise ValueError(f"a finding of {f.snapshot!r} is malformed")
            findings.append(f)
        series = obj.get("series", {})
        if not isinstance(series, dict) or not all(isinstance(v, dict) for v in series.values()):
            raise ValueError("the per-series models are malformed")
        return cls(series, findings)


def key_of(series: Series) -> str:
    """A series as a JSON object key."""
    return json.dumps(_enc(series))


_DB_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (path BLOB PRIMARY KEY, probe TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
    time_ns INTEGER NOT NULL, bytes_changed INTEGER NOT NULL, bytes_new INTEGER NOT NULL,
    bytes_added INTEGER NOT NULL, store_bytes INTEGER NOT NULL, files_changed INTEGER NOT NULL,
    seconds REAL NOT NULL
);
"""


class AnomalyDB:
    """``HOME/anomaly.db``: the content probe of each file's last probed version, so the
    next backup can compare a changed file's new version with its old one without reading
    the old bytes (rows of deleted files go with them); and each backup's volumes for the
    optimizer (the last MAX_HISTORY). Not precious: a damaged file is replaced by an empty
    one (the model then knows no old versions, the optimizer no history, for a while)."""

    def __init__(self, home: Path) -> None:
        import sqlite3
        path = home / "anomaly.db"
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Not precious: WAL without a sync per commit (a crash may lose the last rows).
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_DB_SCHEMA)
        except sqlite3.DatabaseError:
            with contextlib.suppress(Exception):
                self.db.close()
            path.unlink(missing_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.executescript(_DB_SCHEMA)
        self.upserts: list[tuple[bytes, str]] = []
        self.deletes: list[bytes] = []

    def add_volume(self, v: Volume) -> None:
        import sqlite3
        with contextlib.suppress(sqlite3.DatabaseError):
            self.db.execute("INSERT INTO volumes VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (v.time_ns, v.bytes_changed, v.bytes_new, v.bytes_added, v.store_bytes,
                             v.files_changed, v.seconds))
            self.db.execute("DELETE FROM volumes WHERE rowid <= (SELECT MAX(rowid) FROM volumes) - ?",
                            (MAX_HISTORY,))

    def volumes(self) -> list[Volume]:
        import sqlite3
        try:
            return [Volume(*r) for r in self.db.execute("SELECT * FROM volumes ORDER BY time_ns")]
        except sqlite3.DatabaseError:
            return []

    def get(self, path: bytes) -> list[Any] | None:
        import sqlite3
        try:
            row = self.db.execute("SELECT probe FROM probes WHERE path = ?", (path,)).fetchone()
            return json.loads(row[0]) if row else None
        except (sqlite3.DatabaseError, ValueError):
            return None

    def flush(self) -> None:
        import sqlite3
        try:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM probes WHERE path = ?", [(p,) for p in self.deletes])
            self.db.executemany("INSERT OR REPLACE INTO probes (path, probe) VALUES (?, ?)", self.upserts)
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        self.upserts, self.deletes = [], []

    def close(self) -> None:
        self.db.close()


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def load(home: Path) -> tuple[AnomalyState, str | None]:
    """The state in ``home`` and, when it could not be used, why in words (then a fresh
    state, and the damaged file kept aside for a person to look at)."""
    path = state_path(home)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AnomalyState(), None
    except OSError as exc:
        return AnomalyState(), (f"cannot read {path} ({exc.strerror}): the anomaly model starts "
                                "from a fresh baseline this time")
    try:
        return AnomalyState.from_json(json.loads(raw)), None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        aside = path.with_name(STATE_FILE + ".damaged")
        try:
            os.replace(path, aside)
            kept = f"kept as {aside}"
        except OSError:
            kept = "left in place"
        return AnomalyState(), (f"{path} is damaged ({str(exc)[:200]}); {kept}. The anomaly model "
                                "starts from a fresh baseline: it relearns this node's usual "
                                "changes over the next backups, and alerts acknowledged before "
                                "are forgotten")


def save(home: Path, state: AnomalyState) -> None:
    """Replace the state file atomically."""
    state.compact()
    path = state_path(home)
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    data = json.dumps(state.to_json(), separators=(",", ":"), allow_nan=False).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = [
    "MAX_DETAIL_FILES",
    "AnomalyDB",
    "AnomalyState",
    "Finding",
    "Series",
    "Volume",
    "key_of",
    "load",
    "save",
    "series_key",
    "state_path",
]
