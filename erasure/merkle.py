"""Merkle trees over fixed-size blocks of a share payload, and their audit paths.

Role: let a holder prove it still stores block ``i`` of a share by sending the block and
``O(log n)`` hashes, checked against a 32-byte root recorded at upload (DESIGN.md section 8).
The exact bytes are specified in ``FORMAT.md`` ("Merkle tree").

Invariants:
- Hash function: BLAKE3 in derive-key mode, with a distinct context string per role (leaf,
  inner node, root), so no leaf can be read as a node or a root and vice versa.
- A leaf hashes ``u64le(block index) || block``: the index is bound into the leaf, so block
  ``j`` can never stand in for block ``i``.
- Tree shape is that of RFC 6962/9162: built bottom-up, pairing neighbours left to right;
  an unpaired last node moves up a level unchanged (never duplicated, so two different leaf
  lists never share a head).
- A payload of ``L`` bytes has ``max(1, ceil(L / block_size))`` blocks; all are
  ``block_size`` long except the last, and an empty payload has one empty block.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import blake3

LEAF_CONTEXT = "CoreState 2025-11-25 erasure share merkle leaf v1"
NODE_CONTEXT = "CoreState 2025-11-25 erasure share merkle node v1"
ROOT_CONTEXT = "CoreState 2025-11-25 erasure share root v1"

HASH_SIZE = 32


def leaf_hash(index: int, block: bytes | bytearray | memoryview) -> bytes:
    h = blake3.blake3(derive_key_context=LEAF_CONTEXT)
    h.update(index.to_bytes(8, "little"))
    h.update(block)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3.blake3(left + right, derive_key_context=NODE_CONTEXT).digest()


def root_hash(descriptor: bytes, head: bytes) -> bytes:
    """The share root: commits to the share's header fields and to the tree head."""
    return blake3.blake3(descriptor + head, derive_key_context=ROOT_CONTEXT).digest()


def block_count(payload_length: int, block_size: int) -> int:
    return max(1, -(-payload_length // block_size))


def block_bounds(index: int, payload_length: int, block_size: int) -> tuple[int, int]:
    lo = index * block_size
    return lo, min(payload_length, lo + block_size)


def leaves(payload: bytes | bytearray | memoryview, block_size: int) -> list[bytes]:
    view = memoryview(payload)
    count = block_count(len(view), block_size)
    return [leaf_hash(i, view[i * block_size : (i + 1) * block_size]) for i in range(count)]


def levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first, the head alone last."""
    if not leaf_hashes:
        raise ValueError("a tree has at least one leaf")
    out = [list(leaf_hashes)]
    while len(out[-1]) > 1:
        cur = out[-1]
        nxt = [node_hash(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])  # unpaired: promoted unchanged
        out.append(nxt)
    return out


def head(leaf_hashes: Sequence[bytes]) -> bytes:
    return levels(leaf_hashes)[-1][0]


def audit_path(tree: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the head (deepest first)."""
    path: list[bytes] = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def head_from_path(index: int, count: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """Recompute the head from a leaf and its audit path; None if the path has the wrong shape."""
    if not 0 <= index < count:
        return None
    node = leaf
    used = 0
    size = count
    while size > 1:
        if index % 2 == 1:
            if used >= len(path):
                return None
            node = node_hash(path[used], node)
            used += 1
        elif index + 1 < size:
            if used >= len(path):
                return None
            node = node_hash(node, path[used])
            used += 1
        # else: the last, unpaired node of this level moves up unchanged
        index //= 2
        size = (size + 1) // 2
    if used != len(path):
        return None
    return node


def same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two hashes."""
    return hmac.compare_digest(a, b)
