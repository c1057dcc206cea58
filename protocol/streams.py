"""Our byte-stream interface, an in-memory pair, and the message Channel over any stream.

Every transport (libp2p streams in ``protocol.p2p``, the Unix control socket through
:class:`TrioStream`, :func:`memory_stream_pair` in tests) is a :class:`Stream`; protocol
code talks to a :class:`Channel` wrapped around one. A :class:`Host` is what the runtime
needs of a peer-to-peer host (``protocol.p2p.P2PHost`` over libp2p; the in-process
``MemoryHost`` of ``node.runtime.testkit``). Invariants:

- every await on the peer (one read, one write of at most 1 MiB) runs under the channel's
  ``timeout``: a frozen peer raises :class:`PeerTimeout`, never hangs; a slow transfer that
  keeps moving does not time out, since the limit is per call, not per transfer;
- a stream that ends before a whole message raises :class:`PeerClosed`; a stream that
  ends inside bulk data raises :class:`TransferError` ("truncated") and bulk data that
  hashes to anything but the announced BLAKE3 raises :class:`TransferError` ("corrupt"):
  libp2p makes a killed peer look like a clean EOF, so lengths and hashes are what catch it;
- bytes that break the framing or the message encoding raise :class:`RemoteProtocolError`;
- :meth:`Channel.receive_bulk_to` hands bulk data on as it arrives (to a file, a hash),
  so a receiver never has to hold a body it did not ask to keep; on a transport with
  flow control (``expect_bulk``) it first opens the window to the body's size.

This module and ``protocol.p2p`` are the only ones in ``corestate.protocol`` that import trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import blake3
import trio
from corestate.protocol import messages
from corestate.protocol.errors import (
    LocalProtocolError,
    PeerClosed,
    PeerTimeout,
    TransferError,
)
from corestate.protocol.messages import Message
from corestate.protocol.wire import FrameDecoder, encode_frame

BULK_WRITE = 1 << 20  # largest single write of bulk data
READ_SIZE = 1 << 16  # bytes asked of the stream per read between messages
BULK_READ = 1 << 18  # bytes asked per read of bulk data


class Stream(Protocol):
    """A reliable, ordered, two-way byte stream to one peer."""

    remote_peer: str  # PeerID (base58) of the other end; "" when not a p2p stream

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes, at least one; b"" at the end of the stream."""
        ...

    async def send_all(self, data: bytes | memoryview) -> None: ...

    async def aclose(self) -> None: ...


class Host(Protocol):
    """A peer-to-peer host as the runtime uses it: streams to and from peers named by
    their PeerID, which the transport authenticated (Noise in libp2p).

    ``open_stream`` raises ``PeerUnreachable`` when no stream could be opened within
    ``timeout`` seconds; a handler gets one call per inbound stream, and an exception it
    raises never reaches the host (the stream is reset instead)."""

    peer_id: str

    def addrs(self) -> list[str]:
        """Our listen addresses, each ending in ``/p2p/<peer_id>``."""
        ...

    def add_addrs(self, peer_id: str, addrs: Sequence[str]) -> None: ...

    def connected_peers(self) -> list[str]: ...

    def set_handler(self, protocol_id: str, handler: Callable[[Stream], Awaitable[None]]) -> None: ...

    async def open_stream(self, peer_id: str, protocol_id: str, *, addrs: Sequence[str] = (),
                          timeout: float = 10.0) -> Stream: ...

    def on_peer_discovered(self, cb: Callable[[str, list[str]], None]) -> None: ...


# ---------------------------------------------------------------------------------------
# In-memory pair.


