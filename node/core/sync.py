"""Catalog reconciliation: what two replicas send each other, and the messages that carry it.

Role: the pure decisions of ``/corestate/sync/2``. The runtime opens a stream, moves the
bytes these functions produce and feeds the answers back; the simulator calls the same
functions directly. No I/O, no clock, no randomness.

Protocol (Scuttlebutt-style, over version vectors
``author -> (epoch, seq, head batch id, forked)``):

1. A -> B ``Hello``: A's vector;
2. B -> A ``Reply``: the batches A lacks (per author in seq order, byte for byte as their
   authors signed them) and B's vector;
3. A -> B ``Push``: the batches B lacks, after A applied the reply; omitted when empty.

So one exchange converges two replicas in at most 3 messages, whatever their size, unless
a message hits ``max_bytes``: it then holds a prefix (whole batches, seq order per author)
and the exchange says it is not ``complete``, and A simply starts another exchange. The
answering side walks its batches lazily and stops at the budget: what it costs is
proportional to what it sends, not to what the other side lacks.

Forks (equivocation). The head batch id in the vector makes two histories of one author
visible even when they have the same length: where a replica holds the remote's seq and
its batch ending there has another id (or no batch ends there), it sends that one batch,
which the remote refuses as a ``Fork`` and keeps as evidence; ``forked`` says a replica
holds fork evidence for the author's epoch, and a replica with evidence sends both of its
batches to one without. Two replicas that both hold evidence stop sending the author's
conflicting batches (the alert was raised; nothing more would converge).

Message encoding, canonical CBOR, strictly decoded (anything else raises BadBatch)::

    vector = {* author: tstr => [epoch: uint, seq: uint, head: bstr .size 32, forked: bool]}
    hello  = [1, vector]
    reply  = [2, vector, [* batch: bstr], complete: bool]
    push   = [3, [* batch: bstr]]

A vector costs about 100 bytes per author; a catalog of a million entries has as many
authors as the group has members, so vectors stay small and the bytes on the wire are
those of the missing batches.

Invariants: ``plan`` never asks for anything of an epoch older than the remote's newest
for that author (the remote would refuse it); ``apply_all`` applies whatever can be applied
whatever order the batches come in, and returns one verdict per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import cbor2
from corestate.node.errors import BadBatch
from corestate.protocol import cborguard

if TYPE_CHECKING:
    from corestate.node.core.catalog import Catalog, Membership, Verdict

# (epoch, seq) or, on the wire and from Catalog.sync_vector, (epoch, seq, head, forked).
VectorEntry = tuple[int, int] | tuple[int, int, bytes, bool]
VersionVector = Mapping[str, VectorEntry]
FullVector = dict[str, tuple[int, int, bytes, bool]]

SYNC_PROTOCOL = "/corestate/sync/2"
HELLO, REPLY, PUSH = 1, 2, 3
MAX_AUTHORS = 4096
MAX_MESSAGE_BYTES = 1 << 20
MAX_U64 = (1 << 64) - 1


class Send(NamedTuple):
    """Send the author's batches of ``epoch`` that hold seqs >= ``from_seq``."""

    author: str
    epoch: int
    from_seq: int


def plan(local: VersionVector, remote: VersionVector) -> list[Send]:
    """What a replica at ``local`` must send to one at ``remote``, authors in sorted order.

    An author the remote lacks, or holds in an older epoch, is sent from seq 1 of the
    local epoch (the new epoch supersedes the old one there); an author both hold in one
    epoch is sent after the remote's seq; an author the remote holds in a newer epoch is
    not sent at all.
    """
    out: list[Send] = []
    for author in sorted(local):
        epoch, seq = local[author][:2]
        theirs = remote.get(author)
        if theirs is None or theirs[0] < epoch:
            out.append(Send(author, epoch, 1))
        elif theirs[0] == epoch and theirs[1] < seq:
            out.append(Send(author, epoch, theirs[1] + 1))
    return out


# ---------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Hello:
    vector: FullVector


