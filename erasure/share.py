"""The share format: a versioned header, the payload, and proofs of storage.

Role: what a node stores for a peer and sends back on restore, repair and audit. Bytes are
specified in ``FORMAT.md``; this module is the reference implementation.

Invariants:
- A share is ``header (92 bytes) || payload``. The header's last field is the share *root*,
  a BLAKE3 hash over every other header field and over a Merkle tree of the payload's
  blocks (:mod:`.merkle`). So the root identifies the share: one changed bit anywhere, in
  the header or the payload, changes the root or stops the share from verifying.
- The uploader records each share's root; everything a peer returns is checked against it.
  A share that fails is *excluded* and reported (:class:`Rejected`), never decoded.
- Without recorded roots, shares are checked for self-consistency only (header root
  matches header and payload); a peer that rewrites a share and its root consistently is
  then caught only by the caller's end-to-end check (the pack id is the BLAKE3 of the pack).
- Proofs carry the header fields they need, so ``verify_proof`` needs only the root.
- :func:`scan_share` checks (and proves from) a share read in pieces of any size, holding
  one block and ``O(log blocks)`` hashes, never the whole share: what a holder uses on
  shares it keeps in files. It accepts and rejects exactly what ``verify_share`` does.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import merkle
from .errors import CorruptShare, InvalidParameters, NotEnoughShares
from .rs import BytesLike, check_parameters, codec, share_length

MAGIC = b"CSSH"
VERSION = 1
PACK_ID_SIZE = 32
# magic, version, k, n, index, block_size, payload_length, data_length, pack_id
_DESCRIPTOR = struct.Struct("<4sBBBBIQQ32s")
DESCRIPTOR_SIZE = _DESCRIPTOR.size  # 60
HEADER_SIZE = DESCRIPTOR_SIZE + merkle.HASH_SIZE  # 92
MIN_BLOCK_SIZE = 1 << 10
MAX_BLOCK_SIZE = 1 << 24
# 64 KiB: an audit answer stays small, and blake3 hashes a 64 KiB leaf about twice as fast
# per byte as a 16 KiB one (per-call overhead; measured ~2 GB/s against ~1 GB/s).
DEFAULT_BLOCK_SIZE = 1 << 16

_PROOF_FIXED = struct.Struct("<QB")  # block index, number of path hashes


def _valid_block_size(size: int) -> bool:
    return MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE and size & (size - 1) == 0


@dataclass(frozen=True, slots=True)
class ShareHeader:
    """The fields of a share header (see FORMAT.md, "Share header")."""

    pack_id: bytes
    k: int
    n: int
    index: int
    block_size: int
    payload_length: int
    data_length: int
    root: bytes

    def descriptor(self) -> bytes:
        """The header without its root: what the root commits to, with the tree head."""
        return _DESCRIPTOR.pack(
            MAGIC,
            VERSION,
            self.k,
            self.n,
            self.index,
            self.block_size,
            self.payload_length,
            self.data_length,
            self.pack_id,
        )

    def to_bytes(self) -> bytes:
        return self.descriptor() + self.root

    @property
    def block_count(self) -> int:
        return merkle.block_count(self.payload_length, self.block_size)


def _parse_descriptor(buf: BytesLike) -> tuple[ShareHeader, str | None]:
    """Parse the 60 descriptor bytes; return the header (root empty) and a problem, if any."""
    if len(buf) < DESCRIPTOR_SIZE:
        raise CorruptShare(None, f"{len(buf)} bytes is too short for a share header")
    magic, version, k, n, index, block_size, payload_length, data_length, pack_id = (
        _DESCRIPTOR.unpack_from(buf, 0)
    )
    if magic != MAGIC:
        raise CorruptShare(None, "bad magic")
    if version != VERSION:
        raise CorruptShare(None, f"unknown share format version {version}")
    hdr = ShareHeader(pack_id, k, n, index, block_size, payload_length, data_length, b"")
    problem = None
    if not 1 <= k <= n:
        problem = f"impossible parameters k={k}, n={n}"
    elif index >= n:
        problem = f"index {index} is not below n={n}"
    elif not _valid_block_size(block_size):
        problem = f"block size {block_size} is not a power of two in [2^10, 2^24]"
    elif payload_length != share_length(data_length, k):
        problem = f"payload length {payload_length} does not fit {data_length} bytes over k={k}"
    return hdr, problem


def read_header(share: BytesLike) -> ShareHeader:
    """Parse and sanity-check a share header, without hashing the payload."""
    hdr, problem = _parse_descriptor(share)
    if len(share) < HEADER_SIZE:
        raise CorruptShare(None, f"{len(share)} bytes is too short for a share header")
    if problem:
        raise CorruptShare(hdr.index if hdr.index < hdr.n else None, problem)
    root = bytes(memoryview(share)[DESCRIPTOR_SIZE:HEADER_SIZE])
    return dataclasses.replace(hdr, root=root)


def payload_of(share: BytesLike) -> memoryview:
    """The payload bytes of a share (a view, no copy)."""
    return memoryview(share)[HEADER_SIZE:]


def compute_root(header: ShareHeader, payload: BytesLike) -> bytes:
    """The root of ``payload`` under ``header``'s fields (``header.root`` is ignored)."""
    tree_head = merkle.head(merkle.leaves(payload, header.block_size))
    return merkle.root_hash(header.descriptor(), tree_head)