class _Pipe:
    """One direction of a memory pair: a buffer of at most ``capacity`` bytes.

    A writer waits while the buffer is full (back-pressure); a reader waits while it is
    empty. Closing the writing end lets the reader drain, then read EOF; closing the
    reading end breaks the writer.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf = bytearray()
        self.writer_closed = False
        self.reader_closed = False
        self.readable = trio.lowlevel.ParkingLot()
        self.writable = trio.lowlevel.ParkingLot()
        self.writing = False
        self.reading = False

    async def write(self, data: bytes | memoryview) -> None:
        if self.writing:
            raise trio.BusyResourceError("another task is writing to this stream")
        self.writing = True
        try:
            await trio.lowlevel.checkpoint()
            view = memoryview(data).cast("B")
            self._check_writable()
            while view:
                room = self.capacity - len(self.buf)
                if room <= 0:
                    await self.writable.park()
                    self._check_writable()
                    continue
                self.buf += view[:room]
                view = view[room:]
                self.readable.unpark_all()
        finally:
            self.writing = False

    def _check_writable(self) -> None:
        if self.writer_closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self.reader_closed:
            raise trio.BrokenResourceError("the peer closed the stream")

    async def read(self, max_bytes: int) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self.reading:
            raise trio.BusyResourceError("another task is reading from this stream")
        self.reading = True
        try:
            await trio.lowlevel.checkpoint()
            while True:
                if self.reader_closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if self.buf:
                    data = bytes(self.buf[:max_bytes])
                    del self.buf[:max_bytes]
                    self.writable.unpark_all()
                    return data
                if self.writer_closed:
                    return b""
                await self.readable.park()
        finally:
            self.reading = False

    def close_writer(self) -> None:
        self.writer_closed = True
        self.readable.unpark_all()
        self.writable.unpark_all()

    def close_reader(self) -> None:
        self.reader_closed = True
        self.buf.clear()
        self.readable.unpark_all()
        self.writable.unpark_all()


class MemoryStream:
    """One end of :func:`memory_stream_pair`."""

    def __init__(self, remote_peer: str, incoming: _Pipe, outgoing: _Pipe) -> None:
        self.remote_peer = remote_peer
        self._in = incoming
        self._out = outgoing

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return await self._in.read(max_bytes)

    async def send_all(self, data: bytes | memoryview) -> None:
        await self._out.write(data)

    async def aclose(self) -> None:
        self.abort()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Close this end at once, from any task, as the death of its process would: the
        peer reads what was already buffered, then EOF; its writes break. Idempotent."""
        self._out.close_writer()
        self._in.close_reader()


