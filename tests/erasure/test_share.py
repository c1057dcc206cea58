"""Shares as peers hold them: header format, whole-share verification, proofs of storage."""

from __future__ import annotations

import random
import struct

import blake3
import pytest
from corestate.erasure import (
    HEADER_SIZE,
    CorruptShare,
    InvalidParameters,
    NotEnoughShares,
    Proof,
    decode_shares,
    encode,
    make_share,
    make_shares,
    merkle,
    payload_of,
    prove,
    read_header,
    repair_shares,
    verify_proof,
    verify_share,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BLOCK = 1024
RNG = random.Random(2024)
DATA = RNG.randbytes(4 * 3000 + 5)  # 4-of-6 shares of 3002 bytes: 3 blocks, short tail
PACK_ID = blake3.blake3(DATA).digest()
SHARES = make_shares(DATA, 4, 6, pack_id=PACK_ID, block_size=BLOCK)
ROOTS = {read_header(s).index: read_header(s).root for s in SHARES}


def flip(buf: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(buf)
    out[pos] ^= 1 << bit
    return bytes(out)


def forge(share: bytes, payload: bytes) -> bytes:
    """What a lying peer does: new payload, header root recomputed to match."""
    hdr = read_header(share)
    return make_share(
        payload,
        pack_id=hdr.pack_id,
        k=hdr.k,
        n=hdr.n,
        index=hdr.index,
        data_length=hdr.data_length,
        block_size=hdr.block_size,
    )


# -- header ------------------------------------------------------------------------------


def test_header_layout() -> None:
    share = SHARES[5]
    magic, version, k, n, index, block_size, plen, dlen = struct.unpack_from("<4sBBBBIQQ", share)
    assert (magic, version, k, n, index, block_size) == (b"CSSH", 1, 4, 6, 5, BLOCK)
    assert (plen, dlen) == (3002, len(DATA))
    assert share[28:60] == PACK_ID
    assert share[60:92] == ROOTS[5]
    assert HEADER_SIZE == 92
    assert bytes(payload_of(share)) == encode(DATA, 4, 6)[5]
    assert len(share) == HEADER_SIZE + plen
    hdr = read_header(share)
    assert hdr.to_bytes() == share[:HEADER_SIZE]
    assert hdr.block_count == 3


def test_golden_share_header() -> None:
    # Fixed inputs, fixed bytes: the format (hash contexts, tree shape, field order) is
    # frozen for version 1; another implementation can check itself against this.
    data = b"CoreState erasure golden vector, 4-of-6."
    share = make_shares(data, 4, 6, pack_id=bytes(range(32)), block_size=1024)[5]
    assert share[:HEADER_SIZE].hex() == (
        "4353534801040605000400000a000000000000002800000000000000"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "f985eed7d4125a08f7f23d69cfdc95c7c7d3a5fee43c2c4aab6b249695fa6656"
    )


def test_root_definition_matches_format_md() -> None:
    # FORMAT.md spelled out with plain blake3 calls, independent of the merkle module.
    share = SHARES[2]
    payload = bytes(payload_of(share))

    def h(context: str, data: bytes) -> bytes:
        return blake3.blake3(data, derive_key_context=context).digest()

    leaf_ctx = "CoreState 2025-11-25 erasure share merkle leaf v1"
    node_ctx = "CoreState 2025-11-25 erasure share merkle node v1"
    root_ctx = "CoreState 2025-11-25 erasure share root v1"
    blocks = [payload[i : i + BLOCK] for i in range(0, len(payload), BLOCK)]
    assert len(blocks) == 3
    leaves = [h(leaf_ctx, i.to_bytes(8, "little") + b) for i, b in enumerate(blocks)]
    head = h(node_ctx, h(node_ctx, leaves[0] + leaves[1]) + leaves[2])
    assert h(root_ctx, share[:60] + head) == ROOTS[2]


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1: split at the largest power of two below n."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return merkle.node_hash(reference_mth(leaves[:split]), reference_mth(leaves[split:]))


def test_leaves_bind_the_index_and_roles_are_separated() -> None:
    block = b"same bytes"
    assert merkle.leaf_hash(0, block) != merkle.leaf_hash(1, block)
    a, b = merkle.leaf_hash(0, b"a"), merkle.leaf_hash(1, b"b")
    # A node is never a leaf or a root over the same bytes.
    assert merkle.node_hash(a, b) != blake3.blake3(a + b).digest()
    assert merkle.node_hash(a, b) != merkle.root_hash(a, b)
    assert merkle.node_hash(a, b) != merkle.leaf_hash(int.from_bytes(a[:8], "little"), a[8:] + b)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 31, 33])