def make_share(
    payload: BytesLike,
    *,
    pack_id: bytes,
    k: int,
    n: int,
    index: int,
    data_length: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> bytes:
    """Wrap one share payload in its header."""
    check_parameters(k, n)
    if len(pack_id) != PACK_ID_SIZE:
        raise InvalidParameters(f"pack id must be {PACK_ID_SIZE} bytes", k=k, n=n)
    if not _valid_block_size(block_size):
        raise InvalidParameters(f"block size {block_size} is not a power of two in [2^10, 2^24]")
    if not 0 <= index < n:
        raise InvalidParameters(f"share index {index} out of range", k=k, n=n)
    if len(payload) != share_length(data_length, k):
        raise InvalidParameters("payload length does not match data length and k", k=k, n=n)
    hdr = ShareHeader(bytes(pack_id), k, n, index, block_size, len(payload), data_length, b"")
    root = compute_root(hdr, payload)
    return b"".join((hdr.descriptor(), root, payload))


def make_shares(
    data: BytesLike,
    k: int,
    n: int,
    *,
    pack_id: bytes,
    block_size: int = DEFAULT_BLOCK_SIZE,
    threads: int | None = None,
) -> list[bytes]:
    """Erasure-code ``data`` and return the ``n`` complete shares (header + payload).

    Record ``read_header(share).root`` for each: it is what restores and audits check.
    """
    # Views, not copies: each payload byte is then copied once, into its share.
    payloads = codec(*check_parameters(k, n)).encode_views(data, threads=threads)
    return [
        make_share(
            p, pack_id=pack_id, k=k, n=n, index=i, data_length=len(data), block_size=block_size
        )
        for i, p in enumerate(payloads)
    ]


def verify_share(
    share: BytesLike,
    *,
    root: bytes | None = None,
    pack_id: bytes | None = None,
    index: int | None = None,
) -> ShareHeader:
    """Check a whole share; return its header or raise :class:`CorruptShare`.

    Always checks the header's sanity, the payload length and that the header root matches
    header and payload. ``root`` (recorded at upload), ``pack_id`` and ``index`` are checked
    when given.
    """
    hdr = read_header(share)
    if len(share) != HEADER_SIZE + hdr.payload_length:
        raise CorruptShare(
            hdr.index,
            f"share is {len(share)} bytes, header says {HEADER_SIZE + hdr.payload_length}",
        )
    if index is not None and hdr.index != index:
        raise CorruptShare(hdr.index, f"expected share {index}, got share {hdr.index}")
    if pack_id is not None and not merkle.same(hdr.pack_id, bytes(pack_id)):
        raise CorruptShare(hdr.index, "belongs to another pack")
    if root is not None and not merkle.same(hdr.root, bytes(root)):
        raise CorruptShare(hdr.index, "root differs from the one recorded at upload")
    if not merkle.same(compute_root(hdr, payload_of(share)), hdr.root):
        raise CorruptShare(hdr.index, "payload or header does not match the share root")
    return hdr


# -- proofs of storage ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proof:
    """Block ``block_index`` of a share, and what is needed to tie it to the share root."""

    descriptor: bytes  # the share header without its root (60 bytes)
    block_index: int
    block: bytes
    path: tuple[bytes, ...]  # sibling hashes, deepest first

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                self.descriptor,
                _PROOF_FIXED.pack(self.block_index, len(self.path)),
                *self.path,
                self.block,
            )
        )

    @classmethod
    def from_bytes(cls, buf: BytesLike) -> Proof:
        """Parse a proof; ValueError if the bytes cannot be one (verification is separate)."""
        buf = bytes(buf)
        fixed_end = DESCRIPTOR_SIZE + _PROOF_FIXED.size
        if len(buf) < fixed_end:
            raise ValueError("too short for a proof")
        block_index, count = _PROOF_FIXED.unpack_from(buf, DESCRIPTOR_SIZE)
        path_end = fixed_end + count * merkle.HASH_SIZE
        if len(buf) < path_end:
            raise ValueError("proof path is truncated")
        path = tuple(
            buf[o : o + merkle.HASH_SIZE] for o in range(fixed_end, path_end, merkle.HASH_SIZE)
        )
        return cls(buf[:DESCRIPTOR_SIZE], block_index, buf[path_end:], path)


