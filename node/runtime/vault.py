"""The share vault: shares this node holds for its peers, on disk, within quotas.

Role: the storage behind the share service (``/corestate/share/1``). Synchronous code; the
daemon calls it from worker threads, so every method is thread-safe.

Layout under ``root`` (``<home>/shares``):
- ``vault.db``: sqlite (WAL, ``synchronous=FULL``): one row per share held (sender, pack,
  index, size, root), the quotas of trusted senders, and the delete nonces already seen.
- ``<2 hex>/<64 hex>``: one file per share. The name is the BLAKE3 hash of the sender
  (length-prefixed), the pack id and the index: the holder derives it, nothing a peer sends
  ever becomes a path.

Invariants:
- Nothing is written for a share that fails ``erasure.share.verify_share`` against the
  pack id and index it is offered under (:class:`ShareRejected`).
- A share is written to a temporary name in its final folder, fsynced, renamed and the
  folder fsynced, and only then recorded: after ``put`` returns it survives a crash. On open,
  temporary files are removed and rows without a file (or with a file of the wrong size)
  and files without a row are dropped, so the rows and the files agree.
- Every read is verified against the root recorded at ``put``; a share that rotted on disk
  is dropped and reported missing (:class:`ShareNotFound`), so audits and repair see it.
- Quotas: a trusted sender (``set_quota``) has its own quota; every other sender draws on
  one shared pool of ``global_quota`` bytes. Bytes of writes in flight are reserved, so
  concurrent puts cannot overshoot a quota.
- A delete nonce is accepted once per sender, durably: a replay is refused after a restart.
- Operations on one share (same sender, pack and index) run one at a time.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from blake3 import blake3
from corestate.erasure.errors import CorruptShare
from corestate.erasure.rs import BytesLike
from corestate.erasure.share import PACK_ID_SIZE, verify_share
from corestate.kernel.state import write_atomic
from corestate.node.errors import (
    QuotaExceeded,
    ShareNotFound,
    ShareRejected,
    StoreError,
    StoreFull,
)

_TMP = ".tmp-"
_POOL = ""  # the reservation account of senders without a quota of their own
_HEX = frozenset("0123456789abcdef")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    name TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    pack BLOB NOT NULL,
    idx INTEGER NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shares_by_sender ON shares (sender);
CREATE TABLE IF NOT EXISTS quotas (
    sender TEXT PRIMARY KEY,
    quota INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonces (
    sender TEXT NOT NULL,
    nonce BLOB NOT NULL,
    PRIMARY KEY (sender, nonce)
) WITHOUT ROWID;
"""


