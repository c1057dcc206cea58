"""Group membership: a signed operation graph, evaluated as a set (a state-based CRDT).

Role: who belongs to a group and who administers it, agreed without a coordinator and
through partitions. Admins sign *ops* (create, add, remove, promote, demote); each op names
the heads of the op graph its signer had seen (``parents``). Replicas exchange ops (merge
is set union) and each evaluates the set with :func:`evaluate`. Pure: no I/O, no clock
(``hlc`` is carried for display only and never orders anything), no randomness.

Op format (SPEC.md, "Membership"), canonical CBOR throughout::

    op      = { "kind": tstr, "subject": PeerID, "signer": PeerID,
                "parents": [* bstr .size 32], "hlc": uint,
                ? "group": bstr .size 32,       ; every kind but create
                ? "role": "admin" / "member",   ; add only
                ? "name": tstr,                 ; create only
                "signature": bstr .size 64 }

The signed bytes are ``OP_PREFIX + canonical CBOR(op without "signature")``; the
signature is Ed25519 under the key inlined in ``signer``; ``op_id = BLAKE3(signed bytes)``.
The *group id* is the op id of the group's create op, which therefore does not carry a
"group" field (it cannot contain its own hash); so each group has exactly one create, by
construction: a create with another id is another group's. A create's subject is its
signer (the creator, first admin) and it has no parents; every other op has 1 to
``MAX_PARENTS`` parents, sorted and distinct. The decoder accepts exactly these encodings
(``encode_op(decode_op(b)) == b``) and raises :class:`BadMemberOp` for anything else;
a :class:`MemberOp` cannot be constructed with malformed fields.

Evaluation of a set S of ops for group G (the rules, in the order they are checked):

1. Copies are merged by op id (a validly signed copy wins over a forged one with the same
   signed bytes). Ops of another group, and ops without a valid signature -> ``void``.
2. An op whose parents are not all present and delivered is *pending* (``pending``; the
   absent parent ids are ``missing``, for sync to fetch). Delivered ops are processed in
   the *canonical order* L: Kahn's algorithm taking, among the ops whose parents are all
   taken, the one with the smallest op id (bytewise). L is a function of the set alone
   and respects causality; it is the only tie-break used anywhere.
3. Ops are replayed in L. An op x by signer s on subject p *counts* (is effective) only if:
   a. s has not been removed by an effective removal r that x is not causally before
      ("ops of a removed signer that are not causally before its removal are void", and
      their effects are undone, transitively: whatever drew authority from them falls);
      exception, *mutual removal*: a removal of r's own signer is not voided by r;
   b. s is an admin in the *effective causal past* of x (the ops among x's transitive
      parents that count); a remove of oneself (``group leave``) needs only membership;
   c. add: p is neither a member nor removed in x's past, and no effective removal of p
      exists that x is not causally before ("removal wins and is permanent", also over a
      concurrent add); promote/demote: p is a member in x's past and not removed;
      remove: p is a member in x's past (a second, causally later removal is void; two
      concurrent removals of p both count);
   d. after x, at least one admin remains in the replayed state (*last admin*): of
      concurrent removals/demotions that together would leave no admin, the one later in
      L is void.
   A role is decided per peer by its effective role-setting ops (create/add -> the given
   role, promote -> admin, demote -> member) that no other such op on it causally
   follows: if any of them says member, the peer is a member (the lesser role wins a
   concurrent promote/demote, as removal wins an add). Removal is permanent: a peer
   re-joins only under a new identity (the next key generation: a new PeerID, a plain add).
4. Rule 3a/3c can void an op that L placed *before* the removal that voids it. The replay
   is therefore repeated with those ops forced void (and whatever followed from them
   re-evaluated) until the forced set is a fixpoint. Removal cycles of three or more
   admins (A removes B, B removes C, C removes A, all concurrent) have no consistent
   outcome under the rules; if the iteration revisits a forced set, forced voids only
   accumulate from then on, which terminates and is still a function of the set.

Outcomes worth knowing:
- A removes B while B concurrently removes A: both are removed (each removal was made by an
  admin, and a removal of one's remover is exempt from 3a), unless no admin would remain;
  then the removal first in L counts and the other is void. Why not "first wins" always:
  an admin key stolen with a laptop can always sign ops "concurrent" with its removal (on
  old parents), so a tie-break it might win keeps it in the group with its other
  concurrent ops valid; with "both go", it can at most take down the admins that remove
  it, and a remaining admin re-adds them under their next generation.
- B's other ops concurrent with its removal (adds, promotions, removals of third peers)
  are void, and so is everything that drew authority from them.
- Tie-breaks by op id can be biased by a signer who grinds (signs many variants of an op,
  e.g. with different ``hlc``); that only matters among concurrent ops that conflict, and
  an attacker with an admin key can do worse by acting first.

What a replica keeps (:func:`retain`): the ops that count and their causal past, plus a
few (``MAX_IDLE_OPS_PER_SIGNER``) other ops per signer that is or was a member; ops of
signers that never belonged are dropped, so a member cannot jam the group with ops signed
by throwaway keys. How far a removed member's catalog partition is kept: :func:`cutoffs`
(a leave's self-named point is bounded by what the replica had seen).

Invariants: :func:`evaluate` is a pure function of the *set* of ops (order, duplicates and
forged copies of valid ops do not matter), so :func:`merge` (set union) is commutative,
associative and idempotent, and replicas that hold the same ops agree; every evaluated
group that has its create op has at least one admin.

Cost: O(n log n) ordering plus O(n^2 / 64) words of ancestry bitsets (about 6 MB for
10,000 ops); each op of a replay is a few big-int ANDs over them, and a history needs
one replay more than its depth of removals voiding earlier-placed ops (usually 1 to 3).
Signature checks dominate a cold evaluation (about 0.25 ms per op here): they are
remembered on each op object (ops from :func:`sign_op` start verified).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import blake3
import cbor2
import nacl.exceptions
import nacl.signing
from corestate.node.errors import AmbiguousGroup, BadMemberOp
from corestate.protocol import cborguard
from corestate.protocol.keys import peer_id_from_public_key, public_key_from_peer_id

Kind = Literal["create", "add", "remove", "promote", "demote"]
Role = Literal["admin", "member"]

OP_PREFIX = b"CoreState 2026-11-25 member op\0"
KINDS: tuple[Kind, ...] = ("create", "add", "remove", "promote", "demote")
ROLES: tuple[Role, ...] = ("admin", "member")
ID_BYTES = 32
SIGNATURE_BYTES = 64
# Heads stay few (one per concurrent writer); 256 is far above any real fan-in.
MAX_PARENTS = 256
MAX_NAME_BYTES = 256
MAX_PEER_ID_CHARS = 64
MAX_OP_BYTES = 16 * 1024
HLC_LIMIT = 1 << 64
# Ops that do not count, kept per signer that is or was a member (see retain): an honest
# node signs a handful (a leave, an add that lost to a concurrent removal, an admin's ops
# concurrent with its removal); a member signing junk cannot grow the group past this.
MAX_IDLE_OPS_PER_SIGNER = 32

# Reasons in GroupState.void (stable strings: tests and the CLI rely on them).
VOID_OTHER_GROUP = "another group"
VOID_BAD_SIGNATURE = "bad signature"
VOID_SIGNER_REMOVED = "signer removed"
VOID_NOT_ADMIN = "signer not admin"
VOID_SUBJECT_REMOVED = "subject removed"
VOID_ALREADY_MEMBER = "already a member"
VOID_NOT_MEMBER = "subject not a member"
VOID_ALREADY_REMOVED = "already removed"
VOID_LAST_ADMIN = "would leave no admin"


@dataclass(frozen=True, kw_only=True)
class MemberOp:
    """One signed membership op. Construction validates every field (BadMemberOp)."""

    group: bytes
    kind: Kind
    subject: str
    signer: str
    parents: tuple[bytes, ...]
    hlc: int
    signature: bytes
    role: Role | None = None
    name: str | None = None
    # remove only, optional: the newest (epoch, seq) of the subject's catalog partition the
    # signer had seen; replicas keep the partition up to there (what the member did while
    # it belonged) and refuse the rest. Absent: the partition is dropped.
    upto: tuple[int, int] | None = None
    signed_bytes: bytes = field(init=False, repr=False, compare=False)
    op_id: bytes = field(init=False, repr=False, compare=False)
    _verified: bool | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_fields(self)
        signed = OP_PREFIX + cbor2.dumps(_signed_map(self), canonical=True)
        op_id = blake3.blake3(signed).digest()
        if self.kind == "create" and self.group != op_id:
            raise BadMemberOp("a create's group id must be its own op id")
        object.__setattr__(self, "signed_bytes", signed)
        object.__setattr__(self, "op_id", op_id)


def _check_peer(what: str, value: object) -> None:
    if type(value) is not str or len(value) > MAX_PEER_ID_CHARS:
        raise BadMemberOp(f"{what} is not a PeerID string")
    if public_key_from_peer_id(value) is None:
        raise BadMemberOp(f"{what} is not an Ed25519 PeerID")


def _check_fields(op: MemberOp) -> None:
    if type(op.group) is not bytes or len(op.group) != ID_BYTES:
        raise BadMemberOp(f"group id must be {ID_BYTES} bytes")
    if type(op.kind) is not str or op.kind not in KINDS:
        raise BadMemberOp(f"unknown kind {op.kind!r}")
    _check_peer("subject", op.subject)
    _check_peer("signer", op.signer)
    if type(op.parents) is not tuple:
        raise BadMemberOp("parents must be a tuple")
    for p in op.parents:
        if type(p) is not bytes or len(p) != ID_BYTES:
            raise BadMemberOp(f"a parent is not a {ID_BYTES}-byte op id")
    if any(a >= b for a, b in zip(op.parents, op.parents[1:], strict=False)):
        raise BadMemberOp("parents must be sorted and distinct")
    if op.kind == "create":
        if op.parents:
            raise BadMemberOp("a create has no parents")
        if op.subject != op.signer:
            raise BadMemberOp("a create's subject is its signer")
    elif not 1 <= len(op.parents) <= MAX_PARENTS:
        raise BadMemberOp(f"an op other than create names 1 to {MAX_PARENTS} parents")
    if type(op.hlc) is not int or not 0 <= op.hlc < HLC_LIMIT:
        raise BadMemberOp("hlc must be an unsigned 64-bit int")
    if type(op.signature) is not bytes or len(op.signature) != SIGNATURE_BYTES:
        raise BadMemberOp(f"signature must be {SIGNATURE_BYTES} bytes")
    if op.kind == "add":
        if type(op.role) is not str or op.role not in ROLES:
            raise BadMemberOp("an add names a role, admin or member")
    elif op.role is not None:
        raise BadMemberOp("only an add names a role")
    if op.kind == "create":
        if type(op.name) is not str:
            raise BadMemberOp("a create names the group")
        try:
            size = len(op.name.encode())
        except UnicodeEncodeError:
            raise BadMemberOp("the group name is not valid Unicode") from None
        if size > MAX_NAME_BYTES:
            raise BadMemberOp(f"the group name is longer than {MAX_NAME_BYTES} bytes")
    elif op.name is not None:
        raise BadMemberOp("only a create names the group")
    if op.upto is not None:
        if op.kind != "remove":
            raise BadMemberOp("only a remove names upto")
        if (type(op.upto) is not tuple or len(op.upto) != 2
                or any(type(x) is not int or not 0 <= x < HLC_LIMIT for x in op.upto)):
            raise BadMemberOp("upto is [epoch, seq], two unsigned ints")


def _signed_map(op: MemberOp) -> dict[str, Any]:
    m: dict[str, Any] = {
        "kind": op.kind,
        "subject": op.subject,
        "signer": op.signer,
        "parents": list(op.parents),
        "hlc": op.hlc,
    }
    if op.kind != "create":
        m["group"] = op.group
    if op.role is not None:
        m["role"] = op.role
    if op.name is not None:
        m["name"] = op.name
    if op.upto is not None:
        m["upto"] = list(op.upto)
    return m


def sign_op(
    signing_key: nacl.signing.SigningKey,
    *,
    kind: Kind,
    group: bytes | None = None,
    subject: str | None = None,
    role: Role | None = None,
    parents: Iterable[bytes] = (),
    hlc: int = 0,
    name: str | None = None,
    upto: tuple[int, int] | None = None,
) -> MemberOp:
    """A signed op by ``signing_key``'s identity (its PeerID is the signer).

    ``parents`` are sorted and deduplicated here (pass ``GroupState.heads``). A create needs
    ``name`` and takes its group id from its own op id; every other kind needs ``group``
    and ``subject``. Raises BadMemberOp for fields that do not make a well-formed op.
    """
    signer = peer_id_from_public_key(bytes(signing_key.verify_key))
    if kind == "create":
        subject = signer if subject is None else subject
    elif group is None or subject is None:
        raise BadMemberOp(f"a {kind} names its group and its subject")
    fields: dict[str, Any] = dict(
        kind=kind,
        subject=subject,
        signer=signer,
        parents=tuple(sorted(set(parents))),
        hlc=hlc,
        role=role,
        name=name,
        upto=upto,
    )
    if kind == "create":
        # A create's signed bytes carry no group; its group id is their hash (the
        # constructor below checks the fields and that identity).
        body = {k: v for k, v in fields.items() if v is not None}
        body["parents"] = list(body["parents"])
        try:
            signed = OP_PREFIX + cbor2.dumps(body, canonical=True)
        except Exception:  # fields of types CBOR cannot carry
            raise BadMemberOp("a create with unencodable fields") from None
        group = blake3.blake3(signed).digest()
    assert group is not None
    signature = signing_key.sign(
        MemberOp(**fields, group=group, signature=bytes(SIGNATURE_BYTES)).signed_bytes
    ).signature
    op = MemberOp(**fields, group=group, signature=signature)
    object.__setattr__(op, "_verified", True)
    return op


def encode_op(op: MemberOp) -> bytes:
    """The canonical wire bytes of ``op``."""
    return bytes(cbor2.dumps({**_signed_map(op), "signature": op.signature}, canonical=True))


def decode_op(data: bytes | bytearray | memoryview) -> MemberOp:
    """The op encoded in ``data``; raises BadMemberOp for anything but a canonical encoding."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadMemberOp("not bytes")
    raw = bytes(data)
    if len(raw) > MAX_OP_BYTES:
        raise BadMemberOp(f"longer than {MAX_OP_BYTES} bytes")
    try:
        obj = cbor2.loads(raw)
    except Exception as e:  # cbor2 raises several types on hostile input; all mean "bad"
        raise BadMemberOp(f"not CBOR ({type(e).__name__})") from None
    # A create is re-encoded below: refuse first what makes that exponential (cborguard.py).
    if (why := cborguard.problem(obj, len(raw))) is not None:
        raise BadMemberOp(f"not plain CBOR data: {why}")
    if type(obj) is not dict:
        raise BadMemberOp("not a CBOR map")
    kind = obj.get("kind")
    if type(kind) is not str or kind not in KINDS:
        raise BadMemberOp("unknown kind")
    expected = {"kind", "subject", "signer", "parents", "hlc", "signature"}
    expected |= {"name"} if kind == "create" else {"group"}
    if kind == "add":
        expected.add("role")
    if kind == "remove" and "upto" in obj:
        expected.add("upto")
    if set(obj) != expected:
        raise BadMemberOp(f"a {kind} op has exactly the fields {sorted(expected)}")
    if type(obj["parents"]) is not list:
        raise BadMemberOp("parents must be an array")
    if kind == "create":
        unsigned = {k: v for k, v in obj.items() if k != "signature"}
        try:
            body = cbor2.dumps(unsigned, canonical=True)
        except Exception:  # a decoded value that does not re-encode is not ours
            raise BadMemberOp("unencodable create") from None
        group = blake3.blake3(OP_PREFIX + body).digest()
    else:
        group = obj["group"]
    op = MemberOp(
        group=group,
        kind=kind,
        subject=obj["subject"],
        signer=obj["signer"],
        parents=tuple(obj["parents"]),
        hlc=obj["hlc"],
        role=obj.get("role"),
        name=obj.get("name"),
        upto=tuple(obj["upto"]) if type(obj.get("upto")) is list else obj.get("upto"),
        signature=obj["signature"],
    )
    if encode_op(op) != raw:
        raise BadMemberOp("not the canonical encoding")
    return op


