"""The share ledger: where every share of this node's packs went, and what is still local.

Role: the durable record behind "tell the truth about where the data is". A share row is
written only after its holder acknowledged the PUT (the holder checks the share against
its hash and root before it answers), with the share root recorded at upload, so every
later GET or audit is checked against what was sent. ``mesh.db`` is sqlite, WAL,
``synchronous=FULL``: losing a committed row would lose track of data.

Invariants:
- A pack is *remote-only* (its local copy dropped) only after at least ``n`` distinct
  shares of it were acknowledged; the local copy is dropped after the row says so.
- Rows are never rewritten by a peer's word alone: ``forget`` is called when this node
  decided a holder lost a share (missing or corrupt on a check or a restore).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from corestate.node.core.holders import HolderRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    pack BLOB NOT NULL, idx INTEGER NOT NULL, peer TEXT NOT NULL, root BLOB NOT NULL,
    size INTEGER NOT NULL, time_ns INTEGER NOT NULL,
    PRIMARY KEY (pack, idx, peer)
);
-- what one holder keeps for us (a storage target's quota is checked on every PUT)
CREATE INDEX IF NOT EXISTS shares_by_peer ON shares (peer, size);
CREATE TABLE IF NOT EXISTS coded (
    pack BLOB PRIMARY KEY, k INTEGER NOT NULL, n INTEGER NOT NULL, size INTEGER NOT NULL,
    local INTEGER NOT NULL,  -- 1 while this node keeps a local copy
    owner TEXT NOT NULL DEFAULT ''  -- the PeerID holders filed the shares under; '' = this identity
);
CREATE TABLE IF NOT EXISTS holders (  -- each holder's standing (node/core/holders.py)
    peer TEXT PRIMARY KEY, alpha REAL NOT NULL, beta REAL NOT NULL, passed INTEGER NOT NULL,
    failed INTEGER NOT NULL, last_seen REAL,  -- wall-clock seconds of its last answer
    evicted INTEGER NOT NULL, lost INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB);
CREATE TABLE IF NOT EXISTS bad (  -- shares whose last audit failed (not counted until repaired)
    pack BLOB NOT NULL, idx INTEGER NOT NULL, peer TEXT NOT NULL,
    PRIMARY KEY (pack, idx, peer)
);
CREATE TABLE IF NOT EXISTS doomed (  -- shares of deleted packs a holder has not yet deleted
    pack BLOB NOT NULL, idx INTEGER NOT NULL, peer TEXT NOT NULL,
    PRIMARY KEY (pack, idx, peer)
);
"""


@dataclass(frozen=True, slots=True)
class ShareRow:
    pack: bytes
    index: int
    peer: str
    root: bytes
    size: int


@dataclass(frozen=True, slots=True)
class CodedPack:
    pack: bytes
    k: int
    n: int
    size: int
    local: bool
    shares: tuple[ShareRow, ...]
    owner: str = ""

    @property
    def placed(self) -> int:
        """Distinct share indexes acknowledged by some holder."""
        return len({s.index for s in self.shares})


