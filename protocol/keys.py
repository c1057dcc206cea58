"""Key derivation: every key of a node from its 256-bit root secret (SPEC.md, "Keys").

All keys come from the root with BLAKE3 in derive-key mode, one context string each; the
strings below are part of the format and never change. Per-pack subkeys come from the
data key and the pack's random 256-bit salt, one per object kind, so counter nonces never
repeat under one key. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3
import nacl.signing

ROOT_BYTES = 32

CTX_IDENTITY = "CoreState 2026-11-25 identity ed25519 seed generation {generation}"
CTX_DATA = "CoreState 2026-11-25 data key"
CTX_CHUNK_ID = "CoreState 2026-11-25 chunk id key"
CTX_TREE_ID = "CoreState 2026-11-25 tree id key"
CTX_CHUNKER = "CoreState 2026-11-25 chunker seed"
CTX_PACK_SUBKEY = "CoreState 2026-11-25 pack subkey {kind}"
CTX_CATALOG = "CoreState 2026-11-25 catalog value key"

PACK_KINDS = ("header", "chunk", "tree", "snapshot")


def derive(root: bytes, context: str, length: int = 32) -> bytes:
    """BLAKE3 derive-key mode: ``length`` bytes of key for ``context`` from ``root``."""
    return blake3.blake3(root, derive_key_context=context).digest(length)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """Every key a node uses, derived from its root secret."""

    root: bytes
    generation: int
    identity_seed: bytes
    data_key: bytes
    chunk_id_key: bytes
    tree_id_key: bytes
    chunker_seed: int

    @classmethod
    def from_root(cls, root: bytes, generation: int = 0) -> NodeKeys:
        if len(root) != ROOT_BYTES:
            raise ValueError(f"root secret must be {ROOT_BYTES} bytes, got {len(root)}")
        # 63 bits: pyfastcdc shifts the seed left by one in a 64-bit word.
        seed = int.from_bytes(derive(root, CTX_CHUNKER, 8), "little") & ((1 << 63) - 1)
        return cls(
            root=root,
            generation=generation,
            identity_seed=derive(root, CTX_IDENTITY.format(generation=generation)),
            data_key=derive(root, CTX_DATA),
            chunk_id_key=derive(root, CTX_CHUNK_ID),
            tree_id_key=derive(root, CTX_TREE_ID),
            # pyfastcdc treats seed 0 as "no seed": never let a root map to it.
            chunker_seed=seed or 1,
        )

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.identity_seed)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(bytes(self.signing_key.verify_key))

    @property
    def catalog_key(self) -> bytes:
        """Seals catalog values that reveal names (snapshot records) to this node alone."""
        return derive(self.data_key, CTX_CATALOG)

    def pack_subkey(self, salt: bytes, kind: str) -> bytes:
        """The key for objects of ``kind`` in the pack with ``salt``."""
        if kind not in PACK_KINDS:
            raise ValueError(f"unknown pack object kind {kind!r}")
        return derive(self.data_key + salt, CTX_PACK_SUBKEY.format(kind=kind))

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self.chunk_id_key).digest()

    def tree_id(self, data: bytes) -> bytes:
        return blake3.blake3(data, key=self.tree_id_key).digest()


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def peer_id_from_public_key(public_key: bytes) -> str:
    """libp2p PeerID of an Ed25519 key: identity multihash of the protobuf-encoded key.

    protobuf ``PublicKey{Type: Ed25519 (1), Data: key}`` is 36 bytes, short enough that
    libp2p inlines it with the identity hash (code 0x00) rather than SHA-256.
    """
    encoded = b"\x08\x01\x12\x20" + public_key
    return base58btc(b"\x00" + bytes([len(encoded)]) + encoded)


def public_key_from_peer_id(peer_id: str) -> bytes | None:
    """The Ed25519 public key inlined in a PeerID, or None if it is not such a PeerID."""
    try:
        n = 0
        for ch in peer_id:
            n = n * 58 + _B58.index(ch)
    except ValueError:
        return None
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(peer_id) - len(peer_id.lstrip("1"))) + raw
    if len(raw) != 38 or raw[:6] != b"\x00\x24\x08\x01\x12\x20":
        return None
    return raw[6:]