def prove(share: BytesLike, block_index: int) -> Proof:
    """Answer an audit challenge: block ``block_index`` of ``share`` with its Merkle path.

    The holder does not need to trust its own copy: a rotten block gives a proof that fails.
    """
    hdr = read_header(share)
    if not isinstance(block_index, int) or not 0 <= block_index < hdr.block_count:
        raise InvalidParameters(
            f"block index {block_index!r} not in [0, {hdr.block_count})", k=hdr.k, n=hdr.n
        )
    payload = payload_of(share)
    tree = merkle.levels(merkle.leaves(payload, hdr.block_size))
    lo, hi = merkle.block_bounds(block_index, hdr.payload_length, hdr.block_size)
    return Proof(
        hdr.descriptor(),
        block_index,
        bytes(payload[lo:hi]),
        tuple(merkle.audit_path(tree, block_index)),
    )


def verify_proof(root: bytes, block_index: int, proof: Proof | BytesLike) -> bool:
    """True when ``proof`` shows block ``block_index`` of the share whose root is ``root``.

    Needs nothing but the root: the proof carries the header fields, the block and its
    path. Malformed or forged proofs give False, never an exception.
    """
    if not isinstance(proof, Proof):
        try:
            proof = Proof.from_bytes(proof)
        except ValueError:
            return False
    if proof.block_index != block_index or len(proof.descriptor) != DESCRIPTOR_SIZE:
        return False
    try:
        hdr, problem = _parse_descriptor(proof.descriptor)
    except CorruptShare:
        return False
    if problem:
        return False
    count = hdr.block_count
    if not 0 <= block_index < count:
        return False
    lo, hi = merkle.block_bounds(block_index, hdr.payload_length, hdr.block_size)
    if len(proof.block) != hi - lo:
        return False
    if any(len(p) != merkle.HASH_SIZE for p in proof.path):
        return False
    leaf = merkle.leaf_hash(block_index, proof.block)
    tree_head = merkle.head_from_path(block_index, count, leaf, proof.path)
    if tree_head is None:
        return False
    return merkle.same(merkle.root_hash(proof.descriptor, tree_head), bytes(root))


class _TreeHead:
    """The RFC 6962 tree head of leaves added in order, in ``O(log n)`` memory: a stack of
    complete subtrees, merged as soon as two of one size meet, folded right to left at the
    end (the same head as :func:`merkle.head`)."""

    __slots__ = ("_stack",)

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []

    def add(self, node: bytes) -> None:
        size = 1
        while self._stack and self._stack[-1][0] == size:
            node = merkle.node_hash(self._stack.pop()[1], node)
            size *= 2
        self._stack.append((size, node))

    def head(self) -> bytes:
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = merkle.node_hash(left, node)
        return node