def verify_op(op: MemberOp) -> bool:
    """Whether ``op``'s signature is valid under its signer's key (remembered on the op)."""
    if op._verified is None:
        public_key = public_key_from_peer_id(op.signer)
        try:
            nacl.signing.VerifyKey(public_key).verify(op.signed_bytes, op.signature)
            ok = True
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            ok = False
        object.__setattr__(op, "_verified", ok)
    return bool(op._verified)


def merge(a: frozenset[MemberOp], b: frozenset[MemberOp]) -> frozenset[MemberOp]:
    """The join of two replicas: set union (evaluation is a function of the set)."""
    return a | b


@dataclass(frozen=True)
class GroupState:
    """The evaluated membership of one group.

    ``members`` maps each current member to its role; ``removed`` is permanent; ``void``
    maps every op that does not count to why; ``pending`` ops wait for ``missing`` parents;
    ``heads`` are the delivered ops no delivered op names as parent: a new op's parents.
    ``name`` is None until the create op is known.
    """

    group: bytes
    name: str | None
    members: dict[str, Role]
    removed: frozenset[str]
    void: dict[bytes, str]
    pending: frozenset[bytes]
    missing: frozenset[bytes]
    heads: tuple[bytes, ...]
    # The delivered ops in the canonical order L (parents before children): the order a
    # replica sends ops in, so that any prefix of it is causally closed.
    order: tuple[bytes, ...] = ()

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(p for p, r in self.members.items() if r == "admin")

    def role(self, peer: str) -> Role | None:
        return self.members.get(peer)


