"""A persistent journal of changed paths under the protected roots (fanotify, else inotify).

Use (one consumer, the engine)::

    j = Journal(state_dir, roots); j.start()           # at daemon start
    new = j.mark()                                      # BEFORE taking the snapshot
    session = open_snapshot(...)
    cs = j.changes_since(prev)                          # AFTER: everything since prev, up to now
    if cs.paths is None: <walk all; cs.reason says why>
    else: <re-read cs.paths; reuse the rest from the previous snapshot>
    prev = new                                          # only once the backup is recorded
    j.stop()                                            # at daemon stop

The mark is taken before the snapshot and the change set read after it, so every change
that reached the snapshot is reported now, and a change racing the snapshot is reported
again next time (over-reporting is harmless; missing a change is not).

Backends: fanotify with filesystem marks and ``FAN_REPORT_DFID_NAME`` (needs
CAP_SYS_ADMIN; every event names a folder handle + entry name, resolved with
open_by_handle_at) where the kernel and privileges allow it; otherwise inotify with one
watch per folder, added recursively (a new folder's contents are reported as changed, since
they may have been written before its watch existed).

Reported paths are absolute, under a root: files created, written, changed in metadata,
deleted or renamed (both names), and folders likewise (a reported folder may have been
renamed, so its subtree should be walked). Names starting with ``.corestate-`` (our own
snapshot and scratch folders) are ignored.

"Full walk required" (``ChangeSet.paths is None``) whenever the journal cannot vouch for
the interval: no or unreadable token; the token comes from an earlier run (the daemon or
journal was down in between: every ``start`` makes a new run id, persisted); the kernel
queue overflowed (FAN_Q_OVERFLOW / IN_Q_OVERFLOW) or events could not be read or resolved
after the token; inotify ran out of watches (then every later change set until restart).

Storage: sqlite (WAL) at ``<state_dir>/journal.sqlite``: runs, and rows (seq, run, kind,
path) with kind ``path`` or ``gap``. A token is ``"<run id>:<seq>"``. Rows at or before the
token given to ``changes_since`` are pruned (one consumer). Plain threads, no trio.
"""

from __future__ import annotations

import errno
import os
import select
import sqlite3
import struct
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from corestate.kernel import linux
from corestate.kernel.changes import ChangeSet, Event
from corestate.kernel.errors import JournalError

IGNORED_PREFIX = ".corestate-"

# fanotify (<linux/fanotify.h>)
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_DFID_NAME = 0xC00
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100
FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_DELETE_SELF = 0x400
FAN_MOVE_SELF = 0x800
FAN_Q_OVERFLOW = 0x4000
FAN_ONDIR = 0x40000000
FAN_MASK = (
    FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_CREATE
    | FAN_DELETE | FAN_DELETE_SELF | FAN_MOVE_SELF | FAN_ONDIR
)  # fmt: skip
FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
_FAN_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_FAN_INFO_HDR = struct.Struct("=BBH")  # info_type, pad, len

# inotify (<sys/inotify.h>)
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
    | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
)  # fmt: skip
_IN_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len


def parse_fanotify(buf: bytes) -> list[tuple[int, list[tuple[int, bytes, bytes, bytes]]]]:
    """Decode fanotify events: (mask, [(info type, fsid, file_handle, name)]) each. Pure."""
    out = []
    pos = 0
    while pos + _FAN_META.size <= len(buf):
        event_len, _vers, _r, meta_len, mask, _fd, _pid = _FAN_META.unpack_from(buf, pos)
        if event_len < _FAN_META.size or pos + event_len > len(buf):
            break
        infos = []
        ipos = pos + meta_len
        end = pos + event_len
        while ipos + _FAN_INFO_HDR.size <= end:
            itype, _pad, ilen = _FAN_INFO_HDR.unpack_from(buf, ipos)
            if ilen < _FAN_INFO_HDR.size + 16 or ipos + ilen > end:
                break
            body = buf[ipos + _FAN_INFO_HDR.size : ipos + ilen]
            fsid = body[:8]
            hbytes = struct.unpack_from("=I", body, 8)[0]
            handle = body[8 : 16 + hbytes]
            name = b""
            if itype == FAN_EVENT_INFO_TYPE_DFID_NAME:
                name = body[16 + hbytes :].split(b"\0", 1)[0]
            infos.append((itype, fsid, handle, name))
            ipos += ilen
        out.append((mask, infos))
        pos += event_len
    return out