def memory_stream_pair(
    a_peer: str = "A", b_peer: str = "B", *, capacity: int = 1 << 16
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected streams; each direction buffers at most ``capacity`` bytes.

    The first stream's ``remote_peer`` is ``b_peer`` (it talks to B) and the second's is
    ``a_peer``.
    """
    a_to_b, b_to_a = _Pipe(capacity), _Pipe(capacity)
    return MemoryStream(b_peer, b_to_a, a_to_b), MemoryStream(a_peer, a_to_b, b_to_a)


# ---------------------------------------------------------------------------------------
# trio streams (the Unix control socket).


class TrioStream:
    """Adapts a trio stream (e.g. a ``trio.SocketStream`` on a Unix socket) to :class:`Stream`."""

    def __init__(self, stream: trio.abc.Stream, remote_peer: str = "") -> None:
        self.remote_peer = remote_peer
        self.stream = stream

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | memoryview) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


# ---------------------------------------------------------------------------------------
# Channel.


class Channel:
    """Messages and bulk data over one :class:`Stream`, every wait bounded by ``timeout``."""

    def __init__(
        self,
        stream: Stream,
        *,
        timeout: float = 30.0,
        max_frame: int = 1 << 20,
        decode: Callable[[bytes], Message] = messages.decode,
    ) -> None:
        self.stream = stream
        self.timeout = timeout
        self.max_frame = max_frame
        self._decode = decode
        self._decoder = FrameDecoder(max_frame)
        self._eof = False

    @property
    def remote_peer(self) -> str:
        return self.stream.remote_peer

    async def send(self, msg: Message) -> None:
        payload = messages.encode(msg)
        if len(payload) > self.max_frame:
            raise LocalProtocolError(
                f"{msg.TYPE} message of {len(payload)} bytes exceeds the frame limit "
                f"of {self.max_frame}"
            )
        await self._send(encode_frame(payload))

    async def receive(self) -> Message:
        """The next message; PeerClosed if the stream ends first."""
        msg = await self.receive_or_eof()
        if msg is None:
            raise PeerClosed("the peer closed the stream before a message", peer=self.remote_peer)
        return msg

    async def receive_or_eof(self) -> Message | None:
        """The next message, or None if the stream ended cleanly between messages."""
        frame = await self.receive_frame_or_eof()
        return None if frame is None else self._decode(frame)

    async def receive_frame_or_eof(self) -> bytes | None:
        """The next frame's payload, not decoded (a caller may decode a large one off the
        event loop), or None if the stream ended cleanly between frames."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            data = await self._receive(READ_SIZE)
            if not data:
                if self._decoder.buffered():
                    raise PeerClosed(
                        f"the peer closed the stream inside a frame "
                        f"({self._decoder.buffered()} bytes of it received)",
                        peer=self.remote_peer,
                    )
                return None
            self._decoder.feed(data)

    async def send_bulk(self, data: bytes | memoryview) -> None:
        """Send raw bytes (announced by the previous message), in writes of at most 1 MiB."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), BULK_WRITE):
            await self._send(view[start : start + BULK_WRITE])

    async def receive_bulk(self, size: int, digest: bytes) -> bytes:
        """Exactly ``size`` raw bytes hashing (BLAKE3) to ``digest``, else TransferError.

        Holds the whole body in memory: for bodies the caller needs whole and whose size
        it has bounded. :meth:`receive_bulk_to` passes them on piece by piece instead.
        """
        chunks: list[bytes] = []

        async def keep(piece: bytes) -> None:
            chunks.append(piece)

        await self.receive_bulk_to(size, digest, keep)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def receive_bulk_to(
        self, size: int, digest: bytes, sink: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Exactly ``size`` raw bytes, handed to ``sink`` in pieces of at most 256 KiB as
        they arrive and hashed on the way; TransferError when the stream ends first or
        the bytes do not hash to ``digest`` (after the last piece: a sink that keeps the
        bytes must discard them then). Memory: one piece, whatever ``size`` is."""
        if size < 0 or len(digest) != 32:
            raise ValueError("size must be >= 0 and digest 32 bytes")
        hasher = blake3.blake3()
        got = 0
        # A transport with flow control (libp2p's yamux) opens its window to the body's
        # size, which the caller has bounded and admitted; others have no such method.
        expect = getattr(self.stream, "expect_bulk", None)
        if expect is not None and size > 0:
            await expect(size)
        early = self._decoder.take_buffered()
        if early:
            if len(early) > size:
                # What follows the bulk bytes is the next frame: hand it back.
                self._decoder.feed(early[size:])
                early = early[:size]
            hasher.update(early)
            got = len(early)
            await sink(early)
        while got < size:
            data = await self._receive(min(size - got, BULK_READ))
            if not data:
                raise TransferError(
                    "truncated",
                    f"the stream ended after {got} of {size} bulk bytes",
                    expected=size,
                    received=got,
                )
            hasher.update(data)
            got += len(data)
            await sink(data)
        if hasher.digest() != digest:
            raise TransferError(
                "corrupt",
                f"{size} bulk bytes do not hash to the announced BLAKE3",
                expected=size,
                received=got,
            )

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _send(self, data: bytes | memoryview) -> None:
        try:
            with trio.fail_after(self.timeout):
                await self.stream.send_all(data)
        except trio.TooSlowError:
            raise PeerTimeout(
                f"a write to the peer took longer than {self.timeout:g} s",
                peer=self.remote_peer,
                timeout=self.timeout,
            ) from None
        except trio.BrokenResourceError as e:
            raise PeerClosed(f"the stream broke while sending: {e}", peer=self.remote_peer)

    async def _receive(self, max_bytes: int) -> bytes:
        if self._eof:
            return b""
        try:
            with trio.fail_after(self.timeout):
                data = await self.stream.receive_some(max_bytes)
        except trio.TooSlowError:
            raise PeerTimeout(
                f"the peer sent nothing for {self.timeout:g} s",
                peer=self.remote_peer,
                timeout=self.timeout,
            ) from None
        except trio.BrokenResourceError as e:
            raise PeerClosed(f"the stream broke while receiving: {e}", peer=self.remote_peer)
        if not data:
            self._eof = True
        return data


__all__ = [
    "Channel",
    "Host",
    "MemoryStream",
    "Stream",
    "TrioStream",
    "memory_stream_pair",
]