def cutoffs(
    ops: Iterable[MemberOp],
    state: GroupState,
    seen: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, tuple[int, int]]:
    """How far each removed member's catalog partition is kept: the latest ``upto`` among
    the effective removals of it. Removed members without one are absent: their partition
    is dropped.

    A removal by another member names what its signer had seen of the partition. A member
    that leaves (removes itself) names its own point, which could lie far beyond anything it
    had published, letting it (or an accomplice forwarding its batches) keep writing after
    it left: such a self-named point counts only up to ``seen[subject]``, what this replica
    held of the partition when it learned of the leave (absent: nothing is kept on its word).
    """
    seen = seen or {}
    out: dict[str, tuple[int, int]] = {}
    for op in ops:
        if (op.kind == "remove" and op.upto is not None and op.subject in state.removed
                and op.op_id not in state.void and op.op_id not in state.pending):
            point = op.upto
            if op.signer == op.subject:
                point = min(point, seen.get(op.subject, (0, 0)))
            out[op.subject] = max(out.get(op.subject, (0, 0)), point)
    return out


def self_removed(ops: Iterable[MemberOp], state: GroupState) -> frozenset[str]:
    """The removed members whose effective removals include one they signed themselves (a
    leave): the replica records what it held of their partitions (see :func:`cutoffs`)."""
    return frozenset(
        op.subject for op in ops
        if op.kind == "remove" and op.signer == op.subject and op.subject in state.removed
        and op.op_id not in state.void and op.op_id not in state.pending
    )


