"""Group wire messages: catalog sync (``/corestate/sync/1``) and invites (``/corestate/join/1``).

Same frames and canonical CBOR maps as the share service (SPEC.md section 8). Membership
ops and catalog batches travel as the signed bytes their authors made (their formats are
in ``node/core/membership.py`` and ``node/core/catalog.py``): a node forwards them byte for
byte and every receiver verifies them itself.

Sync, one exchange per stream (at most three messages, then the initiator closes):
  -> ``SyncOpen``  the group, the ids of the membership ops the initiator holds, and its
                   catalog hello (version vector);
  <- ``SyncReply`` the ops the initiator lacks, the ids the responder holds, and the
                   catalog answer (the batches the initiator lacks + the responder's vector);
  -> ``SyncPush``  the ops and batches the responder lacks (empty lists/bytes: nothing).
Join: -> ``JoinRequest`` (group, invite secret) <- ``JoinReply`` (every op of the group,
including the admin's new add of the joiner) or ``Error``.
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

SYNC_PROTOCOL = "/corestate/sync/1"
JOIN_PROTOCOL = "/corestate/join/1"
MAX_OPS = 8192
MAX_OP_BYTES = 8192
MAX_CATALOG_BYTES = 1 << 20
# The largest message: MAX_OPS ops of MAX_OP_BYTES would not fit; a real exchange sends a
# group's ops (hundreds, ~300 B each) and one catalog message. Sync channels use this limit.
SYNC_MAX_FRAME = 4 << 20

OpIds = Annotated[tuple[Bytes32, ...], MaxItems(MAX_OPS)]
Ops = Annotated[tuple[Annotated[bytes, MaxLen(MAX_OP_BYTES)], ...], MaxItems(MAX_OPS)]
CatalogBytes = Annotated[bytes, MaxLen(MAX_CATALOG_BYTES)]


@message
@dataclass(frozen=True, slots=True)
class SyncOpen(Message):
    """``group`` 32 zero bytes: "the group I am a member of" (a node recovering from its
    phrase does not know the id yet; the responder answers only a member)."""

    TYPE: ClassVar[str] = "sync"
    group: Bytes32
    have: OpIds
    catalog: CatalogBytes


@message
@dataclass(frozen=True, slots=True)
class SyncReply(Message):
    TYPE: ClassVar[str] = "sync-reply"
    group: Bytes32
    ops: Ops
    have: OpIds
    catalog: CatalogBytes


@message
@dataclass(frozen=True, slots=True)
class SyncPush(Message):
    TYPE: ClassVar[str] = "sync-push"
    ops: Ops
    catalog: CatalogBytes  # empty: no batches


@message
@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    TYPE: ClassVar[str] = "join"
    group: Bytes32
    secret: Annotated[bytes, Len(16)]


@message
@dataclass(frozen=True, slots=True)
class JoinReply(Message):
    TYPE: ClassVar[str] = "joined"
    ops: Ops
    addrs: Annotated[tuple[Annotated[str, MaxLen(256)], ...], MaxItems(64)]  # members' addresses, "peer addr"


GROUP_MESSAGES: tuple[type[Message], ...] = (SyncOpen, SyncReply, SyncPush, JoinRequest, JoinReply, Ok, Error)
GROUP_CODEC = Codec(GROUP_MESSAGES)


def decode(payload: bytes) -> Message:
    return GROUP_CODEC.decode(payload)
