"""The share vault: shares this node holds for its peers, on disk, within quotas.

Role: the storage behind the share service (``/corestate/share/1``). Synchronous code; the
daemon calls it from worker threads, so every method is thread-safe.

Layout under ``root`` (``<home>/shares``):
- ``vault.db``: sqlite (WAL, ``synchronous=FULL``): one row per share held (sender, pack,
  index, size, root), the quotas of trusted senders, and the delete nonces already used.
- ``<2 hex>/<64 hex>``: one file per share. The name is the BLAKE3 hash of the sender
  (length-prefixed), the pack id and the index: the holder derives it, nothing a peer sends
  ever becomes a path.

Invariants:
- Nothing is kept for a share that fails ``erasure.share`` verification against the pack
  id and index it is offered under (:class:`ShareRejected`).
- A share arrives in a temporary file in its final folder (:meth:`ShareVault.incoming`,
  written piece by piece as the bytes come), is verified from that file, fsynced, renamed,
  the folder fsynced, and only then recorded: after ``commit`` returns it survives a
  crash. On open, temporary files are removed and rows without a file (or with a file of
  the wrong size) and files without a row are dropped, so the rows and the files agree.
- No share is ever held in memory whole: verification, reads and proofs go through the
  file in slices of ``SLICE`` bytes (one Merkle block at most besides).
- Every read is verified against the root recorded at ``put``; a share that rotted on disk
  is dropped and reported missing (:class:`ShareNotFound`), so audits and repair see it.
- Quotas: a trusted sender (``set_quota``) has its own quota; every other sender draws on
  one shared pool of ``global_quota`` bytes. A write is reserved (:meth:`reserve`) before
  its first byte is read, and the reservation is held until it is committed or given up,
  so concurrent puts cannot together overshoot a quota.
- Usage is counted incrementally (per sender, and for the pool), kept in step with the
  rows on every put, delete, drop and at open: a quota check costs O(1), never a scan.
- A delete nonce is recorded (durably, with the delete, in one transaction) only for a
  share that is held: a replay is refused after a restart, a delete of nothing leaves no
  trace. Nonces are bounded per sender and in total; the oldest go first (a replay needs
  the owner's own key on the stream, so a forgotten old nonce endangers nobody else).
- Operations on one share (same sender, pack and index) that change it run one at a time.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from blake3 import blake3
from corestate.erasure.errors import CorruptShare
from corestate.erasure.rs import BytesLike
from corestate.erasure.share import PACK_ID_SIZE, ShareHeader, scan_share
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
SLICE = 1 << 18  # bytes per read of a share file: verification, GET replies, proofs
MAX_NONCES_PER_SENDER = 10_000
MAX_NONCES = 1_000_000

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
CREATE TABLE IF NOT EXISTS delete_nonces (
    seq INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    nonce BLOB NOT NULL,
    UNIQUE (sender, nonce)
);
CREATE INDEX IF NOT EXISTS delete_nonces_by_sender ON delete_nonces (sender, seq);
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


def _slices(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """Bytes ``start .. end`` of an open file, ``SLICE`` at a time, in one reused buffer
    (a consumer must be done with a slice before it asks for the next)."""
    buf = memoryview(bytearray(min(SLICE, max(1, end - start))))
    pos = start
    while pos < end:
        n = os.preadv(fd, [buf[: min(len(buf), end - pos)]], pos)
        if n == 0:
            raise CorruptShare(None, f"the file ended at byte {pos} of {end}")
        yield buf[:n]
        pos += n


@dataclass(eq=False, slots=True)
class Reservation:
    """Room held for one incoming share until it is committed or released."""

    sender: str
    pack: bytes
    index: int
    size: int
    name: str
    account: str  # the sender, or the pool
    amount: int  # bytes reserved: the size, less what an earlier copy already takes
    released: bool = False


class Incoming:
    """A share being received: a temporary file in its final folder, written in order.

    Made by :meth:`ShareVault.incoming`; :meth:`ShareVault.commit` keeps it, :meth:`abort`
    (idempotent, also after a commit) removes what is left."""

    def __init__(self, res: Reservation, path: Path, fd: int) -> None:
        self.reservation = res
        self.path = path
        self._fd: int | None = fd
        self.written = 0

    def write(self, data: BytesLike) -> None:
        """Append bytes; more than the announced size is refused (nothing beyond it lands)."""
        res = self.reservation
        view = memoryview(data).cast("B")
        if self._fd is None:
            raise StoreError("this incoming share was closed")
        if self.written + len(view) > res.size:
            raise ShareRejected(res.pack, res.index, f"more than the {res.size} bytes announced")
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except OSError as exc:
            raise _io_error(exc, self.path.parent)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        self._close_fd()
        self.path.unlink(missing_ok=True)


class HeldShare:
    """A held share opened for reading: a range of it, verified before the first byte.

    ``size`` and ``digest`` (BLAKE3) describe the range; :meth:`read` returns it in order.
    The file is open, so a later delete or replacement does not change what is read."""

    def __init__(self, fd: int, offset: int, size: int, digest: bytes) -> None:
        self._fd: int | None = fd
        self._pos = offset
        self._end = offset + size
        self.size = size
        self.digest = digest

    def read(self, max_bytes: int = SLICE) -> bytes:
        """The next up to ``max_bytes`` bytes of the range; b"" at its end."""
        if self._fd is None:
            raise StoreError("this share was closed")
        n = min(max_bytes, self._end - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._pos)
        if not data:
            raise StoreError("a held share's file shrank while it was read", retryable=True)
        self._pos += len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HeldShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShareVault:
    """Shares held for peers under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: Path, *, global_quota: int = 256 << 20,
                 max_nonces_per_sender: int = MAX_NONCES_PER_SENDER,
                 max_nonces: int = MAX_NONCES) -> None:
        self.root = Path(root)
        self.global_quota = global_quota
        self.max_nonces_per_sender = max_nonces_per_sender
        self.max_nonces = max_nonces
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._reserved: Counter[str] = Counter()
        # Usage, kept in step with the share rows (see _count): bytes and shares per
        # sender, the pool's bytes, the quotas of trusted senders.
        self._used: Counter[str] = Counter()
        self._held: Counter[str] = Counter()
        self._pool_used = 0
        self._quotas: dict[str, int] = {}
        self._nonces: Counter[str] = Counter()
        self._nonce_total = 0
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
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db
        #: What the consistency pass at open removed: temp files, rows, files.
        self.reconciled: dict[str, int] = self._reconcile()
        self._load_counts(db)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Nonces of a vault from before they were ordered (and bounded) move over."""
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nonces'"
                      ).fetchone():
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO delete_nonces (sender, nonce)"
                       " SELECT sender, nonce FROM nonces")
            db.execute("DROP TABLE nonces")
            db.execute("COMMIT")

    def _load_counts(self, db: sqlite3.Connection) -> None:
        with self._cond:
            self._quotas = {str(s): int(q) for s, q in db.execute("SELECT sender, quota FROM quotas")}
            for sender, count, total in db.execute(
                "SELECT sender, COUNT(*), SUM(size) FROM shares GROUP BY sender"
            ):
                self._held[sender] = int(count)
                self._used[sender] = int(total)
                if sender not in self._quotas:
                    self._pool_used += int(total)
            for sender, count in db.execute(
                "SELECT sender, COUNT(*) FROM delete_nonces GROUP BY sender"
            ):
                self._nonces[sender] = int(count)
            self._nonce_total = sum(self._nonces.values())

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

    def _count(self, sender: str, delta_bytes: int, delta_shares: int) -> None:
        """Keep the usage counters in step with a row change (the caller holds the lock)."""
        self._used[sender] += delta_bytes
        self._held[sender] += delta_shares
        if self._held[sender] <= 0:
            del self._used[sender], self._held[sender]
        if sender not in self._quotas:
            self._pool_used += delta_bytes

    def _account_and_left(self, sender: str) -> tuple[str, int]:
        """O(1): counters only (the caller holds the lock)."""
        quota = self._quotas.get(sender)
        if quota is not None:
            return sender, max(0, quota - self._used[sender] - self._reserved[sender])
        return _POOL, max(0, self.global_quota - self._pool_used - self._reserved[_POOL])

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
            had = sender in self._quotas
            if quota is None:
                db.execute("DELETE FROM quotas WHERE sender = ?", (sender,))
                self._quotas.pop(sender, None)
                if had:
                    self._pool_used += self._used[sender]
            else:
                db.execute(
                    "INSERT INTO quotas (sender, quota) VALUES (?, ?)"
                    " ON CONFLICT (sender) DO UPDATE SET quota = excluded.quota",
                    (sender, quota),
                )
                self._quotas[sender] = quota
                if not had:
                    self._pool_used -= self._used[sender]

    def has_quota(self, sender: str) -> bool:
        """Does ``sender`` have a quota of its own (a trusted peer or member)?"""
        with self._cond:
            return sender in self._quotas

    def quota_senders(self) -> list[str]:
        """The senders that have a quota of their own."""
        with self._cond:
            return [str(r[0]) for r in self._conn().execute("SELECT sender FROM quotas")]

    def used(self, sender: str) -> int:
        """Bytes held for ``sender``."""
        with self._cond:
            self._conn()
            return self._used[sender]

    def quota_left(self, sender: str) -> int:
        """Bytes ``sender`` may still store: its own quota, or what is left of the pool."""
        with self._cond:
            self._conn()
            return self._account_and_left(sender)[1]

    # -- shares in --------------------------------------------------------------------------

    def reserve(self, sender: str, pack: bytes, index: int, size: int) -> Reservation:
        """Hold room for a share of ``size`` bytes before any of it is read.

        A share replacing one held under the same name needs only the difference. Raises
        :class:`QuotaExceeded` (nothing held) or :class:`ShareRejected` (a bad pack id or
        index). Give it back with :meth:`release` (a commit does it too).
        """
        pack = bytes(pack)
        if not _valid_key(pack, index) or size < 0:
            raise ShareRejected(pack, index if isinstance(index, int) else -1,
                                "pack id must be 32 bytes and index in 0..255")
        name = self._name(sender, pack, index)
        with self._cond:
            row = self._conn().execute("SELECT size FROM shares WHERE name = ?", (name,)).fetchone()
            need = size - (int(row[0]) if row else 0)
            account, left = self._account_and_left(sender)
            if need > left:
                raise QuotaExceeded(sender, need, left)
            amount = max(0, need)
            self._reserved[account] += amount
        return Reservation(sender, pack, index, size, name, account, amount)

    def release(self, res: Reservation) -> None:
        """Give a reservation's room back (idempotent)."""
        with self._cond:
            if not res.released:
                res.released = True
                self._reserved[res.account] -= res.amount

    def incoming(self, res: Reservation) -> Incoming:
        """A temporary file for the share ``res`` is held for, in its final folder."""
        final = self._path(res.name)
        tmp = final.with_name(f"{_TMP}{res.name[:16]}-{os.urandom(6).hex()}")
        try:
            try:
                final.parent.mkdir(mode=0o700)
                _fsync_dir(self.root)
            except FileExistsError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise _io_error(exc, self.root)
        return Incoming(res, tmp, fd)

    def commit(self, inc: Incoming) -> None:
        """Verify the received share from its file and keep it durably, or raise.

        The same share again (same root, same size) is a no-op. Raises
        :class:`ShareRejected` (nothing kept) or :class:`StoreError`; the reservation is
        released and the temporary file gone either way.
        """
        res = inc.reservation
        try:
            if inc.written != res.size:
                raise ShareRejected(res.pack, res.index,
                                    f"{inc.written} bytes arrived, {res.size} were announced")
            assert inc._fd is not None
            try:
                os.fsync(inc._fd)
            except OSError as exc:
                raise _io_error(exc, self.root)
            inc._close_fd()
            hdr = self._verify_file(inc.path, res)
            final = self._path(res.name)
            with self._cond:
                db = self._acquire(res.name)
            try:
                with self._cond:
                    row = db.execute(
                        "SELECT size, root FROM shares WHERE name = ?", (res.name,)
                    ).fetchone()
                if (row is not None and bytes(row[1]) == hdr.root
                        and self._size_on_disk(final) == res.size):
                    return  # already held: idempotent
                try:
                    os.replace(inc.path, final)
                    _fsync_dir(final.parent)
                except OSError as exc:
                    raise _io_error(exc, self.root)
                with self._cond:
                    db.execute(
                        "INSERT INTO shares (name, sender, pack, idx, size, root)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                        " size = excluded.size, root = excluded.root",
                        (res.name, res.sender, res.pack, res.index, res.size, hdr.root),
                    )
                    old = int(row[0]) if row is not None else 0
                    self._count(res.sender, res.size - old, 0 if row is not None else 1)
            finally:
                with self._cond:
                    self._release(res.name)
        finally:
            inc.abort()
            self.release(res)

    def _verify_file(self, path: Path, res: Reservation) -> ShareHeader:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _io_error(exc, self.root)
        try:
            hdr, _ = scan_share(_slices(fd, 0, res.size), pack_id=res.pack, index=res.index)
        except CorruptShare as exc:
            raise ShareRejected(res.pack, res.index, exc.reason)
        except OSError as exc:
            raise _io_error(exc, self.root)
        finally:
            os.close(fd)
        return hdr

    def put(self, sender: str, pack: bytes, index: int, share: BytesLike) -> None:
        """Verify and durably store ``share`` for ``sender``; the same share again is a no-op.

        Raises :class:`ShareRejected` (verification failed; nothing written),
        :class:`QuotaExceeded`, or :class:`StoreFull` / :class:`StoreError` on I/O errors.
        """
        res = self.reserve(sender, pack, index, len(share))
        try:
            inc = self.incoming(res)
            try:
                inc.write(share)
                self.commit(inc)
            finally:
                inc.abort()
        finally:
            self.release(res)

    @staticmethod
    def _size_on_disk(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return -1

    # -- shares out -----------------------------------------------------------------------

    def _open_held(self, sender: str, pack: bytes, index: int) -> tuple[str, bytes, int]:
        """(name, recorded root, open fd) of a held share, or ShareNotFound."""
        pack = bytes(pack)
        if not _valid_key(pack, index):
            raise ShareNotFound(pack, index if isinstance(index, int) else -1)
        name = self._name(sender, pack, index)
        with self._cond:
            self._acquire(name)
            try:
                row = self._conn().execute(
                    "SELECT root FROM shares WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise ShareNotFound(pack, index)
                try:
                    fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except FileNotFoundError:
                    fd = -1
                except OSError as exc:
                    raise _io_error(exc, self.root)
            finally:
                self._release(name)
        if fd < 0:
            self._drop_if(name, bytes(row[0]))
            raise ShareNotFound(pack, index, "its file is gone; dropped")
        return name, bytes(row[0]), fd

    def _rotten(self, name: str, root: bytes, pack: bytes, index: int,
                exc: CorruptShare) -> ShareNotFound:
        self._drop_if(name, root)
        return ShareNotFound(pack, index, f"corrupt on disk ({exc.reason}); dropped")

    def open_share(self, sender: str, pack: bytes, index: int, offset: int = 0,
                   length: int = -1) -> HeldShare:
        """Bytes ``offset .. offset+length`` of a share (``length`` -1: to the end), opened
        for reading in slices, with their size and BLAKE3.

        The whole share is verified against the root recorded at ``put`` first (reading
        it once, a slice at a time); a share that rotted on disk is dropped and reported
        as :class:`ShareNotFound`. The caller closes the result.
        """
        if offset < 0 or length < -1:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        pack = bytes(pack)
        name, root, fd = self._open_held(sender, pack, index)
        try:
            total = os.fstat(fd).st_size
            lo = min(offset, total)
            hi = total if length == -1 else min(total, offset + length)
            range_hash = blake3()
            pos = 0

            def hashed() -> Iterator[memoryview]:
                nonlocal pos
                for piece in _slices(fd, 0, total):
                    a, b = max(lo, pos), min(hi, pos + len(piece))
                    if a < b:
                        range_hash.update(piece[a - pos:b - pos])
                    pos += len(piece)
                    yield piece

            try:
                scan_share(hashed(), root=root, pack_id=pack, index=index)
            except CorruptShare as exc:
                raise self._rotten(name, root, pack, index, exc)
            return HeldShare(fd, lo, hi - lo, range_hash.digest())
        except BaseException:
            os.close(fd)
            raise

    def get(
        self, sender: str, pack: bytes, index: int, offset: int = 0, length: int = -1
    ) -> bytes:
        """Bytes ``offset .. offset+length`` of a share (``length`` -1: to the end), in
        memory: for small shares and tests; the share service streams :meth:`open_share`."""
        with self.open_share(sender, pack, index, offset, length) as held:
            parts = []
            while piece := held.read(SLICE):
                parts.append(piece)
        return b"".join(parts)

    def prove(self, sender: str, pack: bytes, index: int, block: int) -> bytes:
        """The proof of storage (``erasure.share.Proof`` bytes) of ``block`` of a share,
        made in one pass over its file, which is verified against the recorded root on
        the way. ShareNotFound as for reads; InvalidParameters for a block it lacks."""
        pack = bytes(pack)
        name, root, fd = self._open_held(sender, pack, index)
        try:
            try:
                _, proof = scan_share(_slices(fd, 0, os.fstat(fd).st_size), root=root,
                                      pack_id=pack, index=index, prove_block=block)
            except CorruptShare as exc:
                raise self._rotten(name, root, pack, index, exc)
        finally:
            os.close(fd)
        assert proof is not None
        return proof.to_bytes()

    def _drop_if(self, name: str, root: bytes) -> None:
        """Drop share ``name`` if it still has ``root`` (a replacement is left alone)."""
        with self._cond:
            self._acquire(name)
        try:
            with self._cond:
                row = self._conn().execute("SELECT root FROM shares WHERE name = ?",
                                           (name,)).fetchone()
            if row is not None and bytes(row[0]) == root:
                self._drop(name)
        finally:
            with self._cond:
                self._release(name)

    def _drop(self, name: str) -> bool:
        """Forget share ``name``: row first, then the file (the caller holds the name)."""
        with self._cond:
            db = self._conn()
            row = db.execute("SELECT sender, size FROM shares WHERE name = ?", (name,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM shares WHERE name = ?", (name,))
                self._count(row[0], -int(row[1]), -1)
        return self._unlink(name) or row is not None

    def _unlink(self, name: str) -> bool:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _io_error(exc, self.root)
        return True

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

    # -- deletes --------------------------------------------------------------------------

    def delete(self, sender: str, pack: bytes, index: int) -> bool:
        """Delete a share held for ``sender``; False when there was none (no nonce involved:
        the share service uses :meth:`delete_signed`)."""
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

    def delete_signed(self, sender: str, pack: bytes, index: int, nonce: bytes) -> str:
        """Act on a signed delete whose signature the caller checked: ``"deleted"``,
        ``"absent"`` (nothing held: no nonce is recorded) or ``"replay"`` (the nonce was
        used before; nothing changes). The nonce and the row go in one transaction."""
        pack = bytes(pack)
        if not _valid_key(pack, index):
            return "absent"
        name = self._name(sender, pack, index)
        with self._cond:
            db = self._acquire(name)
            try:
                row = db.execute("SELECT size FROM shares WHERE name = ?", (name,)).fetchone()
                if row is None:
                    return "absent"
                db.execute("BEGIN IMMEDIATE")
                try:
                    if not self._record_nonce(db, sender, bytes(nonce)):
                        db.execute("ROLLBACK")
                        return "replay"
                    db.execute("DELETE FROM shares WHERE name = ?", (name,))
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    self._load_nonce_counts(db)
                    raise
                self._count(sender, -int(row[0]), -1)
            finally:
                self._release(name)
        self._unlink(name)
        return "deleted"

    def _record_nonce(self, db: sqlite3.Connection, sender: str, nonce: bytes) -> bool:
        """Insert a nonce (in the caller's transaction) and trim the table to its bounds."""
        cur = db.execute("INSERT OR IGNORE INTO delete_nonces (sender, nonce) VALUES (?, ?)",
                         (sender, nonce))
        if cur.rowcount != 1:
            return False
        self._nonces[sender] += 1
        self._nonce_total += 1
        if self._nonces[sender] > self.max_nonces_per_sender:
            db.execute("DELETE FROM delete_nonces WHERE seq ="
                       " (SELECT MIN(seq) FROM delete_nonces WHERE sender = ?)", (sender,))
            self._nonces[sender] -= 1
            self._nonce_total -= 1
        if self._nonce_total > self.max_nonces:
            gone = db.execute("DELETE FROM delete_nonces WHERE seq ="
                              " (SELECT MIN(seq) FROM delete_nonces) RETURNING sender").fetchone()
            if gone is not None:
                self._nonces[gone[0]] -= 1
                self._nonce_total -= 1
        return True

    def _load_nonce_counts(self, db: sqlite3.Connection) -> None:
        self._nonces = Counter({s: int(c) for s, c in db.execute(
            "SELECT sender, COUNT(*) FROM delete_nonces GROUP BY sender")})
        self._nonce_total = sum(self._nonces.values())

    def check_nonce(self, sender: str, nonce: bytes) -> bool:
        """True the first time ``sender`` uses ``nonce`` (recorded durably), False on a replay."""
        with self._cond:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                fresh = self._record_nonce(db, sender, bytes(nonce))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._load_nonce_counts(db)
                raise
            return fresh

    # -- statistics -----------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free bytes on the file system holding the vault (for unprivileged writers)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def stats(self) -> dict[str, int]:
        """Counts for status displays: shares, bytes, senders (from the counters)."""
        with self._cond:
            self._conn()
            return {"shares": sum(self._held.values()), "bytes": sum(self._used.values()),
                    "senders": len(self._held)}