def retain(
    ops: Iterable[MemberOp],
    state: GroupState,
    *,
    idle_per_signer: int = MAX_IDLE_OPS_PER_SIGNER,
) -> frozenset[bytes]:
    """The op ids a replica keeps of ``ops`` (evaluated as ``state``); the rest it drops.

    Every signed op naming the group would otherwise be stored, and sent, forever, whoever
    signed it: a member could jam the group with ops signed by throwaway keys. Kept:

    - every op that counts, and its causal past (what those ops need to be evaluated);
    - of the other ops (void or pending) of a signer that is or was a member, at most
      ``idle_per_signer``, smallest op ids first (a function of the set, so replicas
      that saw the same ops keep the same ones).

    Dropping an op that does not count and that no kept op descends from changes nothing
    of the evaluation of the others; ops of signers that never belonged are all dropped.
    """
    valid: dict[bytes, MemberOp] = {}
    for op in ops:
        oid = op.op_id
        if op.group == state.group and state.void.get(oid) not in (VOID_OTHER_GROUP, VOID_BAD_SIGNATURE):
            valid[oid] = op
    keep: set[bytes] = set()
    stack = [oid for oid in state.order if oid not in state.void]
    while stack:
        oid = stack.pop()
        if oid in keep or oid not in valid:
            continue
        keep.add(oid)
        stack.extend(valid[oid].parents)
    belonged = set(state.members) | state.removed
    idle: dict[str, list[bytes]] = {}
    for oid, op in valid.items():
        if oid not in keep and op.signer in belonged:
            idle.setdefault(op.signer, []).append(oid)
    for ids in idle.values():
        keep.update(sorted(ids)[:idle_per_signer])
    return frozenset(keep)