def test_tree_shape_is_rfc6962_and_every_path_verifies(count: int) -> None:
    leaves = [merkle.leaf_hash(i, bytes([i])) for i in range(count)]
    tree = merkle.levels(leaves)
    assert tree[-1] == [reference_mth(leaves)]
    for i in range(count):
        path = merkle.audit_path(tree, i)
        assert merkle.head_from_path(i, count, leaves[i], path) == tree[-1][0]
        if count > 1:
            assert merkle.head_from_path(i, count, leaves[i], path[:-1]) != tree[-1][0]
            # The same leaf and path at the neighbour's position give another head. (The
            # leaf count is not bound by the head: the root binds it via payload_length.)
            j = i ^ 1 if (i ^ 1) < count else i - 1
            assert merkle.head_from_path(j, count, leaves[i], path) != tree[-1][0]


# -- whole-share verification ------------------------------------------------------------


def test_intact_shares_verify() -> None:
    for i, s in enumerate(SHARES):
        hdr = verify_share(s, root=ROOTS[i], pack_id=PACK_ID, index=i)
        assert hdr.index == i and hdr.root == ROOTS[i]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5), st.integers(0, HEADER_SIZE + 3001), st.integers(0, 7))
def test_any_flipped_bit_is_caught(which: int, pos: int, bit: int) -> None:
    bad = flip(SHARES[which], pos, bit)
    with pytest.raises(CorruptShare) as info:
        verify_share(bad)
    assert info.value.index in (which, None) or pos < HEADER_SIZE  # a flipped index byte lies
    assert info.value.retryable is False


def test_every_header_byte_is_covered() -> None:
    for pos in range(HEADER_SIZE):
        with pytest.raises(CorruptShare):
            verify_share(flip(SHARES[1], pos, 3))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s + b"\0",
        lambda s: s[:50],
        lambda s: b"",
        lambda s: b"XXXX" + s[4:],
        lambda s: s[:4] + b"\x02" + s[5:],
    ],
)
def test_truncated_extended_or_foreign_bytes(mangle: object) -> None:
    with pytest.raises(CorruptShare):
        verify_share(mangle(SHARES[0]))  # type: ignore[operator]


def test_consistent_forgery_is_caught_by_the_recorded_root() -> None:
    forged = forge(SHARES[3], bytes(3002))
    verify_share(forged)  # self-consistent ...
    with pytest.raises(CorruptShare) as info:
        verify_share(forged, root=ROOTS[3])  # ... but not the share we uploaded
    assert info.value.index == 3
    with pytest.raises(CorruptShare):
        verify_share(SHARES[3], pack_id=bytes(32))
    with pytest.raises(CorruptShare):
        verify_share(SHARES[3], index=2)


# -- decoding shares that came from peers -------------------------------------------------


def test_decode_shares_any_order_and_subset() -> None:
    for kept in ([0, 1, 2, 3], [5, 4, 3, 2], [4, 0, 5, 2, 1]):
        got = decode_shares([SHARES[i] for i in kept], pack_id=PACK_ID, roots=ROOTS)
        assert got.data == DATA
        assert got.rejected == ()
        assert len(got.used) == 4


def test_corrupt_shares_are_excluded_and_named_never_decoded() -> None:
    rotten = flip(SHARES[0], HEADER_SIZE + 10)  # bit rot in data share 0
    liar = forge(SHARES[1], bytes(3002))  # consistent forgery of data share 1
    offered = [rotten, liar, SHARES[2], SHARES[3], SHARES[4], SHARES[5]]
    got = decode_shares(offered, pack_id=PACK_ID, roots=ROOTS)
    assert got.data == DATA
    assert sorted(got.used) == [2, 3, 4, 5]
    assert [(r.position, r.index) for r in got.rejected] == [(0, 0), (1, 1)]
    # A third bad share leaves three good ones: not enough, and the error says why.
    offered[2] = flip(SHARES[2], 0)
    with pytest.raises(NotEnoughShares) as info:
        decode_shares(offered, pack_id=PACK_ID, roots=ROOTS)
    assert (info.value.have, info.value.need) == (3, 4)
    assert len(info.value.rejected) == 3


def test_without_roots_only_self_consistency_and_majority() -> None:
    rotten = flip(SHARES[0], HEADER_SIZE + 10)
    got = decode_shares([rotten, *SHARES[1:]], pack_id=PACK_ID)
    assert got.data == DATA and [r.index for r in got.rejected] == [0]
    # A share that is valid but claims another data length is outvoted.
    other = make_shares(DATA + b"!", 4, 6, pack_id=PACK_ID, block_size=BLOCK)[4]
    got = decode_shares([other, *SHARES[:4]], pack_id=PACK_ID)
    assert got.data == DATA and [r.index for r in got.rejected] == [4]


