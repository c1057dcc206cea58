"""Framing of every CoreState stream (SPEC.md, "Wire protocol"): sans-I/O, no trio.

A frame is an unsigned LEB128 varint giving the payload length, then the payload. The
decoder is a plain object: bytes go in with :meth:`FrameDecoder.feed`, whole payloads come
out of :meth:`FrameDecoder.next_frame`. Invariants:

- a length prefix longer than 10 bytes, non-minimal (a multi-byte varint ending in a zero
  byte), or larger than ``max_frame`` raises :class:`RemoteProtocolError` as soon as it is
  read, before any of the body is waited for; the decoder then stays failed;
- bytes are parsed only when a frame is asked for, so raw bulk bytes that follow a header
  frame are never mistaken for a length: :meth:`FrameDecoder.take_buffered` hands them back
  untouched.
"""

from __future__ import annotations

from typing import NoReturn

from corestate.protocol.errors import RemoteProtocolError

MAX_VARINT_BYTES = 10  # enough for any 64-bit length


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n``: seven bits per byte, low bits first, high bit = more."""
    if n < 0 or n >= 1 << 64:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """The frame carrying ``payload``: its varint length, then the payload."""
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream back into frame payloads, refusing oversize or malformed lengths."""

    __slots__ = ("_buf", "_error", "_pos", "max_frame")

    def __init__(self, max_frame: int = 1 << 20) -> None:
        if max_frame < 0:
            raise ValueError("max_frame must be >= 0")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # bytes before this were returned already
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the stream."""
        if self._pos and self._pos * 2 >= len(self._buf):
            # Drop what was consumed once it is at least half the buffer: amortised O(1).
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        """How many bytes are held and not yet returned."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next whole payload, or None when more bytes are needed."""
        if self._error is not None:
            raise RemoteProtocolError(str(self._error))
        header = self._read_length()
        if header is None:
            return None
        length, start = header
        end = start + length
        if end > len(self._buf):
            return None
        payload = bytes(self._buf[start:end])
        self._pos = end
        return payload

    def take_buffered(self) -> bytes:
        """Return and forget every byte held beyond the frames already returned."""
        data = bytes(self._buf[self._pos :])
        self._buf = bytearray()
        self._pos = 0
        return data

    def _read_length(self) -> tuple[int, int] | None:
        buf, pos = self._buf, self._pos
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if pos + i >= len(buf):
                return None
            byte = buf[pos + i]
            value |= (byte & 0x7F) << (7 * i)
            # Bits only ever add up, so a partial value over the limit already fails.
            if value > self.max_frame:
                self._fail(f"frame of {value}+ bytes exceeds the limit of {self.max_frame}")
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    self._fail("non-minimal frame length")
                return value, pos + i + 1
        self._fail(f"frame length longer than {MAX_VARINT_BYTES} bytes")

    def _fail(self, message: str) -> NoReturn:
        self._error = RemoteProtocolError(message)
        raise self._error