def evaluate(ops: Iterable[MemberOp], group: bytes | None = None) -> GroupState:
    """The membership state of ``group`` given the set ``ops`` (see the module rules).

    Without ``group``, every op must name the same group (else AmbiguousGroup): callers
    that hold ops from untrusted peers pass the group id they joined.
    """
    ops = list(ops)
    if group is None:
        groups = {op.group for op in ops}
        if len(groups) != 1:
            raise AmbiguousGroup(len(groups))
        group = groups.pop()
    void: dict[bytes, str] = {}
    valid: dict[bytes, MemberOp] = {}
    for op in ops:
        oid = op.op_id
        if oid in valid:
            continue
        if op.group != group:
            void[oid] = VOID_OTHER_GROUP
        elif not verify_op(op):
            void[oid] = VOID_BAD_SIGNATURE
        else:
            valid[oid] = op
            void.pop(oid, None)

    # Canonical order: Kahn's algorithm, smallest op id first among the ready ops.
    children: dict[bytes, list[bytes]] = {}
    waiting: dict[bytes, int] = {}
    missing: set[bytes] = set()
    heap: list[bytes] = []
    for oid, op in valid.items():
        waiting[oid] = len(op.parents)
        if not op.parents:
            heap.append(oid)
        for p in op.parents:
            if p in valid:
                children.setdefault(p, []).append(oid)
            else:
                missing.add(p)
    heapq.heapify(heap)
    order: list[bytes] = []
    while heap:
        oid = heapq.heappop(heap)
        order.append(oid)
        for c in children.get(oid, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, c)
    delivered = set(order)
    named = {p for oid in order for p in valid[oid].parents}
    heads = tuple(sorted(delivered - named))
    pending = frozenset(valid.keys() - delivered)

    graph = _Graph([valid[oid] for oid in order])
    forced: dict[int, str] = {}
    seen: set[frozenset[tuple[int, str]]] = set()
    accumulate = False
    while True:
        replay = graph.replay(forced)
        nxt = graph.voided_by_removals(replay)
        if accumulate:
            nxt = {**nxt, **forced}
        if nxt == forced:
            break
        key = frozenset(nxt.items())
        if key in seen:
            accumulate = True
            nxt = {**nxt, **forced}
        seen.add(key)
        forced = nxt

    for i, why in replay.why.items():
        void[order[i]] = why
    return GroupState(
        group=group,
        name=graph.ops[0].name if order else None,
        members={p: r for p, r in sorted(replay.role.items())},
        removed=frozenset(replay.removed_by),
        void=dict(sorted(void.items())),
        pending=pending,
        missing=frozenset(missing),
        heads=heads,
        order=tuple(order),
    )