class _Scan:
    """The state of :func:`scan_share`: header bytes, then one pending partial block."""

    def __init__(self, root: bytes | None, pack_id: bytes | None, index: int | None,
                 prove_block: int | None) -> None:
        self.want = (root, pack_id, index)
        self.prove_block = prove_block
        self.head_bytes = bytearray()
        self.hdr: ShareHeader | None = None
        self.total = 0
        self.pending = bytearray()
        self.blocks = 0
        self.tree = _TreeHead()
        # With a proof to give: one subtree per level, each the sibling of the proven
        # block's ancestor there (they partition the other leaves), and the block itself.
        self.siblings: dict[int, _TreeHead] = {}
        self.leaf = b""
        self.block = b""

    def header(self) -> None:
        hdr = read_header(self.head_bytes)
        root, pack_id, index = self.want
        if index is not None and hdr.index != index:
            raise CorruptShare(hdr.index, f"expected share {index}, got share {hdr.index}")
        if pack_id is not None and not merkle.same(hdr.pack_id, bytes(pack_id)):
            raise CorruptShare(hdr.index, "belongs to another pack")
        if root is not None and not merkle.same(hdr.root, bytes(root)):
            raise CorruptShare(hdr.index, "root differs from the one recorded at upload")
        b = self.prove_block
        if b is not None and (not isinstance(b, int) or not 0 <= b < hdr.block_count):
            raise InvalidParameters(
                f"block index {b!r} not in [0, {hdr.block_count})", k=hdr.k, n=hdr.n
            )
        self.hdr = hdr

    def emit(self, block: BytesLike) -> None:
        i = self.blocks
        leaf = merkle.leaf_hash(i, block)
        self.blocks += 1
        m = self.prove_block
        if m is None:
            self.tree.add(leaf)
        elif i == m:
            self.leaf, self.block = leaf, bytes(block)
        else:
            # The highest bit where i and m differ names the level whose sibling holds i.
            self.siblings.setdefault((i ^ m).bit_length() - 1, _TreeHead()).add(leaf)

    def feed(self, chunk: BytesLike) -> None:
        view = memoryview(chunk).cast("B")
        self.total += len(view)
        if self.hdr is None:
            need = HEADER_SIZE - len(self.head_bytes)
            self.head_bytes += view[:need]
            view = view[need:]
            if len(self.head_bytes) < HEADER_SIZE:
                return
            self.header()
        hdr = self.hdr
        assert hdr is not None
        if self.total > HEADER_SIZE + hdr.payload_length:
            raise CorruptShare(
                hdr.index, f"share is longer than the {HEADER_SIZE + hdr.payload_length} "
                "bytes its header says"
            )
        bs = hdr.block_size
        if self.pending:
            take = bs - len(self.pending)
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < bs:
                return
            self.emit(self.pending)
            self.pending = bytearray()
        while len(view) >= bs:
            self.emit(view[:bs])
            view = view[bs:]
        self.pending += view

    def finish(self) -> tuple[ShareHeader, Proof | None]:
        if self.hdr is None:
            raise CorruptShare(None, f"{self.total} bytes is too short for a share header")
        hdr = self.hdr
        if self.total != HEADER_SIZE + hdr.payload_length:
            raise CorruptShare(
                hdr.index, f"share is {self.total} bytes, header says {HEADER_SIZE + hdr.payload_length}"
            )
        if self.blocks < hdr.block_count:
            self.emit(self.pending)  # the short last block (or the one empty block)
        proof = None
        if self.prove_block is None:
            tree_head = self.tree.head()
        else:
            path = tuple(self.siblings[j].head() for j in sorted(self.siblings))
            found = merkle.head_from_path(self.prove_block, hdr.block_count, self.leaf, path)
            assert found is not None  # the path was built for this shape
            tree_head = found
            proof = Proof(hdr.descriptor(), self.prove_block, self.block, path)
        if not merkle.same(merkle.root_hash(hdr.descriptor(), tree_head), hdr.root):
            raise CorruptShare(hdr.index, "payload or header does not match the share root")
        return hdr, proof


def scan_share(
    chunks: Iterable[BytesLike],
    *,
    root: bytes | None = None,
    pack_id: bytes | None = None,
    index: int | None = None,
    prove_block: int | None = None,
) -> tuple[ShareHeader, Proof | None]:
    """:func:`verify_share` over a share given as consecutive pieces of any sizes.

    Holds one block and ``O(log blocks)`` hashes, so a share of any size can be checked
    straight from a file or a stream. With ``prove_block`` it also returns the proof of
    that block (as :func:`prove` would give), made in the same pass; a block the share
    does not have raises :class:`InvalidParameters` once the header is read.
    """
    scan = _Scan(root, pack_id, index, prove_block)
    for chunk in chunks:
        scan.feed(chunk)
    return scan.finish()


