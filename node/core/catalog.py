"""The signed catalog: one append-only log per node, replicated to every group member.

Role: snapshot records, capacity adverts, share placements and retention tombstones live
here. Each node writes only its own *partition*: a log of entries ``(epoch, seq, key,
value | tombstone, hlc)``, signed in hash-chained batches by the node's identity key. Peers
keep every member's partition and forward its batches byte for byte. Pure: no I/O, no clock
(``now_ms`` is a parameter), no logging; decisions are returned as verdicts with reasons.

Batch wire format (SPEC.md, "Catalog"), canonical CBOR throughout::

    batch   = [body: bstr, signature: bstr .size 64]
    body    = [1, author: tstr, epoch: uint, seq_first: uint, prev: bstr .size 32,
               hlc: uint, entries: [+ entry]]
    entry   = [key: bstr] (tombstone) / [key: bstr, value: bstr]

Entry ``i`` has sequence number ``seq_first + i`` and the batch's HLC. The signature is
Ed25519 by the author's key (recovered from the author's PeerID) over ``BATCH_PREFIX +
body``; ``batch_id = BLAKE3(BATCH_PREFIX + body)``. ``prev`` is the id of the author's
previous batch in the same epoch, 32 zero bytes for an epoch's first batch. A batch names a
key at most once. The decoder accepts exactly these encodings (``encode(decode(b)) == b``).

Rules of :meth:`Catalog.apply`, checked in this order, for a batch of author A:

1. malformed bytes, a revoked signer, a non-member, an author that is not an Ed25519
   PeerID, a signature that does not verify under A's key (forged, or a write into another
   node's partition: only A's key writes A's partition) -> ``Rejected``;
2. an epoch older than the newest seen for A (a stale instance still running after A
   recovered) -> ``Rejected``;
3. a newer epoch: it must start at seq 1 with zero ``prev`` (else ``Gap``/``Rejected``);
   its first batch *supersedes* every older epoch of A: their entries and batches are
   dropped, and the recovered node carries forward what it still wants by rewriting it in
   the new epoch. (Keeping older-epoch entries visible would not converge: a replica that
   saw the new epoch first refuses the old one by rule 2 and could never get them.)
4. same epoch: ``seq_first > seq + 1`` -> ``Gap`` (the sync layer asks from ``seq + 1``);
   ``seq_first == seq + 1`` with ``prev`` equal to the last batch id -> ``Applied``; with
   any other ``prev``, or a batch overlapping applied seqs with other bytes -> ``Fork``
   (the author signed two histories: both batches are kept as evidence, the second is not
   applied); the very batch again -> ``Duplicate``;
5. a batch that would take the author's partition past ``max_partition_entries`` seqs or
   ``max_partition_bytes`` bytes of batches in the epoch -> ``Rejected`` (a member cannot
   make every replica hold an unbounded log; the defaults are far above real use).

Two batches of one author and epoch with overlapping seqs and different ids are fork
evidence whatever this replica holds (:meth:`Catalog.evidence`; sync hands evidence to
replicas without it, and compares head batch ids, see ``node.core.sync``).

Timestamps: the signed HLC is stored verbatim (replicas must converge, and the batch bytes
are forwarded as they are). A timestamp more than ``max_drift_ms`` ahead of ``now_ms`` is
clamped where it is used: this node's clock merges the clamped value, ``Applied.clamped``
reports it (the runtime alerts), and readers use :func:`corestate.node.core.hlc.clamp`.

Invariants: the state of each author is a function of the set of its valid batches of its
newest epoch, so any delivery order (with gaps retried) converges; nothing is applied from
a refused batch; ``entries`` hold tombstones (value ``None``) so deletions replicate.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple

import cbor2
import nacl.exceptions
import nacl.signing
from blake3 import blake3
from corestate.node.core import hlc as hlc_mod
from corestate.node.core.sync import FullVector, VersionVector
from corestate.node.errors import BadBatch, BadValue, CatalogWriteError
from corestate.protocol import cborguard
from corestate.protocol.keys import peer_id_from_public_key, public_key_from_peer_id
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

BATCH_PREFIX = b"CoreState 2026-11-25 catalog batch\0"
VALUE_AD_PREFIX = b"CoreState 2026-11-25 catalog value\0"
FORMAT_VERSION = 1

MAX_BATCH_BYTES = 512 * 1024  # fits a 1 MiB frame with room for a sync message around it
MAX_ENTRIES = 4096
MAX_KEY = 64
MAX_VALUE = 16 * 1024
MAX_AUTHOR = 64  # UTF-8 bytes; an Ed25519 PeerID is 52
MAX_EPOCH = (1 << 32) - 1
MAX_SEQ = (1 << 53) - 1
# Per author and epoch (older epochs are dropped when a newer one starts): a member cannot
# make every replica hold more than this of its partition. Generous for real use: a node
# that made 1M packs (16 TB of data) writes about 1M placement records of a few hundred
# bytes plus a snapshot record per backup; 16M entries and 2 GiB of signed batches leave
# room for years of repairs and prunes rewriting them. Past the cap a replica refuses the
# author's batches (``Rejected``) and the author's own writes fail; a new epoch starts over.
MAX_PARTITION_ENTRIES = 1 << 24
MAX_PARTITION_BYTES = 1 << 31
NONCE_BYTES = 12
ZERO_ID = bytes(32)

# Key namespaces (first byte of a key). Keys are opaque to the catalog; these helpers fix
# the layout the node uses so that every member reads placements the same way.
NS_PLACEMENT = b"p"  # + pack id (32) + share index (1): value = holder (see holder_ref)
NS_HOLDER = b"h"  # + 2-byte ref: value = the holder's PeerID (UTF-8), the author's table
NS_SNAPSHOT = b"s"  # + snapshot id (32): value sealed to the author (names paths)
NS_CAPACITY = b"c"  # alone: capacity advert (free bytes, domains)
NS_RETENTION = b"r"  # + snapshot id (32): retention tombstone / pin


def placement_key(pack: bytes, index: int) -> bytes:
    if len(pack) != 32 or not 0 <= index <= 255:
        raise ValueError("a placement key needs a 32-byte pack id and a share index 0..255")
    return NS_PLACEMENT + pack + bytes((index,))


def holder_key(ref: int) -> bytes:
    if not 0 <= ref <= 0xFFFF:
        raise ValueError("a holder ref is 0..65535")
    return NS_HOLDER + ref.to_bytes(2, "big")


def snapshot_key(snapshot_id: bytes) -> bytes:
    if len(snapshot_id) != 32:
        raise ValueError("a snapshot id is 32 bytes")
    return NS_SNAPSHOT + snapshot_id


# ---------------------------------------------------------------------------------------
# Sealed values


def _value_ad(author: str, key: bytes) -> bytes:
    # A PeerID is base58 (never NUL), so author and key cannot be confused.
    return VALUE_AD_PREFIX + author.encode("utf-8") + b"\0" + key


def seal_value(
    data_key: bytes, author: str, key: bytes, plaintext: bytes, *, nonce: bytes | None = None
) -> bytes:
    """Encrypt a value that reveals names or contents to its author: ``nonce || ct+tag``.

    ChaCha20-Poly1305 under ``data_key`` (a catalog subkey of the author's data key), AD
    bound to the author and the catalog key so a value cannot be moved to another key or
    partition. ``nonce`` is for deterministic tests; by default 12 random bytes from the OS.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    return nonce + ChaCha20Poly1305(data_key).encrypt(nonce, plaintext, _value_ad(author, key))


def open_value(data_key: bytes, author: str, key: bytes, sealed: bytes) -> bytes:
    """The plaintext of :func:`seal_value`; raises :class:`BadValue` if it does not open."""
    if len(sealed) < NONCE_BYTES + 16:
        raise BadValue(key, "too short to be a sealed value")
    try:
        return ChaCha20Poly1305(data_key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _value_ad(author, key)
        )
    except InvalidTag:
        raise BadValue(key, "authentication failed (wrong key, author or catalog key)")


# ---------------------------------------------------------------------------------------
# Batches

Item = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """One signed batch of an author's log; ``raw`` is its wire form, forwarded as is.

    Build one only with :func:`sign_batch` or :meth:`decode` (the fields must be those of
    ``raw``); decoding checks the structure only, :meth:`verify` the signature
    (``Catalog.apply`` does both).
    """

    author: str
    epoch: int
    seq_first: int
    prev: bytes
    hlc: int
    entries: tuple[Item, ...]
    signature: bytes
    batch_id: bytes
    raw: bytes

    @property
    def seq_last(self) -> int:
        return self.seq_first + len(self.entries) - 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.batch_id)

    def signed_bytes(self) -> bytes:
        return BATCH_PREFIX + _body_of(self.raw)

    def verify(self, public_key: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(public_key).verify(self.signed_bytes(), self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
            return False
        return True

    def records(self) -> Iterator[tuple[int, int, bytes, bytes | None, int]]:
        """The entries as log rows ``(epoch, seq, key, value | None, hlc)``."""
        for i, (k, v) in enumerate(self.entries):
            yield self.epoch, self.seq_first + i, k, v, self.hlc

    @classmethod
    def decode(cls, raw: bytes) -> Batch:
        """Parse wire bytes; raises :class:`BadBatch` unless they are a canonical batch."""
        if type(raw) is not bytes:
            raise BadBatch(f"expected bytes, got {type(raw).__name__}")
        if len(raw) > MAX_BATCH_BYTES:
            raise BadBatch(f"{len(raw)} bytes, at most {MAX_BATCH_BYTES}")
        outer = _loads(raw)
        if type(outer) is not list or len(outer) != 2:
            raise BadBatch("a batch is an array [body, signature]")
        body, sig = outer
        if type(body) is not bytes or type(sig) is not bytes or len(sig) != 64:
            raise BadBatch("a batch is [body: bytes, signature: 64 bytes]")
        _canonical(outer, raw)
        fields = _loads(body)
        if type(fields) is not list or len(fields) != 7:
            raise BadBatch("a batch body is an array of 7 fields")
        version, author, epoch, seq_first, prev, hlc, entries = fields
        if version != FORMAT_VERSION or type(version) is not int:
            raise BadBatch(f"unknown batch format version {version!r}")
        if type(author) is not str or not 0 < len(author.encode("utf-8", "replace")) <= MAX_AUTHOR:
            raise BadBatch("author must be a PeerID string")
        _int(epoch, 0, MAX_EPOCH, "epoch")
        _int(seq_first, 1, MAX_SEQ, "seq_first")
        _int(hlc, 0, hlc_mod.HLC_MAX, "hlc")
        if type(prev) is not bytes or len(prev) != 32:
            raise BadBatch("prev must be 32 bytes")
        if type(entries) is not list or not 0 < len(entries) <= MAX_ENTRIES:
            raise BadBatch(f"a batch holds 1..{MAX_ENTRIES} entries")
        if seq_first + len(entries) - 1 > MAX_SEQ:
            raise BadBatch("sequence numbers overflow")
        items = _entries(entries)
        if len({k for k, _ in items}) != len(items):
            raise BadBatch("a batch names a key at most once")
        _canonical(fields, body)
        return cls(
            author=author,
            epoch=epoch,
            seq_first=seq_first,
            prev=prev,
            hlc=hlc,
            entries=items,
            signature=sig,
            batch_id=blake3(BATCH_PREFIX + body).digest(),
            raw=raw,
        )


def _loads(data: bytes) -> object:
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on hostile input; all mean "bad"
        raise BadBatch(f"not CBOR: {type(e).__name__}: {e}") from None
    # _canonical re-encodes it: refuse first what makes that exponential (cborguard.py).
    if (why := cborguard.problem(obj, len(data))) is not None:
        raise BadBatch(f"not plain CBOR data: {why}")
    return obj


def _canonical(obj: object, data: bytes) -> None:
    try:
        again = cbor2.dumps(obj, canonical=True)
    except Exception as e:
        raise BadBatch(f"not re-encodable: {e}") from None
    if again != data:
        raise BadBatch("not the canonical CBOR encoding (or trailing bytes)")


def _int(v: object, lo: int, hi: int, what: str) -> None:
    if type(v) is not int or not lo <= v <= hi:
        raise BadBatch(f"{what} must be an integer in {lo}..{hi}")


def _entries(entries: list[object]) -> tuple[Item, ...]:
    # The hot loop of decoding (a million entries when a replica loads a catalog): inline.
    out: list[Item] = []
    append = out.append
    for e in entries:
        if type(e) is not list:
            raise BadBatch("an entry is [key] or [key, value]")
        n = len(e)
        if n == 2:
            key, value = e
            if type(value) is not bytes or len(value) > MAX_VALUE:
                raise BadBatch(f"an entry value is at most {MAX_VALUE} bytes")
        elif n == 1:
            key, value = e[0], None
        else:
            raise BadBatch("an entry is [key] or [key, value]")
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY:
            raise BadBatch(f"an entry key is 1..{MAX_KEY} bytes")
        append((key, value))
    return tuple(out)


def _body_of(raw: bytes) -> bytes:
    # raw = 0x82, bstr head (1, 2, 3 or 5 bytes), body, 0x58 0x40, 64-byte signature.
    info = raw[1] & 0x1F
    start = 2 + (0 if info < 24 else 1 << (info - 24))
    return raw[start : len(raw) - 66]


def sign_batch(
    signing_key: nacl.signing.SigningKey,
    *,
    epoch: int,
    seq_first: int,
    prev: bytes,
    hlc: int,
    entries: Iterable[Item],
) -> Batch:
    """Sign a batch of the key's own partition; raises :class:`CatalogWriteError` if invalid."""
    author = peer_id_from_public_key(bytes(signing_key.verify_key))
    items = list(entries)
    body_entries = [[k] if v is None else [k, v] for k, v in items]
    body = cbor2.dumps(
        [FORMAT_VERSION, author, epoch, seq_first, prev, hlc, body_entries], canonical=True
    )
    signature = signing_key.sign(BATCH_PREFIX + body).signature
    raw = cbor2.dumps([body, signature], canonical=True)
    try:
        return Batch.decode(raw)
    except BadBatch as e:
        raise CatalogWriteError(e.reason) from None


# ---------------------------------------------------------------------------------------
# Verdicts: what apply decided, and why


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two batches the author signed for overlapping seqs of one epoch (raw wire bytes)."""

    author: str
    epoch: int
    seq: int
    kept: bytes  # the batch this replica applied
    other: bytes  # the conflicting batch, not applied
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    batch_id: bytes
    author: str
    epoch: int
    seq_first: int
    seq_last: int
    clamped: bool  # the batch's HLC was too far ahead of now: alert about the author's clock
    superseded_epoch: int | None  # an older epoch of the author dropped by this batch
    reason: str = ""
    kind: Literal["applied"] = "applied"


@dataclass(frozen=True, slots=True)
class Duplicate:
    batch_id: bytes
    author: str
    epoch: int
    seq_first: int
    reason: str = "already applied"
    kind: Literal["duplicate"] = "duplicate"


@dataclass(frozen=True, slots=True)
class Rejected:
    batch_id: bytes  # b"" when the bytes did not even decode
    author: str
    reason: str
    kind: Literal["rejected"] = "rejected"


@dataclass(frozen=True, slots=True)
class Gap:
    """The batch does not follow what this replica holds: deliver ``need_seq``.. first."""

    batch_id: bytes
    author: str
    epoch: int
    need_seq: int
    reason: str
    kind: Literal["gap"] = "gap"


@dataclass(frozen=True, slots=True)
class Fork:
    batch_id: bytes
    author: str
    evidence: ForkEvidence
    reason: str
    kind: Literal["fork"] = "fork"


Verdict = Applied | Duplicate | Rejected | Gap | Fork

Membership = Callable[[str], bool] | Collection[str]


def _member_test(m: Membership) -> Callable[[str], bool]:
    if callable(m):
        return m
    return m.__contains__


# ---------------------------------------------------------------------------------------
# State


class Entry(NamedTuple):
    """The current value of one key in an author's partition (``value is None``: deleted)."""

    seq: int
    value: bytes | None
    hlc: int


class StoredBatch(NamedTuple):
    """A batch as a replica keeps it: enough to forward it and to check overlaps."""

    seq_first: int
    seq_last: int
    batch_id: bytes
    raw: bytes


class _Author:
    __slots__ = ("batches", "entries", "epoch", "head", "lasts", "nbytes", "seq")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seq = 0
        self.nbytes = 0  # bytes of the batches held (the partition cap)
        self.head = ZERO_ID
        self.batches: list[StoredBatch] = []
        self.lasts: list[int] = []  # seq_last of each batch, for bisect
        self.entries: dict[bytes, Entry] = {}


class Catalog:
    """Every member's partition as this replica holds it; pure and in memory.

    Persistence (node.runtime, sqlite) stores the rows of :meth:`author_rows`,
    :meth:`batch_rows`, :meth:`entry_rows` and :meth:`fork_rows` and rebuilds the object
    with :meth:`load`, without re-verifying what was verified when it was applied.
    """

    def __init__(
        self,
        *,
        max_partition_entries: int = MAX_PARTITION_ENTRIES,
        max_partition_bytes: int = MAX_PARTITION_BYTES,
    ) -> None:
        self.max_partition_entries = max_partition_entries
        self.max_partition_bytes = max_partition_bytes
        self._authors: dict[str, _Author] = {}
        self._keys: dict[str, bytes | None] = {}
        self._forks: dict[bytes, ForkEvidence] = {}
        self.clock: hlc_mod.HLC = hlc_mod.ZERO

    # -- reading ------------------------------------------------------------------------

    def version_vector(self) -> dict[str, tuple[int, int]]:
        """``author -> (epoch, seq)``: this replica holds the author's newest epoch to seq."""
        return {a: (st.epoch, st.seq) for a, st in self._authors.items()}

    def sync_vector(self) -> FullVector:
        """``author -> (epoch, seq, head batch id, forked)``: what sync compares, where
        ``forked`` says this replica holds fork evidence for the author's newest epoch."""
        forked = self._forked()
        return {a: (st.epoch, st.seq, st.head, (a, st.epoch) in forked)
                for a, st in self._authors.items()}

    def _forked(self) -> set[tuple[str, int]]:
        return {(ev.author, ev.epoch) for ev in self._forks.values()}

    def get(self, author: str, key: bytes) -> Entry | None:
        st = self._authors.get(author)
        return None if st is None else st.entries.get(key)

    def entries(self, author: str) -> Mapping[bytes, Entry]:
        st = self._authors.get(author)
        return MappingProxyType(st.entries if st is not None else {})

    def authors(self) -> list[str]:
        return sorted(self._authors)

    def forks(self) -> list[ForkEvidence]:
        return list(self._forks.values())

    def head(self, author: str) -> tuple[int, int, bytes] | None:
        """``(epoch, seq, last batch id)`` of the author, None if nothing is held."""
        st = self._authors.get(author)
        return None if st is None else (st.epoch, st.seq, st.head)

    def batches(self, author: str, from_seq: int = 1) -> list[Batch]:
        """The author's batches of its newest epoch that hold seqs >= ``from_seq``."""
        st = self._authors.get(author)
        if st is None:
            return []
        i = bisect.bisect_left(st.lasts, from_seq)
        return [Batch.decode(b.raw) for b in st.batches[i:]]

    def missing_for(self, remote: VersionVector) -> list[Batch]:
        """The batches a replica with vector ``remote`` lacks, per author in seq order."""
        return [Batch.decode(raw) for raw, _ in self.missing(remote)]

    def missing(self, remote: VersionVector) -> Iterator[tuple[bytes, str]]:
        """Lazily, ``(raw batch, why)`` for what a replica at ``remote`` should get, authors
        in sorted order: ``why`` is ``"missing"`` (it lacks the batch), ``"conflict"`` (its
        head disagrees with the batch this replica holds at that seq: the one batch that
        shows it the fork) or ``"evidence"`` (this replica holds fork evidence it lacks).

        Per author (see ``sync.plan`` for epochs): a remote without the author, or in an
        older epoch, gets every batch; in a newer epoch, nothing; in the same epoch, the
        batches past its seq, unless its head conflicts with ours (then only the
        conflicting batch, and nothing when both sides already hold evidence).
        A consumer that stops early costs only what it took.
        """
        forked = self._forked()
        for author in sorted(self._authors):
            st = self._authors[author]
            theirs = remote.get(author)
            if theirs is None or theirs[0] < st.epoch:
                for b in st.batches:
                    yield b.raw, "missing"
                continue
            if theirs[0] > st.epoch:
                continue
            rseq = theirs[1]
            rhead = theirs[2] if len(theirs) == 4 else None
            rforked = len(theirs) == 4 and bool(theirs[3])
            mine = (author, st.epoch) in forked
            if mine and not rforked:
                for ev in self._forks.values():
                    if ev.author == author and ev.epoch == st.epoch:
                        yield ev.kept, "evidence"
                        yield ev.other, "evidence"
                continue
            if rhead is not None and 0 < rseq <= st.seq:
                held = st.batches[bisect.bisect_left(st.lasts, rseq)]
                if held.seq_last != rseq or held.batch_id != rhead:
                    if not (mine and rforked):
                        yield held.raw, "conflict"
                    continue
            if rseq < st.seq:
                for b in st.batches[bisect.bisect_left(st.lasts, rseq + 1):]:
                    yield b.raw, "missing"

    def state(self) -> dict[str, tuple[int, int, bytes, dict[bytes, Entry]]]:
        """A comparable copy of the replicated state (tests compare replicas with it)."""
        return {
            a: (st.epoch, st.seq, st.head, dict(st.entries))
            for a, st in sorted(self._authors.items())
        }

    # -- applying -----------------------------------------------------------------------

    def apply(
        self,
        batch: Batch | bytes,
        *,
        members: Membership,
        now_ms: int,
        revoked: Membership = frozenset(),
        max_drift_ms: int = hlc_mod.DEFAULT_MAX_DRIFT_MS,
    ) -> Verdict:
        """Check a batch against the rules (module docstring) and apply it if they hold."""
        if not isinstance(batch, Batch):
            try:
                batch = Batch.decode(batch)
            except BadBatch as e:
                return Rejected(b"", "", e.reason)
        a, bid = batch.author, batch.batch_id
        if _member_test(revoked)(a):
            return Rejected(bid, a, "the signer was removed from the group")
        if not _member_test(members)(a):
            return Rejected(bid, a, "the author is not a member of the group")
        pub = self._public_key(a)
        if pub is None:
            return Rejected(bid, a, "the author is not an Ed25519 PeerID")
        if not batch.verify(pub):
            return Rejected(
                bid, a, "the signature does not verify under the author's key (forged, or "
                "written into another node's partition)"
            )
        return self._apply_verified(batch, now_ms, max_drift_ms)

    def _apply_verified(self, batch: Batch, now_ms: int, max_drift_ms: int) -> Verdict:
        a, bid = batch.author, batch.batch_id
        st = self._authors.get(a)
        if st is not None and batch.epoch < st.epoch:
            return Rejected(
                bid, a, f"epoch {batch.epoch} is older than epoch {st.epoch}, the newest seen "
                "for this author (a stale instance still running after a recovery?)"
            )
        superseded: int | None = None
        if st is None or batch.epoch > st.epoch:
            if batch.seq_first != 1:
                return Gap(bid, a, batch.epoch, 1, f"epoch {batch.epoch} is new here: need seq 1")
            if batch.prev != ZERO_ID:
                return Rejected(bid, a, "the first batch of an epoch must have a zero prev")
            superseded = None if st is None else st.epoch
            st = _Author(batch.epoch)
        elif batch.seq_first > st.seq + 1:
            return Gap(bid, a, st.epoch, st.seq + 1, f"gap: need seq {st.seq + 1}")
        elif batch.seq_first <= st.seq:
            return self._overlap(st, batch)
        elif batch.prev != st.head:
            return self._fork(
                st, batch, st.batches[-1], f"prev does not chain to the batch ending at seq "
                f"{st.seq}: the author signed two histories"
            )
        if batch.seq_last > self.max_partition_entries:
            return Rejected(bid, a, f"the partition would exceed {self.max_partition_entries:,} "
                            "entries in one epoch")
        if st.nbytes + len(batch.raw) > self.max_partition_bytes:
            return Rejected(bid, a, f"the partition would exceed {self.max_partition_bytes:,} "
                            "bytes of batches in one epoch")
        if superseded is not None or a not in self._authors:
            self._authors[a] = st
        self._append(st, batch)
        self.clock, clamped = hlc_mod.receive(self.clock, batch.hlc, now_ms, max_drift_ms)
        return Applied(
            bid, a, batch.epoch, batch.seq_first, batch.seq_last, clamped, superseded,
            "timestamp clamped: the author's clock is too far ahead" if clamped else "",
        )

    def _append(self, st: _Author, batch: Batch) -> None:
        entries, seq, h = st.entries, batch.seq_first, batch.hlc
        for k, v in batch.entries:
            entries[k] = Entry(seq, v, h)
            seq += 1
        st.seq = batch.seq_last
        st.nbytes += len(batch.raw)
        st.head = batch.batch_id
        st.batches.append(StoredBatch(batch.seq_first, batch.seq_last, batch.batch_id, batch.raw))
        st.lasts.append(batch.seq_last)

    def _overlap(self, st: _Author, batch: Batch) -> Verdict:
        i = bisect.bisect_left(st.lasts, batch.seq_first)
        held = st.batches[i]
        if held.batch_id == batch.batch_id:
            return Duplicate(batch.batch_id, batch.author, batch.epoch, batch.seq_first)
        return self._fork(
            st, batch, held, f"two different batches for seq {batch.seq_first} of epoch "
            f"{st.epoch}"
        )

    def _fork(self, st: _Author, batch: Batch, held: StoredBatch, reason: str) -> Fork:
        ev = self._forks.get(batch.batch_id)
        if ev is None:
            ev = ForkEvidence(batch.author, st.epoch, batch.seq_first, held.raw, batch.raw, reason)
            self._forks[batch.batch_id] = ev
        return Fork(batch.batch_id, batch.author, ev, reason)

    def evidence(self, kept: Batch, other: Batch) -> Fork:
        """Record two verified batches of one author and epoch with overlapping seqs and
        different bytes (the caller checked that) as fork evidence, whatever this replica
        holds of the partition."""
        reason = (f"two different batches for seq {max(kept.seq_first, other.seq_first)} of "
                  f"epoch {other.epoch}")
        ev = self._forks.get(other.batch_id)
        if ev is None:
            ev = ForkEvidence(other.author, other.epoch, other.seq_first, kept.raw, other.raw, reason)
            self._forks[other.batch_id] = ev
        return Fork(other.batch_id, other.author, ev, reason)

    def _public_key(self, author: str) -> bytes | None:
        if author not in self._keys:
            self._keys[author] = public_key_from_peer_id(author)
        return self._keys[author]

    # -- writing ------------------------------------------------------------------------

    def write(
        self,
        signing_key: nacl.signing.SigningKey,
        author: str,
        epoch: int,
        items: Iterable[Item] | Mapping[bytes, bytes | None],
        now_ms: int,
    ) -> Batch:
        """Author the next batch of this node's own partition, apply it and return it.

        ``epoch`` is the node's current epoch (bumped after a recovery: the first write in
        a new epoch starts at seq 1 and supersedes the older epochs, see the module
        docstring). Raises :class:`CatalogWriteError` for a key that is not ``author``'s,
        an older epoch, or a batch over the limits.
        """
        if peer_id_from_public_key(bytes(signing_key.verify_key)) != author:
            raise CatalogWriteError("the signing key is not the author's")
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        st = self._authors.get(author)
        if st is not None and epoch < st.epoch:
            raise CatalogWriteError(f"epoch {epoch} is older than {st.epoch}, already written")
        if st is None or epoch > st.epoch:
            seq_first, prev = 1, ZERO_ID
        else:
            seq_first, prev = st.seq + 1, st.head
        stamp = hlc_mod.tick(self.clock, now_ms)
        batch = sign_batch(
            signing_key, epoch=epoch, seq_first=seq_first, prev=prev, hlc=stamp, entries=pairs
        )
        verdict = self._apply_verified(batch, now_ms, hlc_mod.DEFAULT_MAX_DRIFT_MS)
        if verdict.kind != "applied":  # the partition is full
            raise CatalogWriteError(verdict.reason)
        return batch

    def truncate(self, author: str, epoch: int, seq: int) -> bool:
        """Keep the author's partition only up to ``(epoch, seq)`` (a removed member: what
        it wrote while it belonged, as its remover had seen it). Returns whether anything
        was dropped. Batches past the point go, and the entries are rebuilt from the rest."""
        st = self._authors.get(author)
        if st is None or (st.epoch, st.seq) <= (epoch, seq):
            return False
        if st.epoch > epoch:
            # A newer epoch than the cut superseded the one it names: nothing of it remains.
            return self.forget(author)
        keep = [b for b in st.batches if b.seq_last <= seq]
        fresh = _Author(epoch)
        for b in keep:
            self._append(fresh, Batch.decode(b.raw))
        if not keep:
            return self.forget(author)
        self._authors[author] = fresh
        return True

    def forget(self, author: str) -> bool:
        """Drop an author's partition (a removed member): every replica does so once it
        learns of the removal, and refuses the author's batches from then on, so replicas
        agree whatever they had accepted before (``apply`` with ``revoked``)."""
        self._forks = {k: v for k, v in self._forks.items() if v.author != author}
        return self._authors.pop(author, None) is not None

    # -- persistence by rows ------------------------------------------------------------

    def author_rows(self) -> Iterator[tuple[str, int, int, bytes]]:
        """``(author, epoch, seq, head)``."""
        for a, st in self._authors.items():
            yield a, st.epoch, st.seq, st.head

    def batch_rows(self) -> Iterator[tuple[str, int, int, int, bytes, bytes]]:
        """``(author, epoch, seq_first, seq_last, batch_id, raw)``."""
        for a, st in self._authors.items():
            for b in st.batches:
                yield a, st.epoch, b.seq_first, b.seq_last, b.batch_id, b.raw

    def entry_rows(self) -> Iterator[tuple[str, bytes, int, bytes | None, int]]:
        """``(author, key, seq, value | None, hlc)``."""
        for a, st in self._authors.items():
            for k, e in st.entries.items():
                yield a, k, e.seq, e.value, e.hlc

    def fork_rows(self) -> Iterator[tuple[str, int, int, bytes, bytes, str]]:
        """``(author, epoch, seq, kept raw, other raw, reason)``."""
        for ev in self._forks.values():
            yield ev.author, ev.epoch, ev.seq, ev.kept, ev.other, ev.reason

    @classmethod
    def load(
        cls,
        authors: Iterable[tuple[str, int, int, bytes]],
        batches: Iterable[tuple[str, int, int, int, bytes, bytes]],
        entries: Iterable[tuple[str, bytes, int, bytes | None, int]],
        forks: Iterable[tuple[str, int, int, bytes, bytes, str]] = (),
        clock: int = 0,
        **limits: int,
    ) -> Catalog:
        """Rebuild a catalog from the rows this replica saved (trusted: no re-verification).

        Batch rows must come in seq order per author; rows of an epoch other than the
        author's row (left behind by an interrupted save) are ignored.
        """
        cat = cls(**limits)
        cat.clock = hlc_mod.HLC(clock)
        for a, epoch, seq, head in authors:
            st = _Author(epoch)
            st.seq, st.head = seq, head
            cat._authors[a] = st
        for a, epoch, first, last, bid, raw in batches:
            st = cat._authors[a]
            if epoch == st.epoch:
                st.batches.append(StoredBatch(first, last, bid, raw))
                st.lasts.append(last)
                st.nbytes += len(raw)
        for a, key, seq, value, h in entries:
            cat._authors[a].entries[key] = Entry(seq, value, h)
        for a, epoch, seq, kept, other, reason in forks:
            ev = ForkEvidence(a, epoch, seq, kept, other, reason)
            cat._forks[Batch.decode(other).batch_id] = ev
        return cat