@dataclass(slots=True)
class _Replay:
    why: dict[int, str]  # op index -> why it does not count
    removed_by: dict[str, list[int]]  # peer -> its effective removals, in L order
    role: dict[str, Role]  # current role of every member (removed peers absent)
    # peer -> bitset of the effective ops on it: role-setting ones, removals
    role_ops: dict[str, int]
    removals: dict[str, int]


def _bits_down(mask: int) -> Iterator[int]:
    """The set bits of ``mask``, highest first."""
    while mask:
        j = mask.bit_length() - 1
        yield j
        mask ^= 1 << j


class _Graph:
    """The delivered ops in canonical order, with ancestry bitsets for causal queries.

    ``anc[i]`` has bit j set iff op j is in the transitive past of op i; causal questions
    ("which effective ops on peer p are in the past of op i") are a few big-int ANDs.
    """

    def __init__(self, ops: list[MemberOp]) -> None:
        self.ops = ops
        index = {op.op_id: i for i, op in enumerate(ops)}
        self.kind = [op.kind for op in ops]
        self.signer = [op.signer for op in ops]
        self.subject = [op.subject for op in ops]
        # The role an op sets on its subject (None for a remove).
        self.sets: list[Role | None] = []
        self.anc: list[int] = []
        self.by: dict[str, int] = {}  # peer -> bitset of the ops it signed
        self.about: dict[str, int] = {}  # peer -> bitset of the role ops on it
        for i, op in enumerate(ops):
            a = 0
            for p in op.parents:
                j = index[p]
                a |= self.anc[j] | (1 << j)
            self.anc.append(a)
            self.sets.append(
                "admin"
                if op.kind in ("create", "promote")
                else "member"
                if op.kind == "demote"
                else op.role
            )
            self.by[op.signer] = self.by.get(op.signer, 0) | 1 << i
            if op.kind != "remove":
                self.about[op.subject] = self.about.get(op.subject, 0) | 1 << i

    def _before(self, j: int, i: int) -> bool:
        """Whether op j is in the causal past of op i."""
        return bool(self.anc[i] >> j & 1)

    def _role_in_past(self, peer: str, i: int, rep: _Replay) -> Role | Literal["removed"] | None:
        """``peer``'s role in the effective causal past of op i."""
        past = self.anc[i]
        if rep.removals.get(peer, 0) & past:
            return "removed"
        left = rep.role_ops.get(peer, 0) & past
        if not left:
            return None
        lesser = False
        # The maximal ones, highest in L first: nothing later in L is in an op's past, so
        # the highest remaining candidate is maximal; drop it and its past, repeat.
        while left:
            t = left.bit_length() - 1
            lesser = lesser or self.sets[t] == "member"
            left &= ~(self.anc[t] | 1 << t)
        return "member" if lesser else "admin"

    def replay(self, forced: dict[int, str]) -> _Replay:
        rep = _Replay(why={}, removed_by={}, role={}, role_ops={}, removals={})
        tops: dict[str, list[int]] = {}  # peer -> its maximal effective role ops so far
        admins = 0
        for i in range(len(self.ops)):
            if i in forced:
                rep.why[i] = forced[i]
                continue
            kind, p = self.kind[i], self.subject[i]
            if kind != "create":
                reason = self._check(i, rep)
                if reason is not None:
                    rep.why[i] = reason
                    continue
            before = rep.role.get(p)
            after: Role | None
            if kind == "remove":
                after = None
                new_tops: list[int] = []
            else:
                new_tops = [t for t in tops.get(p, ()) if not self._before(t, i)] + [i]
                after = "member" if any(self.sets[t] == "member" for t in new_tops) else "admin"
            change = (after == "admin") - (before == "admin")
            if admins + change <= 0:
                rep.why[i] = VOID_LAST_ADMIN
                continue
            admins += change
            if kind == "remove":
                rep.removed_by.setdefault(p, []).append(i)
                rep.removals[p] = rep.removals.get(p, 0) | 1 << i
                rep.role.pop(p, None)
                tops.pop(p, None)
            else:
                tops[p] = new_tops
                rep.role_ops[p] = rep.role_ops.get(p, 0) | 1 << i
                rep.role[p] = after  # type: ignore[assignment]  # not None: not a remove
        return rep

    def _check(self, i: int, rep: _Replay) -> str | None:
        """Why op i (not a create) does not count, or None (rules 3a to 3c)."""
        kind, s, p = self.kind[i], self.signer[i], self.subject[i]
        # 3a, removals earlier in L (later ones are handled by voided_by_removals).
        for r in rep.removed_by.get(s, ()):
            if not (kind == "remove" and p == self.signer[r]):
                return VOID_SIGNER_REMOVED
        mine = self._role_in_past(s, i, rep)
        if mine == "removed":
            return VOID_SIGNER_REMOVED
        if kind == "remove" and p == s:
            if mine is None:
                return VOID_NOT_MEMBER
        elif mine != "admin":
            return VOID_NOT_ADMIN
        theirs = self._role_in_past(p, i, rep)
        if kind == "remove":
            if theirs == "removed":
                return VOID_ALREADY_REMOVED
            if theirs is None:
                return VOID_NOT_MEMBER
            return None
        if theirs == "removed" or p in rep.removed_by:
            return VOID_SUBJECT_REMOVED
        if kind == "add" and theirs is not None:
            return VOID_ALREADY_MEMBER
        if kind != "add" and theirs is None:
            return VOID_NOT_MEMBER
        return None

    def voided_by_removals(self, rep: _Replay) -> dict[int, str]:
        """Ops placed in L before an effective removal that voids them (rules 3a, 3c)."""
        out: dict[int, str] = {}
        for peer, removals in rep.removed_by.items():
            for r in removals:
                remover = self.signer[r]
                earlier_concurrent = ((1 << r) - 1) & ~self.anc[r]
                for j in _bits_down(self.by.get(peer, 0) & earlier_concurrent):
                    if self.kind[j] == "remove" and self.subject[j] == remover:
                        continue  # mutual removal
                    out.setdefault(j, VOID_SIGNER_REMOVED)
                for j in _bits_down(self.about.get(peer, 0) & earlier_concurrent):
                    out.setdefault(j, VOID_SUBJECT_REMOVED)
        return dict(sorted(out.items()))
