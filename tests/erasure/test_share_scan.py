"""``scan_share``: the streaming check and proof a holder runs on share files (issue 11).

It must accept and reject exactly what ``verify_share`` does and give the very proof
``prove`` gives, for any cut of the share into pieces, while holding one block at most.
"""

from __future__ import annotations

import blake3
import pytest
from corestate.erasure import share as sf
from corestate.erasure.errors import CorruptShare, InvalidParameters
from hypothesis import given, settings
from hypothesis import strategies as st


def pieces(buf: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(buf) + 1) for c in cuts})
    return [buf[a:b] for a, b in zip([0, *at], [*at, len(buf)], strict=True)]


@given(data=st.binary(max_size=20_000), k=st.integers(1, 4), extra=st.integers(0, 3),
       block_size=st.sampled_from([1024, 2048, 8192]), cuts=st.lists(st.integers(0, 1 << 20), max_size=8),
       which=st.integers(0, 1 << 30), block=st.integers(0, 1 << 30), flip=st.integers(-1, 1 << 30))
@settings(max_examples=200, deadline=None)
def test_scan_agrees_with_verify_and_prove(data: bytes, k: int, extra: int, block_size: int,
                                           cuts: list[int], which: int, block: int, flip: int) -> None:
    pack = blake3.blake3(data).digest()
    shares = sf.make_shares(data, k, k + extra, pack_id=pack, block_size=block_size)
    index = which % len(shares)
    share = bytearray(shares[index])
    if flip >= 0:
        share[flip % len(share)] ^= 1
    share_b = bytes(share)
    hdr = sf.read_header(shares[index])
    b = block % hdr.block_count
    try:
        expected = sf.verify_share(share_b, root=hdr.root, pack_id=pack, index=index)
    except CorruptShare:
        expected = None
    for prove_block in (None, b):
        try:
            got, proof = sf.scan_share(pieces(share_b, cuts), root=hdr.root, pack_id=pack,
                                       index=index, prove_block=prove_block)
        except CorruptShare:
            assert expected is None
            continue
        assert got == expected
        if prove_block is None:
            assert proof is None
        else:
            assert proof is not None and proof.to_bytes() == sf.prove(share_b, b).to_bytes()
            assert sf.verify_proof(hdr.root, b, proof)


def test_scan_refuses_a_block_the_share_lacks_and_wrong_lengths() -> None:
    data = bytes(range(256)) * 40
    pack = blake3.blake3(data).digest()
    share = sf.make_shares(data, 2, 3, pack_id=pack, block_size=1024)[0]
    count = sf.read_header(share).block_count
    with pytest.raises(InvalidParameters):
        sf.scan_share([share], prove_block=count)
    for bad in (share + b"\0", share[:-1], share[:50], b""):
        with pytest.raises(CorruptShare):
            sf.scan_share([bad])
