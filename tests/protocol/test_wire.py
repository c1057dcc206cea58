"""Framing: golden varints, split feeding at every boundary, limits checked before the body."""

from __future__ import annotations

import pytest
from corestate.protocol.errors import RemoteProtocolError
from corestate.protocol.wire import FrameDecoder, encode_frame, encode_varint
from hypothesis import given
from hypothesis import strategies as st


def drain(dec: FrameDecoder) -> list[bytes]:
    out = []
    while (frame := dec.next_frame()) is not None:
        out.append(frame)
    return out


def test_golden_varints() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint((1 << 64) - 1) == b"\xff" * 9 + b"\x01"
    assert encode_frame(b"abc") == b"\x03abc"
    assert encode_frame(b"") == b"\x00"
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(1 << 64)


PAYLOADS = [b"", b"x", b"a" * 127, b"b" * 128, b"c" * 300, b"", b"tail"]


def test_split_at_every_byte_boundary() -> None:
    data = b"".join(encode_frame(p) for p in PAYLOADS)
    for i in range(len(data) + 1):
        dec = FrameDecoder()
        dec.feed(data[:i])
        got = drain(dec)
        dec.feed(data[i:])
        got += drain(dec)
        assert got == PAYLOADS, i
        assert dec.buffered() == 0


def test_byte_by_byte() -> None:
    dec = FrameDecoder()
    got = []
    for b in b"".join(encode_frame(p) for p in PAYLOADS):
        dec.feed(bytes([b]))
        got += drain(dec)
    assert got == PAYLOADS


@given(
    st.lists(st.binary(max_size=400), max_size=8),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_round_trip_with_random_splits(payloads: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    prev = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        dec.feed(data[prev:cut])
        got += drain(dec)
        prev = cut
    assert got == payloads


def test_oversize_is_refused_as_soon_as_the_length_is_known() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.feed(encode_varint(100) + b"z" * 100)
    assert dec.next_frame() == b"z" * 100  # exactly the limit is fine
    dec.feed(encode_varint(101))  # no body at all yet
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.next_frame()
    # Even a partial varint whose value already exceeds the limit fails at once.
    dec = FrameDecoder(max_frame=100)
    dec.feed(b"\xff")
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.next_frame()
    dec = FrameDecoder()
    dec.feed(encode_varint(1 << 40))
    with pytest.raises(RemoteProtocolError):
        dec.next_frame()


@pytest.mark.parametrize(
    "prefix",
    [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00", b"\x80" * 9 + b"\x00"],
)
def test_non_minimal_varints_are_refused(prefix: bytes) -> None:
    dec = FrameDecoder(max_frame=1 << 62)
    dec.feed(prefix + b"payload")
    with pytest.raises(RemoteProtocolError, match="non-minimal"):
        dec.next_frame()


def test_varint_longer_than_ten_bytes_is_refused() -> None:
    dec = FrameDecoder(max_frame=1 << 62)
    dec.feed(b"\x80" * 10 + b"\x01")
    with pytest.raises(RemoteProtocolError, match="longer than 10"):
        dec.next_frame()


def test_decoder_stays_failed() -> None:
    dec = FrameDecoder(max_frame=10)
    dec.feed(b"\x7f")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            dec.next_frame()
    dec.feed(encode_frame(b"ok"))
    with pytest.raises(RemoteProtocolError):
        dec.next_frame()


def test_take_buffered_returns_raw_bytes_unparsed() -> None:
    dec = FrameDecoder(max_frame=10)
    # Raw bulk bytes after a header frame may look like an oversize length: never parsed.
    dec.feed(encode_frame(b"hdr") + b"\xff\xff\xff")
    assert dec.next_frame() == b"hdr"
    assert dec.buffered() == 3
    assert dec.take_buffered() == b"\xff\xff\xff"
    assert dec.buffered() == 0
    assert dec.take_buffered() == b""
    dec.feed(encode_frame(b"next"))
    assert drain(dec) == [b"next"]


def test_consumed_bytes_are_released() -> None:
    dec = FrameDecoder()
    for i in range(2000):
        dec.feed(encode_frame(b"%d" % i))
        assert dec.next_frame() == b"%d" % i
    assert len(dec._buf) < 64


@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(min_value=0, max_value=64))
def test_random_bytes_only_give_frames_or_remote_protocol_errors(
    chunks: list[bytes], max_frame: int
) -> None:
    dec = FrameDecoder(max_frame=max_frame)
    try:
        for chunk in chunks:
            dec.feed(chunk)
            for frame in drain(dec):
                assert len(frame) <= max_frame
    except RemoteProtocolError:
        pass
