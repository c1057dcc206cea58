"""Group wire messages: catalog sync (``/corestate/sync/2``) and invites (``/corestate/join/2``).

Same frames and canonical CBOR maps as the share service (SPEC.md section 8), with the
message version ``v`` = 2. Membership ops and catalog batches travel as the signed bytes
their authors made (their formats are in ``node/core/membership.py`` and
``node/core/catalog.py``): a node forwards them byte for byte and every receiver verifies
them itself.

Sync, one exchange per stream (at most three messages, then the initiator closes):
  -> ``SyncOpen``  the group, the heads of the initiator's op graph, and its catalog hello
                   (version vector with head batch ids);
  <- ``SyncReply`` a page of the ops the initiator lacks (canonical order, so every page is
                   causally closed) and whether more follow, the responder's heads, and the
                   catalog answer (a page of the batches the initiator lacks + the
                   responder's vector);
  -> ``SyncPush``  a page of the ops and batches the responder lacks.
An exchange that could not carry everything is followed by another one.
Join: -> ``JoinRequest`` (group, invite secret) <- ``JoinReply`` pages (every op of the
group, including the admin's new add of the joiner; ``more`` on all but the last) or ``Error``.

Limits: a responder reads nothing from a peer that is not a member of its group (sync) and
at most ``STRANGER_MAX_FRAME`` bytes from one (join: a ``JoinRequest`` is 75 bytes);
members' frames are at most ``SYNC_MAX_FRAME``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from corestate.protocol.messages import (
    Bytes32,
    Codec,
    Error,
    Len,
    MaxItems,
    MaxLen,
    Message,
    Ok,
    message,
)

SYNC_PROTOCOL = "/corestate/sync/2"
JOIN_PROTOCOL = "/corestate/join/2"
# Earlier versions: a node answers them with an Error (code "version") and reads nothing.
OLD_PROTOCOLS = ("/corestate/sync/1", "/corestate/join/1")
VERSION = 2
MAX_OPS = 8192
MAX_OP_BYTES = 16384  # node.core.membership.MAX_OP_BYTES
MAX_HEADS = 1024
# A page of ops: whole ops up to this many bytes (each counted with 3 bytes of CBOR head).
OPS_PAGE_BYTES = 1 << 20
MAX_CATALOG_BYTES = 1 << 20
# The largest message: a page of ops, the catalog part and the heads, with room to spare.
SYNC_MAX_FRAME = OPS_PAGE_BYTES + MAX_CATALOG_BYTES + MAX_HEADS * 34 + (64 << 10)
# What a responder reads from a peer that is not a member: one JoinRequest (75 bytes).
STRANGER_MAX_FRAME = 128

Heads = Annotated[tuple[Bytes32, ...], MaxItems(MAX_HEADS)]
Ops = Annotated[tuple[Annotated[bytes, MaxLen(MAX_OP_BYTES)], ...], MaxItems(MAX_OPS)]
CatalogBytes = Annotated[bytes, MaxLen(MAX_CATALOG_BYTES)]


@message
@dataclass(frozen=True, slots=True)
class SyncOpen(Message):
    """``group`` 32 zero bytes: "the group I am a member of" (a node recovering from its
    phrase does not know the id yet; the responder answers only a member)."""

    TYPE: ClassVar[str] = "sync"
    VERSION: ClassVar[int] = VERSION
    group: Bytes32
    heads: Heads
    catalog: CatalogBytes


@message
@dataclass(frozen=True, slots=True)
class SyncReply(Message):
    TYPE: ClassVar[str] = "sync-reply"
    VERSION: ClassVar[int] = VERSION
    group: Bytes32
    ops: Ops
    more: bool  # ops the initiator lacks did not fit this page
    heads: Heads
    catalog: CatalogBytes


@message
@dataclass(frozen=True, slots=True)
class SyncPush(Message):
    TYPE: ClassVar[str] = "sync-push"
    VERSION: ClassVar[int] = VERSION
    ops: Ops
    catalog: CatalogBytes  # empty: no batches


@message
@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    TYPE: ClassVar[str] = "join"
    VERSION: ClassVar[int] = VERSION
    group: Bytes32
    secret: Annotated[bytes, Len(16)]


@message
@dataclass(frozen=True, slots=True)
class JoinReply(Message):
    TYPE: ClassVar[str] = "joined"
    VERSION: ClassVar[int] = VERSION
    ops: Ops
    more: bool  # another JoinReply follows on the stream
    addrs: Annotated[tuple[Annotated[str, MaxLen(256)], ...], MaxItems(64)]  # members' addresses, "peer addr"


GROUP_MESSAGES: tuple[type[Message], ...] = (SyncOpen, SyncReply, SyncPush, JoinRequest, JoinReply, Ok, Error)
GROUP_CODEC = Codec(GROUP_MESSAGES)


def decode(payload: bytes) -> Message:
    return GROUP_CODEC.decode(payload)