@dataclass(frozen=True, slots=True)
class Reply:
    vector: FullVector
    batches: tuple[bytes, ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class Push:
    batches: tuple[bytes, ...]


Message = Hello | Reply | Push


def _vector_obj(v: VersionVector) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for a, entry in v.items():
        if len(entry) != 4:
            raise ValueError("a vector on the wire carries epoch, seq, head and forked")
        out[a] = list(entry)
    return out


def encode(msg: Message) -> bytes:
    if isinstance(msg, Hello):
        obj: list[object] = [HELLO, _vector_obj(msg.vector)]
    elif isinstance(msg, Reply):
        obj = [REPLY, _vector_obj(msg.vector), list(msg.batches), msg.complete]
    else:
        obj = [PUSH, list(msg.batches)]
    return cbor2.dumps(obj, canonical=True)


def encode_vector(v: VersionVector) -> bytes:
    """The compact form of a vector alone (what a node keeps of a peer, or sends in Hello)."""
    return cbor2.dumps(_vector_obj(v), canonical=True)


def _decode_vector(obj: object) -> FullVector:
    if type(obj) is not dict or len(obj) > MAX_AUTHORS:
        raise BadBatch(f"a version vector is a map of at most {MAX_AUTHORS} authors")
    out: FullVector = {}
    for a, es in obj.items():
        if type(a) is not str or type(es) is not list or len(es) != 4:
            raise BadBatch("a version vector maps author text to [epoch, seq, head, forked]")
        e, s, h, f = es
        if type(e) is not int or type(s) is not int or not (0 <= e <= MAX_U64 and 0 <= s <= MAX_U64):
            raise BadBatch("epoch and seq are unsigned integers")
        if type(h) is not bytes or len(h) != 32 or type(f) is not bool:
            raise BadBatch("a vector's head is a 32-byte batch id and forked a boolean")
        out[a] = (e, s, h, f)
    return out


def _decode_batches(obj: object) -> tuple[bytes, ...]:
    if type(obj) is not list or not all(type(b) is bytes for b in obj):
        raise BadBatch("batches are an array of byte strings")
    return tuple(obj)


def _loads_canonical(data: bytes) -> object:
    if type(data) is not bytes or len(data) > MAX_MESSAGE_BYTES:
        raise BadBatch(f"a sync message is bytes of at most {MAX_MESSAGE_BYTES}")
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # hostile input: any decoder failure means malformed
        raise BadBatch(f"not CBOR: {type(e).__name__}: {e}") from None
    # Before re-encoding: canonical encoding of map-keyed maps or shared references takes
    # time exponential in a few hundred bytes (protocol/cborguard.py).
    if (why := cborguard.problem(obj, len(data))) is not None:
        raise BadBatch(f"not plain CBOR data: {why}")
    try:
        again = cbor2.dumps(obj, canonical=True)
    except Exception as e:
        raise BadBatch(f"not re-encodable: {type(e).__name__}: {e}") from None
    if again != data:
        raise BadBatch("not the canonical CBOR encoding (or trailing bytes)")
    return obj


def decode_vector(data: bytes) -> FullVector:
    return _decode_vector(_loads_canonical(data))


def decode(data: bytes) -> Message:
    """Parse a sync message; raises :class:`BadBatch` unless it is canonical and valid."""
    obj = _loads_canonical(data)
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise BadBatch("a sync message is an array [type, ...]")
    t = obj[0]
    if t == HELLO and len(obj) == 2:
        return Hello(_decode_vector(obj[1]))
    if t == REPLY and len(obj) == 4 and type(obj[3]) is bool:
        return Reply(_decode_vector(obj[1]), _decode_batches(obj[2]), obj[3])
    if t == PUSH and len(obj) == 2:
        return Push(_decode_batches(obj[1]))
    raise BadBatch(f"unknown sync message type {t} or wrong field count")


# ---------------------------------------------------------------------------------------
# One exchange, driven by the runtime (or a test) on two catalogs


def _take(raws: Iterable[bytes], budget: int) -> tuple[tuple[bytes, ...], bool]:
    """Whole batches from ``raws`` (consumed lazily) while they fit ``budget``; whether all did."""
    out: list[bytes] = []
    used = 0
    for r in raws:
        if used + len(r) + 8 > budget:  # a single batch over the budget is never sent
            return tuple(out), False
        out.append(r)
        used += len(r) + 8
    return tuple(out), True


def hello(catalog: Catalog) -> bytes:
    """Message 1, from the initiator."""
    return encode(Hello(catalog.sync_vector()))


def answer(catalog: Catalog, message: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES // 2) -> bytes:
    """Message 2: the batches the initiator lacks (at most ``max_bytes``) and our vector."""
    msg = decode(message)
    if not isinstance(msg, Hello):
        raise BadBatch("expected a hello")
    vector = catalog.sync_vector()
    batches, complete = _take((raw for raw, _ in catalog.missing(msg.vector)), max_bytes)
    return encode(Reply(vector, batches, complete))


def finish(
    catalog: Catalog,
    message: bytes,
    *,
    members: Membership,
    now_ms: int,
    revoked: Membership = frozenset(),
    max_bytes: int = MAX_MESSAGE_BYTES // 2,
) -> tuple[bytes | None, list[Verdict], bool]:
    """Apply the reply; return (message 3 or None, verdicts, complete).

    ``complete`` is False when another exchange would carry more: the reply or the push
    was cut at its budget, or the push showed the responder a fork this side holds no
    evidence of yet (the responder, now holding evidence, sends it back next time).
    """
    msg = decode(message)
    if not isinstance(msg, Reply):
        raise BadBatch("expected a reply")
    verdicts = apply_all(catalog, msg.batches, members=members, now_ms=now_ms, revoked=revoked)
    revealed = False

    def raws() -> Iterator[bytes]:
        nonlocal revealed
        for raw, why in catalog.missing(msg.vector):
            revealed = revealed or why == "conflict"
            yield raw
    batches, pushed_all = _take(raws(), max_bytes)
    push = encode(Push(batches)) if batches else None
    return push, verdicts, msg.complete and pushed_all and not revealed


def absorb(
    catalog: Catalog,
    message: bytes,
    *,
    members: Membership,
    now_ms: int,
    revoked: Membership = frozenset(),
) -> list[Verdict]:
    """Apply message 3 at the responder."""
    msg = decode(message)
    if not isinstance(msg, Push):
        raise BadBatch("expected a push")
    return apply_all(catalog, msg.batches, members=members, now_ms=now_ms, revoked=revoked)


def apply_all(
    catalog: Catalog,
    batches: Sequence[bytes],
    *,
    members: Membership,
    now_ms: int,
    revoked: Membership = frozenset(),
) -> list[Verdict]:
    """Apply batches in any order: a ``gap`` is retried after the others, until no progress.

    Returns the final verdict of each batch, in the order given; a batch still gapped at the
    end keeps its ``gap`` verdict (the sync layer asks the peer from ``need_seq``).
    """
    verdicts: list[Verdict | None] = [None] * len(batches)
    pending = list(range(len(batches)))
    while pending:
        waiting: list[int] = []
        for i in pending:
            v = catalog.apply(batches[i], members=members, now_ms=now_ms, revoked=revoked)
            verdicts[i] = v
            if v.kind == "gap":
                waiting.append(i)
        if len(waiting) == len(pending):
            break
        pending = waiting
    _gapped_forks(catalog, batches, verdicts, pending)
    return [v for v in verdicts if v is not None]


def _gapped_forks(catalog: Catalog, batches: Sequence[bytes], verdicts: list[Verdict | None],
                  gapped: list[int]) -> None:
    """Two batches still gapped (ahead of what this replica holds) that the author signed
    for overlapping seqs of one epoch are fork evidence by themselves: a replica that is
    behind learns of a fork from the two batches a peer holding evidence sends it."""
    from corestate.node.core.catalog import Batch

    seen: dict[tuple[str, int], list[Batch]] = {}
    for i in gapped:
        v = verdicts[i]
        if v is None or v.kind != "gap":
            continue
        b = Batch.decode(batches[i])  # decoded and verified once already: it gapped
        for o in seen.setdefault((b.author, b.epoch), []):
            if o.batch_id != b.batch_id and o.seq_first <= b.seq_last and b.seq_first <= o.seq_last:
                verdicts[i] = catalog.evidence(o, b)
                break
        else:
            seen[(b.author, b.epoch)].append(b)
