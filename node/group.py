"""This node's group: membership ops and the signed catalog, durable in ``HOME/group.db``.

Role: the glue between the pure cores (``node.core.membership``, ``node.core.catalog``,
``node.core.sync``) and the node: it persists what they decide (sqlite, WAL,
``synchronous=FULL``: a lost commit could lose a placement record or an invite's use),
keeps the evaluated membership current, mints and redeems invites, and builds and applies
the sync messages (``protocol/group.py``). Synchronous and thread-safe (one lock); the
daemon calls it from threads or briefly from its event loop.

Invariants:
- Only ops and batches that verify are stored; ops of another group never are.
- Catalog batches are applied only from members and never from removed peers; a node
  writes only its own partition, in its current epoch (bumped after a recovery).
- An invite secret is stored hashed and works once, before it expires.
- A join saves nothing (no group id, no op) until the admin's answer proves, evaluated by
  the membership core under the group's own founding op, that this node is a member and
  the answering peer an admin; a group this node holds but is not a member of (a group it
  left, or leftovers of an older build) can always be dropped with ``leave``.
- Whoever registered in ``on_members`` hears of every change of the evaluated membership
  (members, roles, removals) at once, whichever path brought the ops: quotas follow it.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import cbor2
from corestate.node.core import catalog as cat
from corestate.node.core import membership as mem
from corestate.node.core import sync as csync
from corestate.protocol import cborguard
from corestate.protocol.keys import NodeKeys

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.protocol import group as gw

TOKEN_PREFIX = "csinv1."
ZERO = bytes(32)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB);
CREATE TABLE IF NOT EXISTS ops (id BLOB PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS authors (author TEXT PRIMARY KEY, epoch INTEGER, seq INTEGER, head BLOB);
CREATE TABLE IF NOT EXISTS batches (author TEXT, epoch INTEGER, seq_first INTEGER, seq_last INTEGER,
                                    id BLOB, raw BLOB, PRIMARY KEY (author, epoch, seq_first));
CREATE TABLE IF NOT EXISTS entries (author TEXT, key BLOB, seq INTEGER, value BLOB, hlc INTEGER,
                                    PRIMARY KEY (author, key));
CREATE TABLE IF NOT EXISTS forks (author TEXT, epoch INTEGER, seq INTEGER, kept BLOB, other BLOB, reason TEXT);
CREATE TABLE IF NOT EXISTS invites (secret BLOB PRIMARY KEY, role TEXT, expires_ms INTEGER, used_by TEXT);
"""



def _clock_offset_ms() -> int:
    """A test knob, for the chaos campaign (tests/chaos): ``CORESTATE_CLOCK_OFFSET`` (a
    duration such as "3d" or "-90m") shifts the wall clock this node stamps its membership
    ops and catalog entries with, to play a member whose clock is wrong. Read once, here:
    the only place the node reads wall time for HLC and catalog stamps. Unset in use."""
    raw = os.environ.get("CORESTATE_CLOCK_OFFSET", "").strip()
    if not raw:
        return 0
    sign = -1 if raw.startswith("-") else 1
    from corestate.node.home import parse_duration
    return sign * int(parse_duration(raw.lstrip("+-")) * 1000)


_CLOCK_OFFSET_MS = _clock_offset_ms()

class GroupError(CoreStateError):
    pass


class NotInGroup(GroupError):
    def __init__(self) -> None:
        super().__init__("this node is not in a group",
                         hint="`corestate group create NAME` starts one; `corestate group join TOKEN` joins one")


@dataclass(frozen=True, slots=True)
class Invite:
    group: bytes
    admin: str
    addrs: tuple[str, ...]
    secret: bytes
    role: str
    expires_ms: int

    def token(self) -> str:
        raw = cbor2.dumps([1, self.group, self.admin, list(self.addrs), self.secret, self.role,
                           self.expires_ms], canonical=True)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> Invite:
        bad = GroupError("that is not an invite token",
                         hint="paste the whole last line `corestate group invite` printed")
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX):
            raise bad
        try:
            body = token[len(TOKEN_PREFIX):]
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            obj = cbor2.loads(raw)
            if cborguard.problem(obj, len(raw)) is not None:  # str() below walks it all
                raise ValueError
            v, group, admin, addrs, secret, role, expires = obj
            if v != 1 or len(group) != 32 or len(secret) != 16 or role not in ("member", "admin"):
                raise ValueError
            return cls(bytes(group), str(admin), tuple(str(a) for a in addrs), bytes(secret),
                       role, int(expires))
        except (ValueError, TypeError, OverflowError, cbor2.CBORDecodeError):
            raise bad from None  # OverflowError: an infinite float as the expiry


