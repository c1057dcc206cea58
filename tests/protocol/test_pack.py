"""The pack format: round trips, tamper detection, nonce hygiene, strict decoding."""

from __future__ import annotations

import os

import pytest
from corestate.protocol import pack as packfmt
from corestate.protocol.errors import CorruptObject
from corestate.protocol.keys import NodeKeys
from hypothesis import given, settings
from hypothesis import strategies as st

KEYS = NodeKeys.from_root(bytes(range(32)))


def build(blobs: list[bytes], salt: bytes = b"\1" * 32) -> tuple[bytes, bytes, packfmt.PackWriter]:
    w = packfmt.PackWriter(KEYS, salt)
    for b in blobs:
        w.add(packfmt.KIND_CHUNK, KEYS.chunk_id(b), b)
    pid, data = w.finish()
    return pid, data, w


@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=8))
@settings(max_examples=50, deadline=None)
def test_round_trip(blobs: list[bytes]) -> None:
    pid, data, _ = build(blobs)
    assert packfmt.pack_id_of(data) == pid
    header = packfmt.read_header(KEYS, "p", data)
    opener = packfmt.BlobOpener(KEYS)
    got = [opener.open(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed)
           for e, sealed in packfmt.iter_blobs(data, header)]
    assert got == blobs


def test_compressible_blobs_shrink_and_random_ones_are_stored_raw() -> None:
    text = b"the same line again\n" * 5000
    noise = os.urandom(100_000)
    _, data, w = build([text, noise])
    assert w.entries[0].codec == packfmt.CODEC_ZSTD and w.entries[0].length < len(text) // 10
    assert w.entries[1].codec == packfmt.CODEC_NONE
    assert len(data) < len(text) // 10 + len(noise) + 1000