def _io_error(exc: OSError, where: Path) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(str(where))
    return StoreError(f"share vault I/O error at {where}: {exc.strerror}", retryable=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_key(pack: bytes, index: object) -> bool:
    return (
        len(pack) == PACK_ID_SIZE
        and isinstance(index, int)
        and not isinstance(index, bool)
        and 0 <= index <= 255
    )


def _is_name(s: str) -> bool:
    return len(s) == 64 and set(s) <= _HEX


class ShareVault:
    """Shares held for peers under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: Path, *, global_quota: int = 256 << 20) -> None:
        self.root = Path(root)
        self.global_quota = global_quota
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._reserved: Counter[str] = Counter()
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _io_error(exc, self.root)
        db = sqlite3.connect(
            self.root / "vault.db", check_same_thread=False, isolation_level=None
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a lost commit would forget a share the sender was told is stored, or
            # let a delete nonce be replayed.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db
        #: What the consistency pass at open removed: temp files, rows, files.
        self.reconciled: dict[str, int] = self._reconcile()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> ShareVault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the share vault is closed")
        return self._db

    def _reconcile(self) -> dict[str, int]:
        temps = 0
        files: dict[str, int] = {}
        for sub in os.scandir(self.root):
            if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2
                    and set(sub.name) <= _HEX):
                continue
            for e in os.scandir(sub.path):
                if e.name.startswith(_TMP):
                    os.unlink(e.path)
                    temps += 1
                elif _is_name(e.name) and e.name[:2] == sub.name and e.is_file(
                    follow_symlinks=False
                ):
                    files[e.name] = e.stat(follow_symlinks=False).st_size
        db = self._conn()
        rows_dropped = files_dropped = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, size in db.execute("SELECT name, size FROM shares").fetchall():
                on_disk = files.pop(name, None)
                if on_disk == size:
                    continue
                db.execute("DELETE FROM shares WHERE name = ?", (name,))
                rows_dropped += 1
                if on_disk is not None:
                    files[name] = on_disk  # a file of the wrong size goes too
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for name in files:
            self._path(name).unlink(missing_ok=True)
            files_dropped += 1
        return {"temp_files": temps, "rows": rows_dropped, "files": files_dropped}

    # -- names and accounting -------------------------------------------------------------

    @staticmethod
    def _name(sender: str, pack: bytes, index: int) -> str:
        s = sender.encode("utf-8", "surrogatepass")
        h = blake3(len(s).to_bytes(4, "big"))
        h.update(s)
        h.update(pack)
        h.update(bytes((index,)))
        return h.hexdigest()

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def _has_quota(self, db: sqlite3.Connection, sender: str) -> int | None:
        row = db.execute("SELECT quota FROM quotas WHERE sender = ?", (sender,)).fetchone()
        return None if row is None else int(row[0])

    def _used(self, db: sqlite3.Connection, sender: str) -> int:
        row = db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM shares WHERE sender = ?", (sender,)
        ).fetchone()
        return int(row[0])

    def _account_and_left(self, db: sqlite3.Connection, sender: str) -> tuple[str, int]:
        quota = self._has_quota(db, sender)
        if quota is not None:
            left = quota - self._used(db, sender) - self._reserved[sender]
            return sender, max(0, left)
        pooled = db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM shares"
            " WHERE sender NOT IN (SELECT sender FROM quotas)"
        ).fetchone()[0]
        return _POOL, max(0, self.global_quota - int(pooled) - self._reserved[_POOL])

    def _acquire(self, name: str) -> sqlite3.Connection:
        """Wait until no other operation works on share ``name``, then claim it (lock held)."""
        while name in self._busy:
            self._cond.wait()
        db = self._conn()
        self._busy.add(name)
        return db

    def _release(self, name: str) -> None:
        self._busy.discard(name)
        self._cond.notify_all()

    # -- quotas ---------------------------------------------------------------------------

    def set_quota(self, sender: str, quota: int | None) -> None:
        """Give a trusted ``sender`` its own quota; None puts it back in the shared pool."""
        if quota is not None and quota < 0:
            raise ValueError(f"quota must be >= 0, got {quota}")
        with self._cond:
            db = self._conn()
            if quota is None:
                db.execute("DELETE FROM quotas WHERE sender = ?", (sender,))
            else:
                db.execute(
                    "INSERT INTO quotas (sender, quota) VALUES (?, ?)"
                    " ON CONFLICT (sender) DO UPDATE SET quota = excluded.quota",
                    (sender, quota),
                )

    def quota_senders(self) -> list[str]:
        """The senders that have a quota of their own."""
        with self._cond:
            return [str(r[0]) for r in self._conn().execute("SELECT sender FROM quotas")]

    def used(self, sender: str) -> int:
        """Bytes held for ``sender``."""
        with self._cond:
            return self._used(self._conn(), sender)

    def quota_left(self, sender: str) -> int:
        """Bytes ``sender`` may still store: its own quota, or what is left of the pool."""
        with self._cond:
            return self._account_and_left(self._conn(), sender)[1]

    # -- shares ---------------------------------------------------------------------------

    def put(self, sender: str, pack: bytes, index: int, share: BytesLike) -> None:
        """Verify and durably store ``share`` for ``sender``; the same share again is a no-op.

        Raises :class:`ShareRejected` (verification failed; nothing written),
        :class:`QuotaExceeded`, or :class:`StoreFull` / :class:`StoreError` on I/O errors.
        """
        pack = bytes(pack)
        if not _valid_key(pack, index):
            raise ShareRejected(pack, index if isinstance(index, int) else -1,
                                "pack id must be 32 bytes and index in 0..255")
        size = len(share)
        name = self._name(sender, pack, index)
        with self._cond:
            db = self._acquire(name)
            try:
                row = db.execute(
                    "SELECT size, root FROM shares WHERE name = ?", (name,)
                ).fetchone()
                need = size - (int(row[0]) if row else 0)
                account, left = self._account_and_left(db, sender)
                if need > left:
                    raise QuotaExceeded(sender, need, left)
                reserved = max(0, need)
                self._reserved[account] += reserved
            except BaseException:
                self._release(name)
                raise
        stored = False
        try:
            try:
                hdr = verify_share(share, pack_id=pack, index=index)
            except CorruptShare as exc:
                raise ShareRejected(pack, index, exc.reason)
            path = self._path(name)
            if row is not None and bytes(row[1]) == hdr.root and self._size_on_disk(path) == size:
                return  # already held: idempotent
            self._write(path, share)
            stored = True
        finally:
            with self._cond:
                self._reserved[account] -= reserved
                try:
                    if stored:
                        self._conn().execute(
                            "INSERT INTO shares (name, sender, pack, idx, size, root)"
                            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                            " size = excluded.size, root = excluded.root",
                            (name, sender, pack, index, size, hdr.root),
                        )
                finally:
                    self._release(name)

    @staticmethod
    def _size_on_disk(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return -1

    def _write(self, final: Path, data: BytesLike) -> None:
        try:
            try:
                final.parent.mkdir(mode=0o700)
                _fsync_dir(self.root)
            except FileExistsError:
                pass
            write_atomic(final, data, tmp_prefix=_TMP)
        except OSError as exc:
            raise _io_error(exc, self.root)

    def get(
        self, sender: str, pack: bytes, index: int, offset: int = 0, length: int = -1
    ) -> bytes:
        """Bytes ``offset .. offset+length`` of a share (``length`` -1: to the end).

        The whole share is verified against the root recorded at ``put`` first; a share that
        rotted on disk is dropped and reported as :class:`ShareNotFound`.
        """
        pack = bytes(pack)
        if offset < 0 or length < -1:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if not _valid_key(pack, index):
            raise ShareNotFound(pack, index if isinstance(index, int) else -1)
        name = self._name(sender, pack, index)
        with self._cond:
            db = self._acquire(name)
            try:
                row = db.execute("SELECT root FROM shares WHERE name = ?", (name,)).fetchone()
            except BaseException:
                self._release(name)
                raise
        reason = ""
        try:
            if row is None:
                raise ShareNotFound(pack, index)
            try:
                data = self._path(name).read_bytes()
                verify_share(data, root=bytes(row[0]), pack_id=pack, index=index)
            except FileNotFoundError:
                reason = "its file is gone"
            except CorruptShare as exc:
                reason = f"corrupt on disk ({exc.reason})"
            except OSError as exc:
                raise _io_error(exc, self.root)
            if reason:
                self._drop(name)
                raise ShareNotFound(pack, index, f"{reason}; dropped")
        finally:
            with self._cond:
                self._release(name)
        if offset == 0 and (length == -1 or length >= len(data)):
            return data
        end = len(data) if length == -1 else offset + length
        return data[offset:end]

    def _drop(self, name: str) -> bool:
        """Forget share ``name``: row first, then the file (the caller holds the name)."""
        with self._cond:
            cur = self._conn().execute("DELETE FROM shares WHERE name = ?", (name,))
        path = self._path(name)
        existed = cur.rowcount > 0 or path.exists()
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _io_error(exc, self.root)
        return existed

    def sizes(self, sender: str, items: Sequence[tuple[bytes, int]]) -> list[int]:
        """The size of each (pack, index) held for ``sender``, -1 when absent."""
        out: list[int] = []
        with self._cond:
            db = self._conn()
            for pack, index in items:
                pack = bytes(pack)
                if not _valid_key(pack, index):
                    out.append(-1)
                    continue
                row = db.execute(
                    "SELECT size FROM shares WHERE name = ?", (self._name(sender, pack, index),)
                ).fetchone()
                out.append(-1 if row is None else int(row[0]))
        return out

    def delete(self, sender: str, pack: bytes, index: int) -> bool:
        """Delete a share held for ``sender``; False when there was none.

        The caller checks the owner's signature and :meth:`check_nonce` first.
        """
        pack = bytes(pack)
        if not _valid_key(pack, index):
            return False
        name = self._name(sender, pack, index)
        with self._cond:
            self._acquire(name)
        try:
            return self._drop(name)
        finally:
            with self._cond:
                self._release(name)

    def check_nonce(self, sender: str, nonce: bytes) -> bool:
        """True the first time ``sender`` uses ``nonce`` (recorded durably), False on a replay."""
        with self._cond:
            cur = self._conn().execute(
                "INSERT OR IGNORE INTO nonces (sender, nonce) VALUES (?, ?)",
                (sender, bytes(nonce)),
            )
            return cur.rowcount == 1

    # -- statistics -----------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free bytes on the file system holding the vault (for unprivileged writers)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def stats(self) -> dict[str, int]:
        """Counts for status displays: shares, bytes, senders."""
        with self._cond:
            shares, total, senders = self._conn().execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT sender) FROM shares"
            ).fetchone()
        return {"shares": int(shares), "bytes": int(total), "senders": int(senders)}