def parse_inotify(buf: bytes) -> list[tuple[int, int, bytes]]:
    """Decode inotify events: (wd, mask, name) each. Pure."""
    out = []
    pos = 0
    while pos + _IN_EVENT.size <= len(buf):
        wd, mask, _cookie, nlen = _IN_EVENT.unpack_from(buf, pos)
        name = buf[pos + _IN_EVENT.size : pos + _IN_EVENT.size + nlen].split(b"\0", 1)[0]
        out.append((wd, mask, name))
        pos += _IN_EVENT.size + nlen
    return out


def _ignored(p: Path) -> bool:
    return any(part.startswith(IGNORED_PREFIX) for part in p.parts)


class _Fanotify:
    name = "fanotify"

    def __init__(self, roots: list[Path]) -> None:
        self.fd = linux.fanotify_init(
            FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME, os.O_RDONLY | os.O_CLOEXEC
        )
        self.mounts: list[tuple[bytes, int]] = []  # (fsid, fd of a root on that file system)
        try:
            for r in roots:
                linux.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_MASK, r)
                rfd = os.open(r, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.mounts.append((linux.statfs_fsid(r), rfd))
        except BaseException:
            self.close()
            raise

    def read(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            if not buf:
                return out
            cache: dict[bytes, Path | None] = {}
            for mask, infos in parse_fanotify(buf):
                if mask & FAN_Q_OVERFLOW:
                    out.append(Event(None, "fanotify queue overflowed"))
                    continue
                for itype, fsid, handle, name in infos:
                    key = fsid + handle
                    if key not in cache:
                        cache[key] = self._resolve(fsid, handle)
                    base = cache[key]
                    if base is None:
                        # The folder is gone: its own deletion event names it through its
                        # parent, and nothing inside it exists any more.
                        continue
                    if itype == FAN_EVENT_INFO_TYPE_DFID_NAME and name not in (b"", b"."):
                        out.append(Event(base / os.fsdecode(name)))
                    else:
                        out.append(Event(base))

    def _resolve(self, fsid: bytes, handle: bytes) -> Path | None:
        fds = [fd for f, fd in self.mounts if f == fsid] or [fd for _f, fd in self.mounts]
        for mfd in fds:
            try:
                ofd = linux.open_by_handle_at(mfd, handle, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{ofd}")
            finally:
                os.close(ofd)
            if target.endswith(" (deleted)"):
                return None
            return Path(target)
        return None

    def close(self) -> None:
        for _f, rfd in self.mounts:
            os.close(rfd)
        self.mounts = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Inotify:
    name = "inotify"

    def __init__(self, roots: list[Path]) -> None:
        self.fd = linux.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wds: dict[int, Path] = {}
        self.degraded = ""
        try:
            for r in roots:
                self._watch_tree(r)
        except BaseException:
            self.close()
            raise

    def _watch_tree(self, top: Path, report: list[Event] | None = None) -> None:
        """Watch ``top`` and every folder below it; report what is found when asked."""
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                wd = linux.inotify_add_watch(self.fd, d, IN_MASK)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    self.degraded = "inotify watch limit reached (fs.inotify.max_user_watches)"
                    return
                continue  # vanished or unreadable: its parent's events still name it
            self.wds[wd] = d
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for ent in entries:
                if ent.name.startswith(IGNORED_PREFIX):
                    continue
                p = Path(ent.path)
                if report is not None:
                    report.append(Event(p))
                if ent.is_dir(follow_symlinks=False):
                    stack.append(p)

    def read(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            if not buf:
                return out
            for wd, mask, name in parse_inotify(buf):
                if mask & IN_Q_OVERFLOW:
                    out.append(Event(None, "inotify queue overflowed"))
                    continue
                if mask & IN_IGNORED:
                    self.wds.pop(wd, None)
                    continue
                base = self.wds.get(wd)
                if base is None:
                    continue
                p = base / os.fsdecode(name) if name else base
                if name.startswith(IGNORED_PREFIX.encode()):
                    continue
                out.append(Event(p))
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch_tree(p, out)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, roots TEXT NOT NULL, backend TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, kind TEXT NOT NULL, path TEXT
);
"""


class Journal:
    """Change journal over ``roots``; see the module docstring for the contract."""

    def __init__(
        self,
        state_dir: Path,
        roots: Iterable[Path],
        *,
        backend: str = "auto",
        thread: bool = True,
    ) -> None:
        if backend not in ("auto", "fanotify", "inotify"):
            raise ValueError(f"unknown journal backend {backend!r}")
        self.state_dir = state_dir
        self.roots = sorted({Path(os.path.abspath(r)) for r in roots})
        self._want = backend
        self._thread_wanted = thread
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._src: _Fanotify | _Inotify | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.run = ""
        self.backend = ""

    # --- lifecycle ---

    def start(self) -> None:
        with self._lock:
            if self._src is not None:
                return
            self.state_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.state_dir / "journal.sqlite", check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
            self._src = self._open_source()
            self.backend = self._src.name
            self.run = uuid.uuid4().hex
            with db:
                db.execute("DELETE FROM events")  # tokens of earlier runs are void anyway
                db.execute("DELETE FROM runs")
                db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?)",
                    (self.run, "\0".join(map(str, self.roots)), self.backend),
                )
                db.execute(
                    "INSERT INTO events (run, kind, path) VALUES (?, 'start', NULL)", (self.run,)
                )
            self._stop.clear()
            if self._thread_wanted:
                self._thread = threading.Thread(
                    target=self._loop, name="corestate-journal", daemon=True
                )
                self._thread.start()

    def _open_source(self) -> _Fanotify | _Inotify:
        if self._want in ("auto", "fanotify"):
            try:
                return _Fanotify(self.roots)
            except OSError as e:
                if self._want == "fanotify":
                    raise JournalError(f"fanotify is not available here: {e}")
        try:
            return _Inotify(self.roots)
        except OSError as e:
            raise JournalError(f"cannot watch {self.roots}: {e}", retryable=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._src is not None:
                try:
                    self.poll()
                finally:
                    self._src.close()
                    self._src = None
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Journal:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            src = self._src
            if src is None:
                return
            try:
                select.select([src.fd], [], [], 0.2)
                self.poll()
            except Exception as e:  # never die silently: record a gap, keep going
                self._record([Event(None, f"journal reader failed: {e!r}")])
                self._stop.wait(0.2)

    # --- events in ---

    def poll(self) -> None:
        """Read every event queued in the kernel now and persist it."""
        with self._lock:
            if self._src is None:
                return
            try:
                events = self._src.read()
            except OSError as e:
                events = [Event(None, f"cannot read kernel events: {e}")]
            self._record(events)

    def inject(self, events: Iterable[Event]) -> None:
        """Seam for tests and simulations: record events as if the kernel had sent them."""
        self._record(list(events))

    def _record(self, events: list[Event]) -> None:
        with self._lock:
            db = self._db
            if db is None or not events:
                return
            rows: dict[tuple[str, str | None], None] = {}
            for ev in events:
                if ev.path is None:
                    rows[("gap", ev.gap or "gap")] = None
                elif not _ignored(ev.path) and any(
                    ev.path == r or ev.path.is_relative_to(r) for r in self.roots
                ):
                    rows[("path", str(ev.path))] = None
            with db:
                db.executemany(
                    "INSERT INTO events (run, kind, path) VALUES (?, ?, ?)",
                    [(self.run, k, p) for k, p in rows],
                )

    # --- change sets out ---

    def _head(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT max(seq) FROM events WHERE run = ?", (self.run,)).fetchone()
        return int(row[0] or 0)

    def mark(self) -> str:
        """A token for "now": every change made before this call is at or before it."""
        self.poll()
        with self._lock:
            if self._db is None:
                raise JournalError("journal is not running")
            return f"{self.run}:{self._head(self._db)}"

    def changes_since(self, token: str | None) -> ChangeSet:
        """Paths changed after ``token`` up to now, or a full-walk-required answer."""
        self.poll()
        with self._lock:
            db = self._db
            if db is None:
                raise JournalError("journal is not running")
            head = self._head(db)
            new = f"{self.run}:{head}"
            run, _, seq_s = (token or "").partition(":")
            if not token or not seq_s.isdigit():
                return ChangeSet(None, new, "no journal token: first backup")
            if run != self.run:
                return ChangeSet(None, new, "the journal was not running for part of the interval")
            seq = int(seq_s)
            src = self._src
            degraded = getattr(src, "degraded", "")
            if degraded:
                return ChangeSet(None, new, degraded)
            gap = db.execute(
                "SELECT path FROM events WHERE run = ? AND seq > ? AND kind = 'gap' LIMIT 1",
                (self.run, seq),
            ).fetchone()
            if gap is not None:
                return ChangeSet(None, new, str(gap[0]))
            rows = db.execute(
                "SELECT DISTINCT path FROM events WHERE run = ? AND seq > ? AND seq <= ?"
                " AND kind = 'path'",
                (self.run, seq, head),
            ).fetchall()
            with db:
                db.execute("DELETE FROM events WHERE seq <= ? AND kind != 'start'", (seq,))
            return ChangeSet(frozenset(Path(r[0]) for r in rows), new)