def test_large_blobs_are_probed_before_a_full_compression() -> None:
    mib = 1 << 20
    noise = os.urandom(mib)
    # Random bytes with one compressible stretch: one probe slice of four sees it.
    mixed = bytearray(os.urandom(mib))
    mixed[mib // 3 - 4096:mib // 3 + 200_000] = bytes(200_000 + 4096)
    text = b"the same line again\n" * (mib // 20)
    _, data, w = build([noise, bytes(mixed), text])
    assert w.entries[0].codec == packfmt.CODEC_NONE
    assert w.entries[1].codec == packfmt.CODEC_ZSTD and w.entries[1].length < mib - 150_000
    assert w.entries[2].codec == packfmt.CODEC_ZSTD and w.entries[2].length < mib // 10
    header = packfmt.read_header(KEYS, "p", data)
    opener = packfmt.BlobOpener(KEYS)
    got = [opener.open(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed)
           for e, sealed in packfmt.iter_blobs(data, header)]
    assert got == [noise, bytes(mixed), text]


@pytest.mark.parametrize("in_place", [True, False])
def test_the_pack_is_built_in_place_byte_for_byte_as_the_format_says(
    in_place: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blobs are encrypted straight into the writer's buffer; the bytes must be exactly the
    # format's: prefix, each blob sealed on its own (nonce = index, aad = id), the sealed
    # header (aad = prefix), its length and the end magic. A reused buffer, dirty and too
    # small for the pack, must give the same bytes (it grows; stale bytes never leak).
    import struct

    monkeypatch.setattr(packfmt, "_IN_PLACE", in_place and packfmt._IN_PLACE)
    import cbor2
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    blobs = [b"the same line again\n" * 3000, os.urandom(300_000), b"", b"tiny", os.urandom(70)]
    salt = os.urandom(32)
    pid, data, w = build(blobs, salt=salt)
    prefix = packfmt.MAGIC + bytes([packfmt.VERSION]) + salt
    expect = [prefix]
    for e, b in zip(w.entries, blobs, strict=True):
        body = zstandard.ZstdCompressor(level=3).compress(b) if e.codec == packfmt.CODEC_ZSTD else b
        aead = ChaCha20Poly1305(KEYS.pack_subkey(salt, e.kind))
        expect.append(aead.encrypt(packfmt.nonce(e.index), body, e.id))
    header = cbor2.dumps({"v": 1, "blobs": [[e.kind, e.id, e.offset, e.length, e.raw_length, e.codec]
                                            for e in w.entries]}, canonical=True)
    sealed = ChaCha20Poly1305(KEYS.pack_subkey(salt, "header")).encrypt(packfmt.nonce(0), header, prefix)
    expect += [sealed, struct.pack("<I", len(sealed)) + packfmt.END_MAGIC]
    assert data == b"".join(expect) and pid == packfmt.pack_id_of(data)

    dirty = bytearray(os.urandom(50_000))
    again = packfmt.PackWriter(KEYS, salt, buffer=dirty)
    for b in blobs:
        again.add(packfmt.KIND_CHUNK, KEYS.chunk_id(b), b)
    pid2, view = again.finish_view()
    with view:
        assert pid2 == pid and bytes(view) == data
    assert len(again.buffer) >= len(data) > 50_000


def test_fresh_salts_give_different_ciphertext_for_the_same_blob() -> None:
    _, a, _ = build([b"x" * 100], salt=os.urandom(32))
    _, b, _ = build([b"x" * 100], salt=os.urandom(32))
    assert a[37:] != b[37:]


@pytest.mark.parametrize("where", ["blob", "header", "trailer", "prefix"])
def test_any_flipped_bit_is_detected(where: str) -> None:
    _, data, w = build([b"some data" * 100, b"more"])
    header = packfmt.read_header(KEYS, "p", data)
    pos = {"blob": w.entries[0].offset + 5, "header": header.header_offset + 3,
           "trailer": len(data) - 2, "prefix": 10}[where]
    bad = bytearray(data)
    bad[pos] ^= 0x04
    with pytest.raises(CorruptObject):
        h = packfmt.read_header(KEYS, "p", bytes(bad))
        opener = packfmt.BlobOpener(KEYS)
        for e, sealed in packfmt.iter_blobs(bytes(bad), h):
            opener.open(h.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed)


def test_another_key_cannot_read_a_pack() -> None:
    _, data, _ = build([b"private"])
    with pytest.raises(CorruptObject, match="authenticate"):
        packfmt.read_header(NodeKeys.from_root(b"\2" * 32), "p", data)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_garbage_never_crashes_the_reader(junk: bytes) -> None:
    with pytest.raises(CorruptObject):
        packfmt.read_header(KEYS, "p", junk)


def test_a_zstd_frame_declaring_more_than_the_raw_length_is_refused_before_allocating() -> None:
    """Found by fuzzing (tests/fuzz, target pack-blob): a 10 KB zstd frame whose header
    declares 300 MiB made ``open`` allocate 300 MiB for a blob of raw length 100, as
    ``decompress`` sizes its output by the frame, not by ``max_output_size``."""
    import tracemalloc

    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    body = zstandard.ZstdCompressor().compress(bytes(300 << 20))
    assert len(body) < 64 << 10 and zstandard.frame_content_size(body) == 300 << 20
    salt, blob_id = b"\1" * 32, KEYS.chunk_id(b"anything")
    sealed = ChaCha20Poly1305(KEYS.pack_subkey(salt, packfmt.KIND_CHUNK)).encrypt(
        packfmt.nonce(0), body, blob_id)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObject, match="more bytes than its raw length"):
            packfmt.BlobOpener(KEYS).open(salt, packfmt.KIND_CHUNK, blob_id, 0,
                                          packfmt.CODEC_ZSTD, 100, sealed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("in_place", [True, False])
def test_open_view_decrypts_into_a_reused_buffer_and_checks_alike(
    in_place: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A restore opens each chunk into one per-thread buffer; the plaintext and every check
    # (AEAD, length, keyed hash) must be those of ``open``, for stored and compressed blobs.
    text = b"the same line again\n" * 5000
    noise = os.urandom(200_000)
    small = os.urandom(1000)
    monkeypatch.setattr(packfmt, "_IN_PLACE", in_place and packfmt._IN_PLACE)
    _, data, _w = build([noise, text, small])
    header = packfmt.read_header(KEYS, "p", data)
    opener = packfmt.BlobOpener(KEYS)
    views = []
    for (e, sealed), want in zip(packfmt.iter_blobs(data, header), [noise, text, small], strict=True):
        got = opener.open_view(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed)
        assert bytes(got) == want == opener.open(header.salt, e.kind, e.id, e.index, e.codec,
                                                  e.raw_length, sealed)
        views.append(got)
    if packfmt._IN_PLACE:
        assert isinstance(views[0], memoryview) and views[0].obj is views[2].obj  # one buffer
    e = header.entries[0]
    sealed = bytearray(data[e.offset:e.offset + e.length])
    sealed[10] ^= 1
    with pytest.raises(CorruptObject, match="authenticate"):
        opener.open_view(header.salt, e.kind, e.id, e.index, e.codec, e.raw_length, bytes(sealed))
    other = KEYS.chunk_id(b"another blob")  # right ciphertext, claimed as another id
    with pytest.raises(CorruptObject):
        opener.open_view(header.salt, e.kind, other, e.index, e.codec, e.raw_length,
                         data[e.offset:e.offset + e.length])