class GroupNode:
    def __init__(self, path: Path, keys: NodeKeys) -> None:
        self.keys = keys
        self.me = keys.peer_id
        self._lock = threading.RLock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.ops: dict[bytes, mem.MemberOp] = {}
        for _id, raw in self.db.execute("SELECT id, raw FROM ops"):
            op = mem.decode_op(raw)
            self.ops[op.op_id] = op
        g = self._meta("group")
        self.group: bytes | None = bytes(g) if g else None
        self.catalog = cat.Catalog.load(
            self.db.execute("SELECT author, epoch, seq, head FROM authors").fetchall(),
            self.db.execute("SELECT author, epoch, seq_first, seq_last, id, raw FROM batches "
                            "ORDER BY author, epoch, seq_first").fetchall(),
            self.db.execute("SELECT author, key, seq, value, hlc FROM entries").fetchall(),
            self.db.execute("SELECT author, epoch, seq, kept, other, reason FROM forks").fetchall(),
        )
        # For each member that left (removed itself): what this replica held of its
        # partition when it learned of the leave, the most its own cut-off counts for.
        self._seen: dict[str, tuple[int, int]] = {}
        for k, v in self.db.execute("SELECT k, v FROM meta WHERE k LIKE 'left:%'"):
            e, q = cbor2.loads(v)
            self._seen[k[len("left:"):]] = (int(e), int(q))
        self.state: mem.GroupState | None = None
        # Called (no arguments, in the thread that changed it, under this object's lock)
        # whenever the evaluated membership changes; see the module invariants.
        self.on_members: list[Callable[[], None]] = []
        self._evaluate()
        self._retain()
        self._forget_removed()

    def close(self) -> None:
        self.db.close()

    # -- small helpers -----------------------------------------------------------------

    def _meta(self, k: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, k: str, v: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    @property
    def epoch(self) -> int:
        v = self._meta("epoch")
        return int.from_bytes(v, "big") if v else 0

    def set_epoch(self, epoch: int) -> None:
        with self._lock:
            self._set_meta("epoch", epoch.to_bytes(8, "big"))

    def _evaluate(self) -> None:
        before = self._view()
        self.state = None if self.group is None else mem.evaluate(self.ops.values(), self.group)
        self._tell(before)

    def _tell(self, before: tuple[frozenset[tuple[str, str]], frozenset[str]]) -> None:
        """Call the ``on_members`` listeners if the membership view moved from ``before``."""
        if self._view() != before:
            for fn in list(self.on_members):
                fn()

    def _view(self) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        """What others' trust depends on: members with their roles, and removed peers."""
        st = self.state
        if st is None or st.name is None:
            return frozenset(), frozenset()
        return frozenset(st.members.items()), st.removed

    @property
    def in_group(self) -> bool:
        return self.group is not None and self.state is not None and self.state.name is not None

    def require(self) -> mem.GroupState:
        if not self.in_group or self.state is None:
            raise NotInGroup()
        return self.state

    def is_member(self, peer: str) -> bool:
        return self.state is not None and peer in self.state.members

    def members(self) -> dict[str, str]:
        return dict(self.state.members) if self.state is not None else {}

    def removed(self) -> frozenset[str]:
        return self.state.removed if self.state is not None else frozenset()

    def _now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + _CLOCK_OFFSET_MS

    # -- membership --------------------------------------------------------------------

    def _store_ops(self, ops: Iterable[mem.MemberOp]) -> int:
        """Store the ops that verify, name this group and are worth keeping (see
        ``membership.retain``); returns how many were new. Ops of signers that never
        belonged are dropped before their signature is even checked: a page of ops arrives
        in canonical order, so an add comes before the ops of the peer it adds."""
        st = self.state
        before = self._view()
        allowed = set(st.members) | st.removed if st is not None else set()
        fresh: dict[bytes, mem.MemberOp] = {}
        for op in ops:
            if op.op_id in self.ops or op.op_id in fresh:
                continue
            if op.kind == "create":
                if op.op_id != self.group:
                    continue
            elif op.group != self.group or op.signer not in allowed:
                continue
            if not mem.verify_op(op):
                continue
            fresh[op.op_id] = op
            if op.kind in ("create", "add"):
                allowed.add(op.subject)
        if not fresh:
            return 0
        candidates = {**self.ops, **fresh}
        assert self.group is not None
        state = mem.evaluate(candidates.values(), self.group)
        keep = mem.retain(candidates.values(), state)
        if len(keep) != len(candidates):
            candidates = {i: op for i, op in candidates.items() if i in keep}
            state = mem.evaluate(candidates.values(), self.group)
        new = [op for i, op in fresh.items() if i in keep]
        gone = [(i,) for i in self.ops if i not in keep]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO ops VALUES (?, ?)",
                            [(op.op_id, mem.encode_op(op)) for op in new])
        self.db.executemany("DELETE FROM ops WHERE id = ?", gone)
        self.db.execute("COMMIT")
        self.ops, self.state = candidates, state
        self._forget_removed()
        self._tell(before)
        return len(new)

    def _retain(self) -> None:
        """Drop stored ops not worth keeping (a group.db written before ops were filtered)."""
        if self.state is None or self.group is None:
            return
        keep = mem.retain(self.ops.values(), self.state)
        gone = [(i,) for i in self.ops if i not in keep]
        if gone:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM ops WHERE id = ?", gone)
            self.db.execute("COMMIT")
            self.ops = {i: op for i, op in self.ops.items() if i in keep}
            self._evaluate()

    def cutoffs(self) -> dict[str, tuple[int, int]]:
        """For each removed member whose removal names ``upto``: how far its partition is
        kept (the latest point an effective removal of it names; a member that left counts
        only up to what this replica held when it learned of the leave)."""
        if self.state is None:
            return {}
        return mem.cutoffs(self.ops.values(), self.state, self._seen)

    def _forget_removed(self) -> None:
        """A removed member's partition is cut, on every replica, at the point its removal
        names (what it wrote while it belonged; dropped when no point is named), so
        replicas converge whichever order removal and batches came in."""
        if self.state is not None:
            for a in mem.self_removed(self.ops.values(), self.state) - self._seen.keys():
                head = self.catalog.head(a)
                self._seen[a] = (head[0], head[1]) if head else (0, 0)
                self._set_meta(f"left:{a}", cbor2.dumps(list(self._seen[a])))
        cuts = self.cutoffs()
        changed = []
        for a in self.removed():
            if self.catalog.head(a) is None:
                continue
            cut = cuts.get(a)
            done = self.catalog.truncate(a, *cut) if cut else self.catalog.forget(a)
            if done:
                changed.append(a)
        if changed:
            self._save(set(changed))  # a full rewrite of those authors' rows

    def _sign(self, **fields: object) -> mem.MemberOp:
        st = self.require()
        op = mem.sign_op(self.keys.signing_key, group=self.group, parents=st.heads,
                         hlc=self._now_ms(), **fields)
        self._store_ops([op])
        return op

    def create(self, name: str) -> bytes:
        with self._lock:
            if self.in_group:
                raise GroupError("this node is already in a group",
                                 hint="`corestate group leave` first; a node is in one group")
            op = mem.sign_op(self.keys.signing_key, kind="create", name=name, hlc=self._now_ms())
            self.group = op.op_id
            self._set_meta("group", op.op_id)
            self._store_ops([op])
            return op.op_id

    def remove(self, peer: str) -> mem.MemberOp:
        with self._lock:
            st = self.require()
            if peer not in st.members:
                raise GroupError(f"{peer} is not a member", hint="`corestate group members` lists them")
            before = set(st.members)
            head = self.catalog.head(peer)
            op = self._sign(kind="remove", subject=peer, upto=(head[0], head[1]) if head else (0, 0))
            assert self.state is not None
            if set(self.state.members) == before:
                reason = self.state.void.get(op.op_id, "it did not take effect")
                raise GroupError(f"the removal did not count: {reason}",
                                 hint="only admins remove members, and the last admin cannot be removed")
            return op

    def set_role(self, peer: str, role: str) -> mem.MemberOp:
        with self._lock:
            return self._sign(kind="promote" if role == "admin" else "demote", subject=peer)

    def leave(self) -> mem.MemberOp | None:
        """Leave the group: a signed removal of this node, or, when this node is not a
        member of the group it holds (it left already, was removed, or an older build
        saved a group it was never admitted to), drop that group here (returns None).
        Raises GroupError when the removal would not count (the last admin)."""
        with self._lock:
            if self.group is None:
                raise NotInGroup()
            st = self.state
            if st is None or st.name is None or self.me not in st.members:
                self._discard()
                return None
            head = self.catalog.head(self.me)
            op = mem.sign_op(self.keys.signing_key, group=self.group, parents=st.heads, hlc=self._now_ms(),
                             kind="remove", subject=self.me, upto=(head[0], head[1]) if head else (0, 0))
            # Evaluated before it is stored: an op that would not count is never kept.
            after = mem.evaluate([*self.ops.values(), op], self.group)
            if self.me in after.members:
                reason = after.void.get(op.op_id, "it did not take effect")
                raise GroupError(f"leaving did not count: {reason}",
                                 hint="the last admin cannot leave: `corestate group invite --admin` another first")
            self._store_ops([op])
            return op

    def _discard(self) -> None:
        """Forget the group held here: its ops, catalog and invites (the epoch stays: it
        numbers this node's own writes)."""
        self.db.execute("BEGIN")
        for table in ("ops", "authors", "batches", "entries", "forks", "invites"):
            self.db.execute(f"DELETE FROM {table}")
        self.db.execute("DELETE FROM meta WHERE k = 'group'")
        self.db.execute("COMMIT")
        self.ops = {}
        self.group = None
        self.catalog = cat.Catalog.load([], [], [], [])
        self._evaluate()

    # -- invites -----------------------------------------------------------------------

    def invite(self, role: str, expires_s: float, addrs: list[str]) -> Invite:
        with self._lock:
            st = self.require()
            if st.role(self.me) != "admin":
                raise GroupError("only an admin can invite", hint="ask an admin of the group")
            secret = os.urandom(16)
            inv = Invite(self.group or ZERO, self.me, tuple(addrs), secret, role,
                         self._now_ms() + int(expires_s * 1000))
            self.db.execute("INSERT INTO invites VALUES (?, ?, ?, NULL)",
                            (blake3.blake3(secret).digest(), role, inv.expires_ms))
            return inv

    def redeem(self, peer: str, group: bytes, secret: bytes) -> mem.MemberOp:
        """At the issuing admin: the invite's one use, for ``peer`` (the authenticated
        dialer). Returns the add op."""
        with self._lock:
            st = self.require()
            if group != self.group:
                raise GroupError("the invite is for another group")
            key = blake3.blake3(secret).digest()
            row = self.db.execute("SELECT role, expires_ms, used_by FROM invites WHERE secret = ?",
                                  (key,)).fetchone()
            if row is None:
                raise GroupError("unknown invite")
            role, expires, used = row
            if used is not None and used != peer:
                raise GroupError("the invite was already used")
            if expires < self._now_ms():
                raise GroupError("the invite expired", hint="ask the admin for a new one")
            if peer in st.removed:
                raise GroupError("this identity was removed from the group",
                                 hint="re-join under the next key generation")
            self.db.execute("UPDATE invites SET used_by = ? WHERE secret = ?", (peer, key))
            if peer in st.members:
                return next(op for op in self.ops.values() if op.subject == peer and op.kind == "add")
            return self._sign(kind="add", subject=peer, role=role)

    def accept_join(self, group: bytes, admin: str, raws: Iterable[bytes]) -> mem.GroupState:
        """At the joiner, with the ops of an admin's ``JoinReply``: take them as this node's
        group only if they prove the join — evaluated under ``group``'s founding op, this
        node is a member and ``admin`` (the authenticated peer that answered) an admin.
        Otherwise raise GroupError and change nothing. Leftovers of a group this node is
        not a member of are dropped first; a node that is a member of a group is refused."""
        ops = []
        for raw in raws:
            try:
                ops.append(mem.decode_op(raw))
            except CoreStateError:
                continue  # a malformed op proves nothing; evaluation decides on the rest
        st = mem.evaluate(ops, group)
        fake = "the answer to the invite does not prove this node's membership: "
        if st.name is None:
            raise GroupError(fake + "it lacks the group's founding op",
                             hint="the invite is forged or for another group; ask the admin for a new one")
        if self.me not in st.members:
            raise GroupError(fake + "no valid op of the group's admins adds this node",
                             hint="the invite is forged or was refused; ask the admin for a new one")
        if st.role(admin) != "admin":
            raise GroupError(fake + "the peer that answered is not an admin of the group",
                             hint="the invite is forged; ask the admin for a new one")
        with self._lock:
            if self.is_member(self.me):
                raise GroupError("this node is already in a group", hint="`corestate group leave` first")
            if self.group is not None:
                self._discard()
            self.group = group
            self._set_meta("group", group)
            self._store_ops(ops)
            return self.require()

    def adopt(self, group: bytes, raws: Iterable[bytes]) -> None:
        """After a join or a recovery: take the group's ops as this node's group."""
        with self._lock:
            self.group = group
            self._set_meta("group", group)
            self._store_ops(mem.decode_op(r) for r in raws)

    # -- catalog -----------------------------------------------------------------------

    def write(self, items: Mapping[bytes, bytes | None]) -> cat.Batch | None:
        """Append to this node's own partition (one batch; a few if over the limits)."""
        with self._lock:
            if not self.in_group or not items:
                return None
            pairs = list(items.items())
            last = None
            before = self.catalog.version_vector()
            for i in range(0, len(pairs), 2000):
                last = self.catalog.write(self.keys.signing_key, self.me, self.epoch,
                                          pairs[i:i + 2000], self._now_ms())
            self._save({self.me}, before)
            return last

    def own_entries(self) -> dict[bytes, bytes | None]:
        return {k: e.value for k, e in self.catalog.entries(self.me).items()}

    def _save(self, authors: set[str], before: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Persist what changed for ``authors``: only batches and entries past the seq the
        author had in ``before`` (a whole rewrite when its epoch moved or is unknown)."""
        c = self.catalog
        before = before or {}
        self.db.execute("BEGIN")
        for a in authors:
            st = c.head(a)
            prior = before.get(a)
            fresh = prior is None or st is None or st[0] != prior[0]
            since = 0 if fresh else prior[1]  # type: ignore[index]
            if fresh:
                for t in ("batches", "entries"):
                    self.db.execute(f"DELETE FROM {t} WHERE author = ?", (a,))
            self.db.execute("DELETE FROM authors WHERE author = ?", (a,))
            self.db.execute("DELETE FROM forks WHERE author = ?", (a,))
            if st is not None:
                self.db.execute("INSERT INTO authors VALUES (?, ?, ?, ?)", (a, *st))
            self.db.executemany("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                                [(a, st[0] if st else 0, b.seq_first, b.seq_last, b.batch_id, b.raw)
                                 for b in c.batches(a, since + 1)])
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                                [(a, k, e.seq, e.value, e.hlc) for k, e in c.entries(a).items() if e.seq > since])
        self.db.executemany("INSERT INTO forks VALUES (?, ?, ?, ?, ?, ?)",
                            [r for r in c.fork_rows() if r[0] in authors])
        self.db.execute("COMMIT")

    def _within_cutoffs(self, raw: bytes) -> bytes:
        """A sync message with the batches of removed members past their cut left out."""
        cuts = self.cutoffs()
        removed = self.removed()
        if not removed:
            return raw
        msg = csync.decode(raw)

        def keep(b: bytes) -> bool:
            try:
                batch = cat.Batch.decode(b)
            except CoreStateError:
                return True  # the catalog refuses it with its reason
            if batch.author not in removed:
                return True
            cut = cuts.get(batch.author)
            return cut is not None and (batch.epoch, batch.seq_last) <= cut
        if isinstance(msg, csync.Reply):
            return csync.encode(csync.Reply(msg.vector, tuple(b for b in msg.batches if keep(b)), msg.complete))
        if isinstance(msg, csync.Push):
            return csync.encode(csync.Push(tuple(b for b in msg.batches if keep(b))))
        return raw

    def _apply_batches(self, raw: bytes, kind: str) -> list[cat.Verdict]:
        st = self.state
        raw = self._within_cutoffs(raw)
        kept = frozenset(self.cutoffs())
        # Removed members with a cut: their batches up to it are still history to apply.
        members = (frozenset(st.members) | kept) if st else frozenset()
        removed = (st.removed - kept) if st else frozenset()
        before = self.catalog.version_vector()
        if kind == "reply":
            push, verdicts, complete = csync.finish(self.catalog, raw, members=members, now_ms=self._now_ms(),
                                                    revoked=removed)
            self._pending_push = push
            self.last_reply_complete = complete
        else:
            verdicts = csync.absorb(self.catalog, raw, members=members, now_ms=self._now_ms(), revoked=removed)
        after = self.catalog.version_vector()
        changed = {a for a in after if after.get(a) != before.get(a)}
        if changed or any(v.kind == "fork" for v in verdicts):
            self._save(changed | {v.evidence.author for v in verdicts if v.kind == "fork"}, before)
        return verdicts

    # -- sync exchange (messages of protocol/group.py) ---------------------------------

    def _heads(self) -> tuple[bytes, ...]:
        from corestate.protocol import group as gw
        return self.state.heads[:gw.MAX_HEADS] if self.state is not None else ()

    def _op_pages(self, their_heads: Iterable[bytes] = ()) -> Iterator[tuple[bytes, ...]]:
        """The ops a replica whose op graph has ``their_heads`` lacks (every op here that is
        not in the causal past of a head we know), in canonical order, in pages of at most
        ``OPS_PAGE_BYTES``: each page extends the ones before it into a causally closed set.
        Lazy: a caller that takes one page pays for about one page."""
        from corestate.protocol import group as gw
        if self.state is None:
            return
        known: set[bytes] = set()
        stack = [h for h in their_heads if h in self.ops]
        while stack:
            oid = stack.pop()
            if oid not in known:
                known.add(oid)
                stack.extend(p for p in self.ops[oid].parents if p in self.ops)
        page: list[bytes] = []
        used = 0
        for oid in self.state.order:
            if oid in known:
                continue
            raw = mem.encode_op(self.ops[oid])
            if page and (len(page) >= gw.MAX_OPS or used + len(raw) + 3 > gw.OPS_PAGE_BYTES):
                yield tuple(page)
                page, used = [], 0
            page.append(raw)
            used += len(raw) + 3
        if page:
            yield tuple(page)

    def _op_page(self, their_heads: Iterable[bytes]) -> tuple[tuple[bytes, ...], bool]:
        """The first page of :meth:`_op_pages`, and whether more follow."""
        pages = self._op_pages(their_heads)
        first = next(pages, ())
        return first, next(pages, None) is not None

    def join_pages(self) -> list[tuple[bytes, ...]]:
        """Every op of the group, in pages, for a joiner (``JoinReply``s on one stream)."""
        with self._lock:
            return list(self._op_pages()) or [()]

    def sync_open(self) -> gw.SyncOpen:
        from corestate.protocol import group as gw  # the wire messages: only when syncing
        with self._lock:
            return gw.SyncOpen(group=self.group or ZERO, heads=self._heads(),
                               catalog=csync.hello(self.catalog))

    def sync_reply(self, peer: str, msg: gw.SyncOpen) -> gw.SyncReply:
        """At the responder. Raises GroupError for a non-member or a wrong group."""
        from corestate.protocol import group as gw
        with self._lock:
            st = self.require()
            if msg.group not in (ZERO, self.group):
                raise GroupError("another group")
            if peer not in st.members:
                raise GroupError("not a member of this group")
            ops, more = self._op_page(msg.heads)
            answer = csync.answer(self.catalog, msg.catalog)
            return gw.SyncReply(group=self.group or ZERO, ops=ops, more=more, heads=self._heads(),
                                catalog=answer)

    def sync_finish(self, msg: gw.SyncReply) -> tuple[gw.SyncPush, list[cat.Verdict]]:
        """At the initiator: take the reply, build the push. ``last_reply_complete`` then
        says whether the exchange carried everything both ways (else: another one)."""
        from corestate.protocol import group as gw
        with self._lock:
            if self.group is None:
                # Recovery: the group comes from the peer; taken only when its ops count
                # this node as a member (a peer's word alone is not proof).
                st = mem.evaluate((mem.decode_op(r) for r in msg.ops), msg.group)
                if st.name is None or self.me not in st.members:
                    raise GroupError("the peer's group does not count this node as a member")
                self.group = msg.group
                self._set_meta("group", msg.group)
            elif msg.group != self.group:
                raise GroupError("the peer answered for another group")
            self._store_ops(mem.decode_op(r) for r in msg.ops)
            verdicts = self._apply_batches(msg.catalog, "reply")
            ops, more = self._op_page(msg.heads)
            self.last_reply_complete = self.last_reply_complete and not msg.more and not more
            push = self._pending_push
            self._pending_push = None
            return gw.SyncPush(ops=ops, catalog=push or b""), verdicts

    def sync_absorb(self, peer: str, msg: gw.SyncPush) -> list[cat.Verdict]:
        with self._lock:
            if not self.is_member(peer):
                raise GroupError("not a member of this group")
            self._store_ops(mem.decode_op(r) for r in msg.ops)
            return self._apply_batches(msg.catalog, "push") if msg.catalog else []

    _pending_push: bytes | None = None
    last_reply_complete: bool = True
