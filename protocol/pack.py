"""The pack format: encrypted blobs plus an encrypted header, in one file (SPEC.md, "Packs").

Layout::

    magic b"CSPK" | version u8 (=1) | salt (32 random bytes)
    blob 0 ciphertext | blob 1 ciphertext | ...
    header ciphertext
    header ciphertext length, u32 little-endian | magic b"CSPE"

Invariants:
- The salt is fresh for every pack written (the caller passes 32 bytes from the OS RNG),
  so the per-pack subkeys, and with them every (key, nonce) pair, are never reused, also
  when a pack is rewritten after a crash.
- Blob ``i`` is ChaCha20-Poly1305 under the subkey of its kind with nonce ``i`` (96-bit
  little-endian) and the blob id as associated data; the header uses the header subkey,
  nonce 0, and the first 37 bytes of the pack as associated data.
- A blob's id is the keyed BLAKE3 of its plaintext; readers recompute it after decrypting.
- The pack id is the plain BLAKE3 of the whole file, so holders without keys can verify it.

Pure: compression and encryption are computation; no file I/O here.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import cbor2
import zstandard
from corestate.protocol.errors import CorruptObject
from corestate.protocol.keys import NodeKeys
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"CSPK"
END_MAGIC = b"CSPE"
VERSION = 1
SALT_BYTES = 32
PREFIX_BYTES = len(MAGIC) + 1 + SALT_BYTES
TRAILER_BYTES = 8
TAG_BYTES = 16
MAX_HEADER_BYTES = 64 << 20
MAX_BLOB_BYTES = 64 << 20

KIND_CHUNK = "chunk"
KIND_TREE = "tree"
KIND_SNAPSHOT = "snapshot"
BLOB_KINDS = (KIND_CHUNK, KIND_TREE, KIND_SNAPSHOT)

CODEC_NONE = 0
CODEC_ZSTD = 1
# A blob this large is compressed only if four slices of it, spread over it, shrink: a
# chunk of compressed or encrypted data (media, archives, VM images of them) then costs
# a 64 KiB trial instead of a full pass of zstd over it.
PROBE_BYTES = 16 << 10
PROBE_ABOVE = 8 * PROBE_BYTES
# A reader's per-thread buffers (BlobOpener.buffer) are kept up to this size: a chunk is at
# most 16 MiB (home.py); a larger blob (a huge tree) gets a buffer of its own each time.
KEEP_BUFFER_BYTES = (16 << 20) + TAG_BYTES
# cryptography's AEADs encrypt and decrypt into a caller's buffer in recent releases; with
# an older one the same bytes are produced through a temporary object.
_IN_PLACE = hasattr(ChaCha20Poly1305, "encrypt_into") and hasattr(ChaCha20Poly1305, "decrypt_into")


def nonce(index: int) -> bytes:
    return index.to_bytes(12, "little")


def pack_id_of(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """Where one blob sits in its pack and how to open it."""

    kind: str
    id: bytes
    index: int  # position in the header, and the nonce of the blob
    offset: int
    length: int  # ciphertext bytes, tag included
    raw_length: int  # plaintext bytes
    codec: int


class PackWriter:
    """Builds one pack in memory. Not thread-safe: one writer per thread."""

    def __init__(
        self, keys: NodeKeys, salt: bytes, *, compression_level: int = 3,
        buffer: bytearray | None = None,
    ) -> None:
        """``buffer``: where the pack is built (its length is the capacity; it grows when a
        blob does not fit). A caller writing many packs hands back the buffer of a pack it
        has stored (:meth:`finish_view`), so no page of a new pack is freshly allocated."""
        if len(salt) != SALT_BYTES:
            raise ValueError("a pack salt is 32 bytes")
        self.keys = keys
        self.salt = salt
        self._aead = {k: ChaCha20Poly1305(keys.pack_subkey(salt, k)) for k in BLOB_KINDS}
        self._zstd = zstandard.ZstdCompressor(level=compression_level)
        # Blobs are encrypted straight into one buffer at their offset: no ciphertext
        # object per blob and no joining copy at the end.
        self.buffer = buffer if buffer is not None else bytearray(1 << 20)
        self._reserve(PREFIX_BYTES)
        self.buffer[:PREFIX_BYTES] = MAGIC + bytes([VERSION]) + salt
        self._size = PREFIX_BYTES
        self.entries: list[BlobEntry] = []

    def __len__(self) -> int:
        return self._size

    def add(self, kind: str, blob_id: bytes, plaintext: bytes | memoryview) -> BlobEntry:
        """Compress (when it shrinks), encrypt and append one blob."""
        if len(plaintext) > MAX_BLOB_BYTES:
            raise ValueError(f"blob of {len(plaintext)} bytes exceeds {MAX_BLOB_BYTES}")
        codec = CODEC_NONE
        body: bytes | memoryview = plaintext
        if len(plaintext) >= 64 and self._may_shrink(plaintext):
            packed = self._zstd.compress(plaintext)
            # Keep the compressed form only when it saves something worth a decode.
            if len(packed) < len(plaintext) - len(plaintext) // 64:
                codec, body = CODEC_ZSTD, packed
        index = len(self.entries)
        length = len(body) + TAG_BYTES
        self._seal(self._aead[kind], nonce(index), body, blob_id, length)
        entry = BlobEntry(kind, blob_id, index, self._size, length, len(plaintext), codec)
        self._size += length
        self.entries.append(entry)
        return entry

    def _reserve(self, size: int) -> None:
        """Make the buffer at least ``size`` bytes (at least doubling: amortised copies)."""
        have = len(self.buffer)
        if size > have:
            self.buffer += bytes(max(size, 2 * have) - have)

    def _seal(self, aead: ChaCha20Poly1305, iv: bytes, body: bytes | memoryview,
              aad: bytes, length: int) -> None:
        """Encrypt ``body`` into the buffer at the end of the pack (``length`` bytes)."""
        end = self._size + length
        self._reserve(end)
        if not _IN_PLACE:
            self.buffer[self._size:end] = aead.encrypt(iv, bytes(body), aad)
            return
        with memoryview(self.buffer) as view:
            aead.encrypt_into(iv, body, aad, view[self._size:end])

    def _may_shrink(self, data: bytes | memoryview) -> bool:
        n = len(data)
        if n < PROBE_ABOVE:
            return True
        step = (n - PROBE_BYTES) // 3
        view = memoryview(data)
        sample = b"".join(view[i * step:i * step + PROBE_BYTES] for i in range(4))
        return len(self._zstd.compress(sample)) < len(sample) - len(sample) // 32

    def finish(self) -> tuple[bytes, bytes]:
        """Seal the header; return (pack id, pack bytes). The writer is spent after this."""
        pid, view = self.finish_view()
        with view:
            data = bytes(view)
        self.buffer = bytearray()
        return pid, data

    def finish_view(self) -> tuple[bytes, memoryview]:
        """Like :meth:`finish`, but the pack as a view of :attr:`buffer` (no copy): valid
        until the buffer is reused; release the view before handing the buffer on."""
        header = cbor2.dumps(
            {
                "v": VERSION,
                "blobs": [
                    [e.kind, e.id, e.offset, e.length, e.raw_length, e.codec]
                    for e in self.entries
                ],
            },
            canonical=True,
        )
        aead = ChaCha20Poly1305(self.keys.pack_subkey(self.salt, "header"))
        length = len(header) + TAG_BYTES
        self._seal(aead, nonce(0), header, bytes(self.buffer[:PREFIX_BYTES]), length)
        self._size += length
        trailer = struct.pack("<I", length) + END_MAGIC
        self._reserve(self._size + TRAILER_BYTES)
        self.buffer[self._size:self._size + TRAILER_BYTES] = trailer
        self._size += TRAILER_BYTES
        view = memoryview(self.buffer)[:self._size]
        return pack_id_of(view), view


@dataclass(frozen=True, slots=True)
class PackHeader:
    salt: bytes
    header_offset: int
    entries: list[BlobEntry]


def parse_prefix(pack_name: str, prefix: bytes) -> bytes:
    """Check the first 37 bytes of a pack; return its salt."""
    if len(prefix) < PREFIX_BYTES or prefix[:4] != MAGIC:
        raise CorruptObject(pack_name, "not a CoreState pack (bad magic)")
    if prefix[4] != VERSION:
        raise CorruptObject(pack_name, f"unsupported pack version {prefix[4]}")
    return bytes(prefix[5:PREFIX_BYTES])


def header_length(pack_name: str, trailer: bytes, pack_size: int) -> int:
    """From the last 8 bytes of a pack, the length of the sealed header before them."""
    if len(trailer) != TRAILER_BYTES or trailer[4:] != END_MAGIC:
        raise CorruptObject(pack_name, "truncated or damaged pack (bad end marker)")
    (length,) = struct.unpack("<I", trailer[:4])
    if length > MAX_HEADER_BYTES or length + PREFIX_BYTES + TRAILER_BYTES > pack_size:
        raise CorruptObject(pack_name, f"header length {length} does not fit the pack")
    return int(length)


def open_header(
    keys: NodeKeys, pack_name: str, prefix: bytes, sealed_header: bytes, header_offset: int
) -> PackHeader:
    """Decrypt and validate a pack header; every entry is checked to lie inside the pack."""
    salt = parse_prefix(pack_name, prefix)
    aead = ChaCha20Poly1305(keys.pack_subkey(salt, "header"))
    try:
        plain = aead.decrypt(nonce(0), sealed_header, bytes(prefix[:PREFIX_BYTES]))
    except InvalidTag:
        raise CorruptObject(pack_name, "header does not authenticate (damaged, or another key)")
    try:
        obj = cbor2.loads(plain)
        if not isinstance(obj, dict) or obj.get("v") != VERSION:
            raise ValueError("bad header version")
        entries = []
        end = PREFIX_BYTES
        for index, row in enumerate(obj["blobs"]):
            kind, blob_id, offset, length, raw_length, codec = row
            if (
                kind not in BLOB_KINDS
                or not isinstance(blob_id, bytes)
                or len(blob_id) != 32
                or offset != end
                or not (TAG_BYTES <= length <= MAX_BLOB_BYTES + TAG_BYTES + 1024)
                or not (0 <= raw_length <= MAX_BLOB_BYTES)
                or codec not in (CODEC_NONE, CODEC_ZSTD)
            ):
                raise ValueError(f"bad entry {index}")
            entries.append(BlobEntry(kind, blob_id, index, offset, length, raw_length, codec))
            end = offset + length
        if end != header_offset:
            raise ValueError("blobs do not end where the header starts")
    except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
        raise CorruptObject(pack_name, f"malformed header: {exc}")
    return PackHeader(salt, header_offset, entries)


def read_header(keys: NodeKeys, pack_name: str, data: bytes) -> PackHeader:
    """Parse the header of a whole pack held in memory."""
    length = header_length(pack_name, data[-TRAILER_BYTES:], len(data))
    offset = len(data) - TRAILER_BYTES - length
    return open_header(keys, pack_name, data[:PREFIX_BYTES], data[offset:-TRAILER_BYTES], offset)


class BlobOpener:
    """Decrypts, decompresses and verifies blobs of packs. Thread-safe for reading."""

    def __init__(self, keys: NodeKeys) -> None:
        self.keys = keys
        self._aead: dict[tuple[bytes, str], ChaCha20Poly1305] = {}
        # zstd contexts are not thread-safe, and creating one per blob is costly.
        self._local = threading.local()

    def _cipher(self, salt: bytes, kind: str) -> ChaCha20Poly1305:
        c = self._aead.get((salt, kind))
        if c is None:
            c = self._aead[(salt, kind)] = ChaCha20Poly1305(self.keys.pack_subkey(salt, kind))
            if len(self._aead) > 4096:
                self._aead.clear()
        return c

    def open(
        self, salt: bytes, kind: str, blob_id: bytes, index: int, codec: int, raw_length: int,
        sealed: bytes,
    ) -> bytes:
        plain = self._open(salt, kind, blob_id, index, codec, raw_length, sealed, False)
        assert isinstance(plain, bytes)  # decrypted afresh: never a view of a buffer
        return plain

    def open_view(
        self, salt: bytes, kind: str, blob_id: bytes, index: int, codec: int, raw_length: int,
        sealed: bytes | memoryview,
    ) -> bytes | memoryview:
        """Like :meth:`open`, verified alike, but decrypted into this thread's buffer: the
        result may be a view of it, valid until this thread's next ``open_view``. For a
        reader that uses each blob at once (a restore writing it): no plaintext object
        (and no fresh pages) per blob."""
        return self._open(salt, kind, blob_id, index, codec, raw_length, sealed, True)

    def buffer(self, name: str, size: int) -> memoryview:
        """This thread's reusable buffer ``name`` of at least ``size`` bytes, as a view of
        exactly ``size`` bytes (valid until the next call for ``name`` in this thread)."""
        bufs: dict[str, bytearray] = self._local.__dict__.setdefault("buffers", {})
        buf = bufs.get(name)
        if buf is None or len(buf) < size:
            # Not kept when huge (a rare 64 MiB tree): the next blob gets a small one again.
            buf = bytearray(max(size, 1 << 20))
            if size <= KEEP_BUFFER_BYTES:
                bufs[name] = buf
        return memoryview(buf)[:size]

    def _open(
        self, salt: bytes, kind: str, blob_id: bytes, index: int, codec: int, raw_length: int,
        sealed: bytes | memoryview, into: bool,
    ) -> bytes | memoryview:
        name = blob_id.hex()
        try:
            cipher = self._cipher(salt, kind)
            if into and _IN_PLACE and len(sealed) >= TAG_BYTES:
                body: bytes | memoryview = self.buffer("plain", len(sealed) - TAG_BYTES)
                cipher.decrypt_into(nonce(index), sealed, blob_id, body)
            else:
                body = cipher.decrypt(nonce(index), sealed, blob_id)
        except InvalidTag:
            raise CorruptObject(f"{kind} {name}", "does not authenticate (damaged ciphertext)")
        if codec == CODEC_ZSTD:
            try:
                # A zstd frame may declare its content size, and decompress() allocates that
                # much whatever max_output_size says: refuse a frame that claims more than
                # the header's raw length before it allocates (-1: not declared, bounded
                # by max_output_size below).
                if zstandard.frame_content_size(body) > raw_length:
                    raise CorruptObject(f"{kind} {name}", "declares more bytes than its raw length")
                dctx = getattr(self._local, "dctx", None)
                if dctx is None:
                    dctx = self._local.dctx = zstandard.ZstdDecompressor()
                plain = dctx.decompress(body, max_output_size=raw_length)
            except zstandard.ZstdError as exc:
                raise CorruptObject(f"{kind} {name}", f"does not decompress: {exc}")
        else:
            plain = body
        if len(plain) != raw_length:
            raise CorruptObject(f"{kind} {name}", "has the wrong length")
        actual = self.keys.tree_id(plain) if kind != KIND_CHUNK else self.keys.chunk_id(plain)
        if actual != blob_id:
            raise CorruptObject(f"{kind} {name}", "content does not match its id")
        return plain


def iter_blobs(data: bytes, header: PackHeader) -> Iterator[tuple[BlobEntry, bytes]]:
    for e in header.entries:
        yield e, data[e.offset : e.offset + e.length]