# -- restore and repair from shares that came from peers ----------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """A share that was offered but excluded, and why (``index`` None if unreadable)."""

    position: int  # where it was in the caller's iterable
    index: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Restored:
    """The rebuilt pack, the share indices it was decoded from and the shares excluded."""

    data: bytes
    used: tuple[int, ...]
    rejected: tuple[Rejected, ...]


@dataclass(frozen=True, slots=True)
class _Accepted:
    k: int
    n: int
    data_length: int
    block_size: int
    payloads: dict[int, memoryview]
    rejected: tuple[Rejected, ...]


def _accept(
    shares: Iterable[BytesLike], pack_id: bytes, roots: Mapping[int, bytes] | None
) -> _Accepted:
    rejected: list[Rejected] = []
    good: dict[int, tuple[ShareHeader, memoryview]] = {}
    positions: dict[int, int] = {}
    for pos, share in enumerate(shares):
        try:
            hdr = read_header(share)
            if roots is not None and hdr.index not in roots:
                raise CorruptShare(hdr.index, "no root was recorded for this index")
            expected = roots[hdr.index] if roots is not None else None
            hdr = verify_share(share, root=expected, pack_id=pack_id)
        except CorruptShare as exc:
            rejected.append(Rejected(pos, exc.index, exc.reason))
            continue
        if hdr.index in good:
            if not merkle.same(good[hdr.index][0].root, hdr.root):
                rejected.append(Rejected(pos, hdr.index, "conflicts with another copy"))
            continue  # an identical copy adds nothing
        good[hdr.index] = (hdr, payload_of(share))
        positions[hdr.index] = pos
    if not good:
        raise NotEnoughShares(0, 1, rejected=tuple(rejected))
    # Valid shares of one pack agree on the code and the length. Without recorded roots a
    # consistent forgery could disagree: keep the majority and report the others.
    shape = Counter((h.k, h.n, h.data_length) for h, _ in good.values())
    (k, n, data_length), _ = shape.most_common(1)[0]
    payloads: dict[int, memoryview] = {}
    block_size = 0
    for idx, (h, payload) in sorted(good.items()):
        if (h.k, h.n, h.data_length) != (k, n, data_length):
            rejected.append(Rejected(positions[idx], idx, "disagrees with the other shares"))
            continue
        payloads[idx] = payload
        block_size = block_size or h.block_size
    if len(payloads) < k:
        raise NotEnoughShares(len(payloads), k, rejected=tuple(rejected))
    return _Accepted(k, n, data_length, block_size, payloads, tuple(rejected))


def decode_shares(
    shares: Iterable[BytesLike],
    *,
    pack_id: bytes,
    roots: Mapping[int, bytes] | None = None,
    threads: int | None = None,
) -> Restored:
    """Rebuild a pack from complete shares as peers returned them, in any order.

    Every share is verified first (against ``roots[index]`` when the caller has the roots
    recorded at upload, which it should); failures are excluded and listed in
    ``Restored.rejected``. Raises :class:`NotEnoughShares` when fewer than k remain.
    """
    acc = _accept(shares, bytes(pack_id), roots)
    c = codec(acc.k, acc.n)
    used = c.choose(acc.payloads)
    data = c.decode({i: acc.payloads[i] for i in used}, acc.data_length, threads=threads)
    return Restored(data, used, acc.rejected)


def repair_shares(
    shares: Iterable[BytesLike],
    want: Iterable[int],
    *,
    pack_id: bytes,
    roots: Mapping[int, bytes] | None = None,
    block_size: int | None = None,
    threads: int | None = None,
) -> dict[int, bytes]:
    """Rebuild the complete shares ``want`` (header + payload) from verified shares.

    Repair needs no data key: shares are ciphertext. The new shares have the same payload
    as the originals; their root equals the recorded one when ``block_size`` is unchanged.
    """
    acc = _accept(shares, bytes(pack_id), roots)
    c = codec(acc.k, acc.n)
    used = c.choose(acc.payloads)
    payloads = c.rebuild({i: acc.payloads[i] for i in used}, want, threads=threads)
    return {
        i: make_share(
            p,
            pack_id=pack_id,
            k=acc.k,
            n=acc.n,
            index=i,
            data_length=acc.data_length,
            block_size=block_size or acc.block_size,
        )
        for i, p in payloads.items()
    }
