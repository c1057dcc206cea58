"""The anomaly model's state in a node's home: ``HOME/anomaly.db`` (sqlite).

What it holds: the per-series baseline (serialised by ``node/core/anomaly``, kept opaque
here); one finding per judged backup (verdict, score, reasons, the numbers behind them, the
snapshot an alert protects, whether a person acknowledged it); each file's last content
probe; each backup's volumes, which ``advise`` reads. A backup reads only its own series'
row and the silent-corruption digests it reported before, and writes one finding, its
series' row, the probes and its volume in one transaction: its cost does not grow with the
node's history. ``AnomalyState`` is the whole state in memory, for the commands.

Invariants:

- the findings stay bounded: only alerts and the last ``DETAILED`` findings keep their
  numbers, ok findings are at most ``MAX_OK``, and other findings at most ``MAX_FINDINGS``,
  of which a standing alert is never dropped;
- a backup's finding, baseline, probes and volume commit together (WAL, synchronous=FULL:
  a standing alert protects a snapshot, so it is durable once the backup says it);
- a damaged or unreadable database never stops a backup or a command: it is set aside as
  ``anomaly.db.damaged``, the model starts from a fresh baseline, and ``problem`` says so
  in words (the caller warns);
- a home of an older version (``HOME/anomaly.json``, format 1) is migrated on first open,
  keeping its baselines and findings; the old file is kept as ``anomaly.json.migrated``
  (a damaged one as ``anomaly.json.damaged``, with a word, as before);
- an alert that stands (not acknowledged) protects the last snapshot of its series taken
  before the anomaly; ``protected()`` is the one place that answers which snapshots are
  protected and ``paused_series()`` which series retention must not touch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DB_FILE = "anomaly.db"
STATE_FILE = "anomaly.json"  # an older home's state (format 1), migrated on first open
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


@contextlib.contextmanager
def _transaction(db: Any) -> Iterator[None]:
    """One write transaction of the state database: taken at once (IMMEDIATE, so a
    concurrent writer waits here, not at its first write), committed, or rolled back on
    any error (the state stays what it was)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


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
    # Per series (``key``): "baseline", node/core/anomaly's serialised Baseline (base64);
    # "pending", the features it learnt since (learn them to get the current baseline;
    # absent when none); "exts", the file extensions its snapshots had.
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
        findings = [_finding(x) for x in obj.get("findings", [])]
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
CREATE TABLE IF NOT EXISTS series (key TEXT PRIMARY KEY, exts TEXT NOT NULL, baseline BLOB);
CREATE TABLE IF NOT EXISTS learnt (seq INTEGER PRIMARY KEY, series TEXT NOT NULL, features TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS learnt_series ON learnt (series, seq);
CREATE TABLE IF NOT EXISTS findings (
    seq INTEGER PRIMARY KEY,
    snapshot TEXT NOT NULL, series TEXT NOT NULL, verdict TEXT NOT NULL,
    standing INTEGER NOT NULL, silent INTEGER NOT NULL, detailed INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_verdict ON findings (verdict, seq);
CREATE INDEX IF NOT EXISTS findings_snapshot ON findings (snapshot);
CREATE INDEX IF NOT EXISTS findings_silent ON findings (series) WHERE silent = 1;
CREATE INDEX IF NOT EXISTS findings_detailed ON findings (seq)
    WHERE detailed = 1 AND verdict != 'alert' AND silent = 0;
"""
# The schema above, as ``PRAGMA user_version`` (0: a file of an older version, probes and
# volumes only; opening it adds the rest).
_DB_VERSION = 2
# sqlite's primary result codes that mean the file itself is bad (not busy, not full).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _is_damage(exc: BaseException) -> bool:
    import sqlite3
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError


def _finding(obj: Any) -> Finding:
    """A finding from its JSON object (raises ValueError or TypeError when malformed)."""
    if not isinstance(obj, dict):
        raise ValueError("a finding is not an object")
    f = Finding(**obj)
    if f.verdict not in ("ok", "suspect", "alert") or not isinstance(f.score, (int, float)):
        raise ValueError(f"a finding of {f.snapshot!r} has no valid verdict")
    if not isinstance(f.reasons, list) or not isinstance(f.series, list):
        raise ValueError(f"a finding of {f.snapshot!r} is malformed")
    return f


def _row(f: Finding) -> tuple[str, str, str, int, int, int, str]:
    body = json.dumps({n: getattr(f, n) for n in _FINDING_FIELDS}, separators=(",", ":"), allow_nan=False)
    return (f.snapshot, key_of(f.series_key()), f.verdict, int(f.standing), int(bool(f.silent)),
            int(bool(f.details or f.files or f.features)), body)


@dataclass(slots=True)
class SeriesModel:
    """A series' model as a backup reads it: the baseline blob last written whole, the
    features learnt since (oldest first; learning them again gives the same baseline),
    and the file extensions its snapshots had."""

    baseline: bytes | None = None
    pending: list[dict[str, float]] = field(default_factory=list)
    exts: list[str] = field(default_factory=list)


class AnomalyDB:
    """``HOME/anomaly.db``. Each file's last probed content (so the next backup compares a
    changed file's new version with its old one without reading the old bytes; rows of
    deleted files go with them); each backup's volumes for the optimizer (the last
    MAX_HISTORY); the per-series baselines and the findings. Opening it migrates an older
    home's ``anomaly.json``. A damaged file is set aside and replaced by an empty one, and
    ``problem`` says so in words (the caller warns)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / DB_FILE
        self.problem: str | None = None
        self.upserts: list[tuple[bytes, str]] = []
        self.deletes: list[bytes] = []
        try:
            self.db = self._open()
        except Exception as exc:
            if not _is_damage(exc):
                raise
            self._set_aside(exc)
        self._migrate()

    def _open(self) -> Any:
        import sqlite3
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            # Findings protect snapshots: a commit is durable (one WAL fsync per backup).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if db.execute("PRAGMA user_version").fetchone()[0] != _DB_VERSION:
                db.executescript(_DB_SCHEMA)
                db.execute(f"PRAGMA user_version = {_DB_VERSION}")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, exc: BaseException) -> None:
        """The file is damaged: keep it for a person, start an empty one, say so."""
        with contextlib.suppress(Exception):
            self.db.close()
        aside = self.path.with_name(DB_FILE + ".damaged")
        try:
            os.replace(self.path, aside)
            kept = f"kept as {aside}"
        except OSError:
            kept = "removed"
            self.path.unlink(missing_ok=True)
        for extra in ("-wal", "-shm"):
            self.path.with_name(DB_FILE + extra).unlink(missing_ok=True)
        self._say(f"{self.path} is damaged ({str(exc)[:200]}); {kept}. The anomaly model starts from "
                  "a fresh baseline: it relearns this node's usual changes over the next backups, "
                  "and its earlier findings (and what their alerts protected) are forgotten")
        self.db = self._open()

    def _say(self, problem: str) -> None:
        self.problem = problem if self.problem is None else f"{self.problem}; {problem}"

    def _guard(self, exc: BaseException) -> None:
        """After a failed statement: a damaged file is set aside; anything else is raised."""
        if not _is_damage(exc):
            raise exc
        self._set_aside(exc)

    # -- migration from anomaly.json (format 1) ------------------------------------------

    def _migrate(self) -> None:
        old = self.home / STATE_FILE
        if not old.exists():
            return
        state, problem = _load_json(self.home)
        if problem:
            self._say(problem)
            return
        try:
            self._import(state)
        except Exception as exc:
            self._guard(exc)
            self._import(state)
        with contextlib.suppress(FileNotFoundError):  # another process migrated it meanwhile
            os.replace(old, old.with_name(STATE_FILE + ".migrated"))

    def _import(self, state: AnomalyState) -> None:
        """Add what the old file holds that the database does not (idempotent: a crash
        between the commit and the rename imports nothing twice)."""
        db = self.db
        with _transaction(db):
            have = {r[0] for r in db.execute("SELECT snapshot FROM findings")}
            db.executemany("INSERT INTO findings (snapshot, series, verdict, standing, silent, detailed, body) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [_row(f) for f in state.findings if f.snapshot not in have])
            have = {r[0] for r in db.execute("SELECT key FROM series")}
            for k, v in state.series.items():
                if k not in have:
                    self._put_series(k, v)

    # -- findings and baselines ------------------------------------------------------------

    def _put_series(self, key: str, entry: dict[str, Any]) -> None:
        """A series' model from an ``AnomalyState`` entry ("baseline" base64, "pending",
        "exts"), in the caller's transaction."""
        blob = entry.get("baseline")
        self.db.execute("INSERT OR REPLACE INTO series (key, exts, baseline) VALUES (?, ?, ?)",
                        (key, json.dumps(list(entry.get("exts", []))),
                         base64.b64decode(blob) if isinstance(blob, str) and blob else None))
        self.db.execute("DELETE FROM learnt WHERE series = ?", (key,))
        self.db.executemany("INSERT INTO learnt (series, features) VALUES (?, ?)",
                            [(key, json.dumps(x)) for x in entry.get("pending", [])])

    def state(self) -> AnomalyState:
        """The whole state (for the commands; a backup reads only its own series)."""
        try:
            series_rows = [r[0] for r in self.db.execute("SELECT key FROM series")]
            bodies = [r[0] for r in self.db.execute("SELECT body FROM findings ORDER BY seq")]
        except Exception as exc:
            self._guard(exc)
            return AnomalyState()
        state = AnomalyState()
        bad = 0
        for key in series_rows:
            m = self.series_model(key)
            entry: dict[str, Any] = {"exts": m.exts}
            if m.baseline is not None:
                entry["baseline"] = base64.b64encode(m.baseline).decode()
            if m.pending:
                entry["pending"] = m.pending
            state.series[key] = entry
        for body in bodies:
            try:
                state.findings.append(_finding(json.loads(body)))
            except (ValueError, TypeError, RecursionError):
                bad += 1
        if bad:
            self._say(f"{bad} record(s) of {self.path} are unreadable and left out")
        return state

    def series_model(self, key: str) -> SeriesModel:
        """One series' model (empty when it has none)."""
        try:
            row = self.db.execute("SELECT exts, baseline FROM series WHERE key = ?", (key,)).fetchone()
            pending = [r[0] for r in self.db.execute("SELECT features FROM learnt WHERE series = ? ORDER BY seq",
                                                     (key,))]
        except Exception as exc:
            self._guard(exc)
            return SeriesModel()
        if row is None:
            return SeriesModel()
        try:
            exts = json.loads(row[0])
            rows = [json.loads(x) for x in pending]
            if not (isinstance(exts, list) and all(isinstance(x, dict) for x in rows)):
                raise ValueError("not a list")
        except ValueError:
            self._say(f"the model of series {key} in {self.path} is unreadable: it starts afresh")
            return SeriesModel()
        return SeriesModel(row[1], rows, [str(x) for x in exts])

    def reported(self, key: str) -> dict[str, str]:
        """Silent corruption reported before in a series: path -> content digest (hex)."""
        out: dict[str, str] = {}
        try:
            rows = list(self.db.execute("SELECT body FROM findings WHERE series = ? AND silent = 1 ORDER BY seq",
                                        (key,)))
        except Exception as exc:
            self._guard(exc)
            return out
        for (body,) in rows:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                digests = json.loads(body).get("silent_digests") or {}
                out.update({str(k): str(v) for k, v in digests.items()})
        return out

    def record(self, f: Finding, key: str, exts: list[str], learnt: dict[str, float] | None = None,
               baseline: bytes | None = None, volume: Volume | None = None) -> None:
        """One backup's outcome in one transaction: its finding (and the bounds), its
        series' model (``baseline``: the blob written whole, what was learnt since
        forgotten; else ``learnt``, one more snapshot's features, appended), the probes
        gathered, its volume."""
        args = (f, key, exts, learnt, baseline, volume)
        try:
            self._record(*args)
        except Exception as exc:
            self._guard(exc)  # damaged: on a fresh file, the finding is not lost
            self._record(*args)
        self.upserts, self.deletes = [], []

    def _record(self, f: Finding, key: str, exts: list[str], learnt: dict[str, float] | None,
                baseline: bytes | None, volume: Volume | None) -> None:
        db = self.db
        with _transaction(db):
            db.executemany("DELETE FROM probes WHERE path = ?", [(p,) for p in self.deletes])
            db.executemany("INSERT OR REPLACE INTO probes (path, probe) VALUES (?, ?)", self.upserts)
            db.execute("INSERT INTO findings (snapshot, series, verdict, standing, silent, detailed, body) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", _row(f))
            self._bound(f.verdict)
            if baseline is not None:
                db.execute("INSERT OR REPLACE INTO series (key, exts, baseline) VALUES (?, ?, ?)",
                           (key, json.dumps(exts), baseline))
                db.execute("DELETE FROM learnt WHERE series = ?", (key,))
            else:
                db.execute("INSERT INTO series (key, exts) VALUES (?, ?) "
                           "ON CONFLICT (key) DO UPDATE SET exts = excluded.exts", (key, json.dumps(exts)))
                if learnt is not None:
                    db.execute("INSERT INTO learnt (series, features) VALUES (?, ?)",
                               (key, json.dumps(learnt)))
            if volume is not None:
                self._add_volume(volume)

    def _bound(self, added: str) -> None:
        """``AnomalyState.add`` and ``compact`` on the table: findings older than the last
        DETAILED lose their numbers (not alerts, not silent corruption); the oldest ok
        findings past MAX_OK and other findings past MAX_FINDINGS go, never a standing alert.
        ``added``: the verdict of the finding just added (only its kind can be over)."""
        db = self.db
        edge = db.execute("SELECT seq FROM findings ORDER BY seq DESC LIMIT 1 OFFSET ?", (DETAILED,)).fetchone()
        if edge is not None:
            rows = list(db.execute("SELECT seq, body FROM findings WHERE detailed = 1 AND verdict != 'alert' "
                                   "AND silent = 0 AND seq <= ?", (edge[0],)))
            for seq, body in rows:
                obj = json.loads(body)
                obj["details"], obj["files"], obj["features"] = {}, [], {}
                db.execute("UPDATE findings SET body = ?, detailed = 0 WHERE seq = ?",
                           (json.dumps(obj, separators=(",", ":"), allow_nan=False), seq))
        if added == "ok":
            edge = db.execute("SELECT seq FROM findings WHERE verdict = 'ok' ORDER BY seq DESC LIMIT 1 OFFSET ?",
                              (MAX_OK,)).fetchone()
            if edge is not None:
                db.execute("DELETE FROM findings WHERE verdict = 'ok' AND seq <= ?", (edge[0],))
            return
        (others,) = db.execute("SELECT COUNT(*) FROM findings WHERE verdict != 'ok'").fetchone()
        if others > MAX_FINDINGS:
            db.execute("DELETE FROM findings WHERE seq IN (SELECT seq FROM findings WHERE verdict != 'ok' "
                       "AND standing = 0 ORDER BY seq LIMIT ?)", (others - MAX_FINDINGS,))

    def update(self, f: Finding, key: str | None = None, entry: dict[str, Any] | None = None) -> None:
        """Rewrite one finding (the newest of its snapshot), and a series' model (ack)."""
        snapshot, _, verdict, standing, silent, detailed, body = _row(f)
        db = self.db
        with _transaction(db):
            db.execute("UPDATE findings SET verdict = ?, standing = ?, silent = ?, detailed = ?, body = ? "
                       "WHERE seq = (SELECT MAX(seq) FROM findings WHERE snapshot = ?)",
                       (verdict, standing, silent, detailed, body, snapshot))
            if key is not None and entry is not None:
                self._put_series(key, entry)

    def replace(self, state: AnomalyState) -> None:
        """Make the findings and baselines those of ``state`` (bounded first)."""
        state.compact()
        db = self.db
        with _transaction(db):
            db.execute("DELETE FROM findings")
            db.execute("DELETE FROM series")
            db.execute("DELETE FROM learnt")
            db.executemany("INSERT INTO findings (snapshot, series, verdict, standing, silent, detailed, body) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", [_row(f) for f in state.findings])
            for k, v in state.series.items():
                self._put_series(k, v)

    # -- probes and volumes ------------------------------------------------------------------

    def add_volume(self, v: Volume) -> None:
        import sqlite3
        with contextlib.suppress(sqlite3.DatabaseError):
            self._add_volume(v)

    def _add_volume(self, v: Volume) -> None:
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

    def get_many(self, paths: list[bytes]) -> dict[bytes, list[Any]]:
        """The kept probes of ``paths`` (those that have one), in a few queries: a backup
        that deleted many files looks them up at once, not one query per file."""
        import sqlite3
        out: dict[bytes, list[Any]] = {}
        for i in range(0, len(paths), 500):  # under SQLite's bound on parameters
            part = paths[i:i + 500]
            try:
                rows = self.db.execute(f"SELECT path, probe FROM probes WHERE path IN ({','.join('?' * len(part))})",
                                       part).fetchall()
            except sqlite3.DatabaseError:
                return out
            for path, rec in rows:
                with contextlib.suppress(ValueError):
                    out[bytes(path)] = json.loads(rec)
        return out

    def flush(self) -> None:
        """Write the probes gathered (``record`` does it with the finding)."""
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
    return home / DB_FILE


def _load_json(home: Path) -> tuple[AnomalyState, str | None]:
    """An older home's ``anomaly.json`` and, when it could not be used, why in words (then
    a fresh state, and the damaged file kept aside for a person to look at)."""
    path = home / STATE_FILE
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


def load(home: Path) -> tuple[AnomalyState, str | None]:
    """The whole state in ``home`` and, when some of it could not be used, why in words.
    A home where the model never ran has none (and a read-only command creates none)."""
    if not (home / DB_FILE).exists() and not (home / STATE_FILE).exists():
        return AnomalyState(), None
    db = AnomalyDB(home)
    try:
        return db.state(), db.problem
    finally:
        db.close()


def save(home: Path, state: AnomalyState) -> None:
    """Replace the whole state (tests, tools; a backup records only its own finding)."""
    db = AnomalyDB(home)
    try:
        db.replace(state)
    finally:
        db.close()

__all__ = [
    "MAX_DETAIL_FILES",
    "AnomalyDB",
    "AnomalyState",
    "Finding",
    "Series",
    "SeriesModel",
    "Volume",
    "key_of",
    "load",
    "save",
    "series_key",
    "state_path",
]