class Ledger:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(coded)")}
        if "owner" not in cols:  # a mesh.db from before owners were recorded
            self.db.execute("ALTER TABLE coded ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def begin_pack(self, pack: bytes, k: int, n: int, size: int, owner: str = "") -> None:
        """Note that ``pack`` is being coded with (k, n); keeps earlier share rows when the
        parameters are unchanged (a retry tops up a degraded pack)."""
        with self._lock:
            row = self.db.execute("SELECT k, n FROM coded WHERE pack = ?", (pack,)).fetchone()
            self.db.execute("BEGIN")
            if row is not None and tuple(row) != (k, n):
                # New parameters make new shares: the old ones no longer combine with them.
                self.db.execute("DELETE FROM shares WHERE pack = ?", (pack,))
            self.db.execute(
                "INSERT INTO coded(pack, k, n, size, local, owner) VALUES (?, ?, ?, ?, 1, ?) "
                "ON CONFLICT(pack) DO UPDATE SET k = excluded.k, n = excluded.n, "
                "size = excluded.size, local = 1, owner = excluded.owner", (pack, k, n, size, owner))
            self.db.execute("COMMIT")

    def record_share(self, pack: bytes, index: int, peer: str, root: bytes, size: int) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO shares VALUES (?, ?, ?, ?, ?, ?)",
                (pack, index, peer, root, size, time.time_ns()))
            self.db.execute("DELETE FROM bad WHERE pack = ? AND idx = ? AND peer = ?", (pack, index, peer))

    def forget(self, pack: bytes, index: int, peer: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM shares WHERE pack = ? AND idx = ? AND peer = ?",
                            (pack, index, peer))
            self.db.execute("DELETE FROM bad WHERE pack = ? AND idx = ? AND peer = ?", (pack, index, peer))

    def mark(self, failed: Iterable[tuple[bytes, int, str]], passed: Iterable[tuple[bytes, int, str]]) -> None:
        """What the last audit of each share said: ``failed`` ones do not count (health)
        until repair replaces them or they pass again."""
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO bad VALUES (?, ?, ?)", list(failed))
            self.db.executemany("DELETE FROM bad WHERE pack = ? AND idx = ? AND peer = ?", list(passed))
            self.db.execute("COMMIT")

    def bad(self) -> set[tuple[bytes, int, str]]:
        with self._lock:
            return {(bytes(p), int(i), str(peer)) for p, i, peer in self.db.execute("SELECT pack, idx, peer FROM bad")}

    def set_local(self, pack: bytes, local: bool) -> None:
        with self._lock:
            self.db.execute("UPDATE coded SET local = ? WHERE pack = ?", (int(local), pack))

    def get(self, pack: bytes) -> CodedPack | None:
        with self._lock:
            row = self.db.execute("SELECT k, n, size, local, owner FROM coded WHERE pack = ?", (pack,)).fetchone()
            if row is None:
                return None
            shares = self.db.execute(
                "SELECT pack, idx, peer, root, size FROM shares WHERE pack = ? ORDER BY idx", (pack,)).fetchall()
        return CodedPack(pack, row[0], row[1], row[2], bool(row[3]), tuple(ShareRow(*s) for s in shares), row[4])

    def all(self) -> dict[bytes, CodedPack]:
        with self._lock:
            coded = self.db.execute("SELECT pack, k, n, size, local, owner FROM coded").fetchall()
            rows = self.db.execute("SELECT pack, idx, peer, root, size FROM shares").fetchall()
        by_pack: dict[bytes, list[ShareRow]] = {}
        for r in rows:
            by_pack.setdefault(r[0], []).append(ShareRow(*r))
        return {p: CodedPack(p, k, n, size, bool(local), tuple(sorted(by_pack.get(p, []), key=lambda s: s.index)),
                             owner)
                for p, k, n, size, local, owner in coded}

    def has_any(self) -> bool:
        """Whether any pack was coded for the mesh, or a share waits to be deleted (repair has
        work to look at)."""
        with self._lock:
            return bool(self.db.execute("SELECT EXISTS(SELECT 1 FROM coded) OR EXISTS(SELECT 1 FROM doomed)")
                        .fetchone()[0])

    def remote_only(self) -> set[bytes]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT pack FROM coded WHERE local = 0")}

    def peers(self) -> dict[str, tuple[int, int]]:
        """Per holder: (shares, bytes) it holds for this node."""
        with self._lock:
            return {p: (c, b) for p, c, b in self.db.execute(
                "SELECT peer, COUNT(*), SUM(size) FROM shares GROUP BY peer")}

    def bytes_on(self, holder: str) -> int:
        """The share bytes ``holder`` keeps for this node (from the index, no table scan)."""
        with self._lock:
            (total,) = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM shares WHERE peer = ?",
                                       (holder,)).fetchone()
            return int(total)

    def doom(self, rows: Iterable[tuple[bytes, int, str]]) -> None:
        """Remember shares to delete on their holders (pack, index, holder) until one does."""
        with self._lock:
            self.db.executemany("INSERT OR IGNORE INTO doomed VALUES (?, ?, ?)", list(rows))

    def doomed(self) -> list[tuple[bytes, int, str]]:
        with self._lock:
            return [(bytes(p), int(i), str(peer)) for p, i, peer in
                    self.db.execute("SELECT pack, idx, peer FROM doomed ORDER BY peer, pack, idx")]

    def deleted(self, rows: Iterable[tuple[bytes, int, str]]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM doomed WHERE pack = ? AND idx = ? AND peer = ?", list(rows))

    # -- holders' standing (node/core/holders.py), saved after each audit or repair ------

    def holders(self) -> list[HolderRecord]:
        with self._lock:
            rows = self.db.execute("SELECT peer, alpha, beta, passed, failed, last_seen, evicted, lost "
                                   "FROM holders ORDER BY peer").fetchall()
        return [HolderRecord(p, a, b, pa, fa, ls, bool(ev), bool(lo)) for p, a, b, pa, fa, ls, ev, lo in rows]

    def save_holders(self, records: Iterable[HolderRecord]) -> None:
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO holders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.peer, r.alpha, r.beta, r.passed, r.failed, r.last_seen, int(r.evicted), int(r.lost))
                 for r in records])
            self.db.execute("COMMIT")

    def meta(self, key: str) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def drop_packs(self, packs: Iterable[bytes]) -> None:
        """Forget packs entirely (they left the repository)."""
        with self._lock:
            self.db.execute("BEGIN")
            for p in packs:
                self.db.execute("DELETE FROM shares WHERE pack = ?", (p,))
                self.db.execute("DELETE FROM coded WHERE pack = ?", (p,))
            self.db.execute("COMMIT")
