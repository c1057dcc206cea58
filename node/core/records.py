"""The records of a node's catalog partition: one typed codec for every key and value.

A partition (node/core/catalog.py) maps keys to values; these are the kinds of keys
(SPEC.md 10.4):

- ``ADDRS_KEY`` (``b"a"``): an :class:`AddressAdvert`, the node's listen addresses;
- ``b"k"`` + 32-byte pack id: a :class:`Placement`, the pack's code and every holder of a
  share, with the share's root as recorded at upload;
- ``b"s"`` + snapshot id: a snapshot record sealed to its owner (``catalog.seal_value``);
  only the owner reads it, so it has no type here beyond its key;
- ``b"l"`` + 32-byte pack id: a :class:`RepairLease`, written by a member that repairs the
  pack of an absent owner (node/core/lease.py): whose pack, and until when (wall-clock ms).
  The placements such a repairer makes are :class:`Placement` records in its own partition,
  ``owner`` naming the pack's owner (the holders file the shares under the owner).

Values are canonical CBOR arrays (positional, because a node may record a million
placements); these layouts are fixed by SPEC 10.4 and signed into the catalog, so they only
change with the protocol's version. Decoding checks every field and raises
:class:`CorruptRecord` for anything else: a member's partition is signed by it, not
trusted to be well formed. Pure: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cbor2
from corestate.node.core.catalog import NS_SNAPSHOT as SNAPSHOT_PREFIX

from corestate.errors import CoreStateError

ADDRS_KEY = b"a"
PACK_PREFIX = b"k"
LEASE_PREFIX = b"l"  # not b"r": the catalog core reserves it (NS_RETENTION)
MAX_ADDRS = 8
MAX_HOLDERS = 255 * 4  # every index of a 255-share code, a few holders each


class CorruptRecord(CoreStateError):
    """A catalog value that does not have its key's layout."""


class Kind(enum.Enum):
    ADDRS = "addrs"
    PLACEMENT = "placement"
    SNAPSHOT = "snapshot"
    LEASE = "lease"
    UNKNOWN = "unknown"


def kind(key: bytes) -> Kind:
    if key == ADDRS_KEY:
        return Kind.ADDRS
    if key[:1] == PACK_PREFIX and len(key) == 33:
        return Kind.PLACEMENT
    if key[:1] == SNAPSHOT_PREFIX and len(key) == 33:
        return Kind.SNAPSHOT
    if key[:1] == LEASE_PREFIX and len(key) == 33:
        return Kind.LEASE
    return Kind.UNKNOWN


def placement_key(pack: bytes) -> bytes:
    if len(pack) != 32:
        raise ValueError("a pack id is 32 bytes")
    return PACK_PREFIX + pack


@dataclass(frozen=True, slots=True)
class Holder:
    """Share ``index`` of a pack is on ``peer``; its Merkle root and size as uploaded."""

    index: int
    peer: str
    root: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the shares of ``pack`` are. ``owner``: the PeerID the holders filed the shares
    under when it is not the partition's author (an earlier identity of the node), else ""."""

    pack: bytes
    k: int
    n: int
    size: int
    holders: tuple[Holder, ...]
    owner: str = ""

    @property
    def key(self) -> bytes:
        return placement_key(self.pack)

    def value(self) -> bytes:
        shares = [[h.index, h.peer, h.root, h.size] for h in self.holders]
        fields: list[object] = [self.k, self.n, self.size, shares]
        if self.owner:
            fields.append(self.owner)
        return cbor2.dumps(fields, canonical=True)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> Placement:
        if kind(key) != Kind.PLACEMENT:
            raise CorruptRecord(f"{key[:1]!r}... is not a placement key")
        obj = _loads(value)
        if not isinstance(obj, list) or len(obj) not in (4, 5):
            raise CorruptRecord("a placement is [k, n, size, shares] or [k, n, size, shares, owner]")
        k, n, size, shares, *rest = obj
        if not (_uint(k) and _uint(n) and 1 <= k <= n <= 255 and _uint(size)):
            raise CorruptRecord("a placement's k, n and size are out of range")
        if not isinstance(shares, list) or len(shares) > MAX_HOLDERS:
            raise CorruptRecord("a placement's shares are not a list of at most "
                                f"{MAX_HOLDERS} holders")
        holders = []
        for s in shares:
            if not (isinstance(s, list) and len(s) == 4 and _uint(s[0]) and s[0] < n
                    and isinstance(s[1], str) and 0 < len(s[1]) <= 128
                    and isinstance(s[2], bytes) and len(s[2]) == 32 and _uint(s[3])):
                raise CorruptRecord("a placement's holder is not [index < n, peer, 32-byte root, size]")
            holders.append(Holder(s[0], s[1], s[2], s[3]))
        owner = rest[0] if rest else ""
        if not isinstance(owner, str) or len(owner) > 128 or (rest and not owner):
            raise CorruptRecord("a placement's owner is not a PeerID")
        return cls(key[1:], k, n, size, tuple(holders), owner)


def lease_key(pack: bytes) -> bytes:
    if len(pack) != 32:
        raise ValueError("a pack id is 32 bytes")
    return LEASE_PREFIX + pack


@dataclass(frozen=True, slots=True)
class RepairLease:
    """The partition's author repairs ``pack`` of ``owner`` until ``until_ms`` (wall clock,
    milliseconds since the epoch). Value: ``[owner, until_ms]``."""

    pack: bytes
    owner: str
    until_ms: int

    @property
    def key(self) -> bytes:
        return lease_key(self.pack)

    def value(self) -> bytes:
        return cbor2.dumps([self.owner, self.until_ms], canonical=True)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> RepairLease:
        if kind(key) != Kind.LEASE:
            raise CorruptRecord(f"{key[:1]!r}... is not a lease key")
        obj = _loads(value)
        if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)
                and 0 < len(obj[0]) <= 128 and _uint(obj[1])):
            raise CorruptRecord("a repair lease is [owner PeerID, until_ms]")
        return cls(key[1:], obj[0], obj[1])


@dataclass(frozen=True, slots=True)
class AddressAdvert:
    """The listen addresses (multiaddrs without /p2p) a node advertises to its group."""

    addrs: tuple[str, ...]

    def value(self) -> bytes:
        return cbor2.dumps(list(self.addrs[:MAX_ADDRS]), canonical=True)

    @classmethod
    def decode(cls, value: bytes) -> AddressAdvert:
        obj = _loads(value)
        if not isinstance(obj, list) or not all(isinstance(a, str) and len(a) <= 1024 for a in obj):
            raise CorruptRecord("an address advert is a list of text")
        return cls(tuple(obj[:MAX_ADDRS]))


def _loads(value: bytes) -> object:
    if len(value) > 1 << 20:
        raise CorruptRecord("a catalog value over 1 MiB")
    try:
        return cbor2.loads(value)
    except (ValueError, cbor2.CBORDecodeError, RecursionError) as exc:
        raise CorruptRecord(f"not CBOR: {exc}") from None


def _uint(v: object) -> bool:
    return type(v) is int and 0 <= v < 1 << 63


__all__ = [
    "ADDRS_KEY",
    "LEASE_PREFIX",
    "PACK_PREFIX",
    "SNAPSHOT_PREFIX",
    "AddressAdvert",
    "CorruptRecord",
    "Holder",
    "Kind",
    "Placement",
    "RepairLease",
    "kind",
    "lease_key",
    "placement_key",
]