def test_foreign_duplicate_and_unrecorded_shares() -> None:
    other_pack = make_shares(b"other" * 100, 4, 6, pack_id=bytes(32), block_size=BLOCK)
    offered = [other_pack[0], SHARES[0], SHARES[0], SHARES[1], SHARES[2], SHARES[5]]
    got = decode_shares(offered, pack_id=PACK_ID, roots=ROOTS)
    assert got.data == DATA
    assert [(r.position, r.index) for r in got.rejected] == [(0, 0)]
    partial_roots = {i: ROOTS[i] for i in (0, 1, 2)}
    with pytest.raises(NotEnoughShares) as info:
        decode_shares(SHARES, pack_id=PACK_ID, roots=partial_roots)
    assert info.value.have == 3
    with pytest.raises(NotEnoughShares):
        decode_shares([], pack_id=PACK_ID)


def test_repair_rebuilds_identical_shares() -> None:
    rebuilt = repair_shares([SHARES[i] for i in (1, 3, 4, 5)], [0, 2], pack_id=PACK_ID, roots=ROOTS)
    assert rebuilt == {0: SHARES[0], 2: SHARES[2]}


def test_make_share_rejects_bad_arguments() -> None:
    payload = encode(DATA, 4, 6)[0]
    good = dict(pack_id=PACK_ID, k=4, n=6, index=0, data_length=len(DATA), block_size=BLOCK)
    for change in (
        {"pack_id": b"short"},
        {"block_size": 1000},
        {"block_size": 512},
        {"index": 6},
        {"data_length": 5},
        {"k": 7},
    ):
        with pytest.raises(InvalidParameters):
            make_share(payload, **{**good, **change})


# -- proofs of storage ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 5 * 1024 + 7])
def test_every_block_proves(size: int) -> None:
    data = random.Random(size).randbytes(size)
    shares = make_shares(data, 1, 2, pack_id=bytes(32), block_size=BLOCK)
    for share in shares:
        hdr = read_header(share)
        for b in range(hdr.block_count):
            proof = prove(share, b)
            assert verify_proof(hdr.root, b, proof)
            wire = proof.to_bytes()
            assert Proof.from_bytes(wire) == proof
            assert verify_proof(hdr.root, b, wire)
        with pytest.raises(InvalidParameters):
            prove(share, hdr.block_count)


PROOF = prove(SHARES[4], 1)
PROOF_BYTES = PROOF.to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(PROOF_BYTES) - 1), st.integers(0, 7))
def test_any_flipped_bit_in_a_proof_is_rejected(pos: int, bit: int) -> None:
    assert verify_proof(ROOTS[4], 1, PROOF_BYTES)
    assert not verify_proof(ROOTS[4], 1, flip(PROOF_BYTES, pos, bit))


def test_forged_proofs_are_rejected() -> None:
    root = ROOTS[4]
    other = prove(SHARES[4], 0)
    candidates = [
        Proof(PROOF.descriptor, 1, other.block, PROOF.path),  # another block's bytes
        Proof(PROOF.descriptor, 0, PROOF.block, PROOF.path),  # relabelled index
        Proof(PROOF.descriptor, 1, PROOF.block, PROOF.path[:-1]),  # short path
        Proof(PROOF.descriptor, 1, PROOF.block, (*PROOF.path, PROOF.path[0])),  # long path
        Proof(PROOF.descriptor, 1, PROOF.block, tuple(reversed(PROOF.path))),
        Proof(PROOF.descriptor, 1, PROOF.block + b"\0", PROOF.path),
        Proof(PROOF.descriptor[:-1], 1, PROOF.block, PROOF.path),
        prove(SHARES[3], 1),  # a real proof, of another share
    ]
    for forged in candidates:
        assert not verify_proof(root, 1, forged)
    assert not verify_proof(root, 0, PROOF)  # asked for block 0, got block 1
    assert not verify_proof(ROOTS[3], 1, PROOF)  # right proof, wrong share
    assert verify_proof(root, 0, other)
    for junk in (b"", b"\0" * 10, PROOF_BYTES[:70], PROOF_BYTES[:-1], PROOF_BYTES + b"\0"):
        assert not verify_proof(root, 1, junk)


def test_a_holder_with_a_rotten_block_cannot_prove_it() -> None:
    rotten = flip(SHARES[4], HEADER_SIZE + BLOCK + 5)  # inside block 1
    assert not verify_proof(ROOTS[4], 1, prove(rotten, 1))
    assert verify_proof(ROOTS[4], 2, prove(rotten, 2)) is False  # path hashes block 1 too
    # Recomputing the header root does not help either: the recorded root is fixed.
    forged = forge(SHARES[4], bytes(payload_of(rotten)))
    assert not verify_proof(ROOTS[4], 1, prove(forged, 1))
