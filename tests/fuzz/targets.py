"""One fuzz target per decoder: a function taking bytes, and the seeds it starts from.

The contract of every target is the contract of its decoder towards its callers: any
input either decodes or raises the error the callers catch (``allowed``); anything else
escaping — another exception, a hang, a huge allocation — is a crash, i.e. a bug in the
product. Targets catch only their ``allowed`` errors themselves, so the engine sees every
other exception as it is.

Seeds are valid encodings made by the real encoders (deterministic: fixed keys, fixed
values), so the mutations start from real structure. Some targets take the input apart
before decoding (``first byte selects a mode``, ``split point``): that lets one byte string
drive a decoder that reads in pieces or needs a key, and the seeds are built the same way.

What each target's callers catch (the contract) is said in its docstring.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cbor2

Errors = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    allowed: Callable[[], Errors]  # what ``run`` catches (imported on first use)
    strict: Callable[[bytes], None]  # the decoding itself, catching nothing (seeds pass it)
    notes: str = ""


TARGETS: dict[str, Target] = {}


def target(name: str, seeds: Callable[[], list[bytes]], allowed: Callable[[], Errors]
           ) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register ``fn`` as target ``name``. ``allowed`` is a function so that nothing of the
    product is imported before the atheris worker instruments it for coverage."""
    def add(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        errors: list[Errors] = []

        def run(data: bytes) -> None:
            if not errors:
                errors.append(allowed())
            try:
                fn(data)
            except errors[0]:
                pass
        run.__name__ = f"fuzz_{name.replace('-', '_')}"
        run.__doc__ = fn.__doc__
        TARGETS[name] = Target(name, run, seeds, allowed, fn, (fn.__doc__ or "").strip())
        return fn
    return add


def _none() -> Errors:
    return ()


# ---------------------------------------------------------------------------------------
# Fixed keys and sample values for the seeds.


@cache
def keys() -> Any:
    from corestate.protocol.keys import NodeKeys

    return NodeKeys.from_root(bytes(range(32)))


def _h(i: int) -> bytes:
    return bytes([i]) * 32


# ---------------------------------------------------------------------------------------
# Framing: protocol/wire.py FrameDecoder and protocol/streams.py Channel.


def _frames_seeds() -> list[bytes]:
    from corestate.protocol.wire import encode_frame

    return [
        b"\x00" + encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"x" * 200),
        b"\x07" + encode_frame(b"a" * 300) + encode_frame(b"b"),
        b"\x40" + encode_frame(b"\x00" * 127) + encode_frame(b"\x01" * 128),
    ]


def _wire_errors() -> Errors:
    from corestate.protocol.errors import RemoteProtocolError

    return (RemoteProtocolError,)


def fuzz_frames(data: bytes) -> None:
    """FrameDecoder fed the input in pieces (first byte: piece size and frame limit).

    Callers (Channel) catch RemoteProtocolError: a stream whose framing breaks is dropped."""
    from corestate.protocol.wire import FrameDecoder

    if not data:
        return
    piece = (data[0] & 0x3F) + 1
    limit = 1 << (10 + (data[0] >> 6) * 5)  # 1 KiB, 32 KiB, 1 MiB, 32 MiB
    dec = FrameDecoder(limit)
    body = data[1:]
    got = 0
    for i in range(0, len(body), piece):
        dec.feed(body[i : i + piece])
        while (frame := dec.next_frame()) is not None:
            got += len(frame)
            assert len(frame) <= limit
    assert got <= len(body)
    dec.take_buffered()


target("frames", _frames_seeds, _wire_errors)(fuzz_frames)


def _channel_seeds() -> list[bytes]:
    import blake3
    from corestate.protocol import messages as m
    from corestate.protocol.wire import encode_frame

    body = b"share bytes" * 30
    data_msg = m.ShareData(size=len(body), digest=blake3.blake3(body).digest())
    get = m.decode(codec_seeds([m.GetShare])[0])
    return [
        b"\x00" + encode_frame(m.encode(get)) + encode_frame(m.encode(m.Ok())),
        b"\x01" + encode_frame(m.encode(data_msg)) + body + encode_frame(m.encode(m.Ok())),
        b"\x02" + encode_frame(m.encode(m.Capacity())),
    ]


def _channel_errors() -> Errors:
    from corestate.protocol.errors import ProtocolError

    return (ProtocolError,)


def fuzz_channel(data: bytes) -> None:
    """A Channel (share codec) reading the input from an in-memory stream that then ends.

    First byte: bit 0 — after a ShareData header, read its bulk bytes with
    ``receive_bulk`` (as a restore does); bit 1 — read whole stream with small reads.
    Callers (every share-service handler and client) catch ProtocolError (RemoteProtocolError,
    PeerClosed, PeerTimeout, TransferError)."""
    import trio
    from corestate.protocol import messages as m
    from corestate.protocol.streams import Channel, memory_stream_pair

    if not data:
        return
    mode, body = data[0], data[1:]

    async def main() -> None:
        a, b = memory_stream_pair(capacity=max(len(body), 1))
        await a.send_all(body)
        await a.aclose()
        ch = Channel(b, timeout=5.0)
        for _ in range(len(body) + 1):  # every message takes at least two bytes
            msg = await ch.receive_or_eof()
            if msg is None:
                return
            if mode & 1 and isinstance(msg, m.ShareData):
                if msg.size > len(body):
                    # A real reader bounds this by what it asked for; here, by the input.
                    return
                got = await ch.receive_bulk(msg.size, msg.digest)
                assert len(got) == msg.size

    trio.run(main)


target("channel", _channel_seeds, _channel_errors)(fuzz_channel)


# ---------------------------------------------------------------------------------------
# Canonical-CBOR messages: share service, group (sync/join), control, handshake.


def _example(spec: Any, rnd: Any) -> Any:
    """A valid value of a field spec (random within small bounds, seeded)."""
    from corestate.protocol import messages as m

    match spec:
        case m.IntSpec(lo, hi):
            return rnd.choice([lo, hi, max(lo, min(hi, 0)), max(lo, min(hi, 300)),
                               max(lo, min(hi, 1 << 40))])
        case m.BoolSpec():
            return rnd.random() < 0.5
        case m.BytesSpec(lo, hi):
            return bytes(rnd.randrange(256) for _ in range(max(lo, min(hi, rnd.randrange(40)))))
        case m.TextSpec(n):
            return "é-x"[: min(n, 3)] * rnd.randrange(3) if n >= 3 else ""
        case m.ListSpec(item, n):
            return tuple(_example(item, rnd) for _ in range(min(n, rnd.randrange(3))))
        case m.TupleSpec(items):
            return tuple(_example(i, rnd) for i in items)
        case m.MapSpec(k, v, n):
            return {_example(k, rnd): _example(v, rnd) for _ in range(min(n, rnd.randrange(3)))}
        case m.UnionSpec(options):
            return _example(rnd.choice(options), rnd)
        case m.NoneSpec():
            return None
        case m.RecordSpec(cls):
            return cls(**{name: _example(s, rnd) for name, s in cls.SPECS.items()})
    raise AssertionError(spec)


def codec_seeds(classes: Any) -> list[bytes]:
    """One valid encoding of every message class (two for a few), made by ``encode``."""
    import random

    from corestate.protocol import messages as m

    rnd = random.Random(20)
    out = []
    for cls in classes:
        for _ in range(3):
            try:
                msg = cls(**{name: _example(s, rnd) for name, s in cls.SPECS.items()})
            except m.LocalProtocolError:
                continue
            out.append(m.encode(msg))
            break
    return out


def _remote_error() -> Errors:
    from corestate.protocol.errors import RemoteProtocolError

    return (RemoteProtocolError,)


def _share_seeds() -> list[bytes]:
    from corestate.protocol import messages as m

    return codec_seeds(m.SHARE_MESSAGES)


def fuzz_share_messages(data: bytes) -> None:
    """protocol/messages.py decode (the share service). Callers: the share handlers and
    clients, which catch ProtocolError; the decoder documents RemoteProtocolError."""
    from corestate.protocol import messages as m

    msg = m.decode(data)
    assert m.encode(msg) == data  # the codec accepts canonical encodings only


target("share-messages", _share_seeds, _remote_error)(fuzz_share_messages)


def _group_seeds() -> list[bytes]:
    from corestate.protocol import group as g

    return codec_seeds(g.GROUP_MESSAGES)


def fuzz_group_messages(data: bytes) -> None:
    """protocol/group.py decode (sync and join). Callers catch ProtocolError."""
    from corestate.protocol import group as g
    from corestate.protocol import messages as m

    msg = g.decode(data)
    assert m.encode(msg) == data


target("group-messages", _group_seeds, _remote_error)(fuzz_group_messages)


def _control_seeds() -> list[bytes]:
    from corestate.protocol import control as c

    return codec_seeds(c.CONTROL_MESSAGES)


def fuzz_control_messages(data: bytes) -> None:
    """protocol/control.py decode (every control message, every event). The daemon's and
    the clients' loops catch ProtocolError; the decoder documents RemoteProtocolError."""
    from corestate.protocol import control as c
    from corestate.protocol import messages as m

    msg = c.decode(data)
    assert m.encode(msg) == data


target("control-messages", _control_seeds, _remote_error)(fuzz_control_messages)


def _handshake_seeds() -> list[bytes]:
    from corestate.protocol import control as c
    from corestate.protocol import messages as m
    from corestate.protocol.wire import encode_frame

    hello = encode_frame(m.encode(c.Hello(version=c.CONTROL_VERSION, client="corestate-cli")))
    return [
        hello + encode_frame(m.encode(c.StatusCall())),
        hello + encode_frame(m.encode(c.Subscribe(topics=("alert",)))),
        encode_frame(m.encode(c.Hello(version=c.CONTROL_VERSION + 1, client="x"))),
    ]


def fuzz_control_handshake(data: bytes) -> None:
    """The daemon's control handshake (node/runtime/daemon.py ``Daemon._handshake``) reading
    the input as a client's bytes over an in-memory stream. Its caller ends the client on
    ProtocolError (anything else is logged as a failure of the daemon)."""
    import types

    import trio
    from corestate.node.runtime.daemon import Daemon
    from corestate.protocol import control as c
    from corestate.protocol.streams import Channel, memory_stream_pair

    fake = types.SimpleNamespace(node=types.SimpleNamespace(
        keys=types.SimpleNamespace(peer_id="12D3KooWfuzz"),
        home=types.SimpleNamespace(path=Path("/fuzz/home"))))

    async def main() -> None:
        a, b = memory_stream_pair(capacity=max(len(data), 1) + (1 << 16))
        await a.send_all(data)
        # Half-close: the client has said all it says, but still reads what the daemon
        # answers (MemoryStream has no public half-close; aclose would break the answer).
        a._out.close_writer()
        ch = Channel(b, timeout=5.0, decode=c.decode)
        msg = await Daemon._handshake(fake, ch)
        assert msg is None or isinstance(msg, c.Message)

    trio.run(main)


target("control-handshake", _handshake_seeds, _channel_errors)(fuzz_control_handshake)


# ---------------------------------------------------------------------------------------
# Catalog sync, batches, membership ops (the bytes inside group messages), catalog records.


def _catalog_errors() -> Errors:
    from corestate.node.errors import BadBatch

    return (BadBatch,)


@cache
def _batch_raw() -> list[bytes]:
    from corestate.node.core import catalog as cat

    sk = keys().signing_key
    b1 = cat.sign_batch(sk, epoch=1, seq_first=1, prev=bytes(32), hlc=5,
                        entries=[(b"a", b"\x81x"), (b"k" + _h(2), b"value"), (b"s" + _h(3), None)])
    b2 = cat.sign_batch(sk, epoch=1, seq_first=4, prev=b1.batch_id, hlc=9,
                        entries=[(b"l" + _h(4), b"v" * 40)])
    return [b1.raw, b2.raw]


def fuzz_catalog_batch(data: bytes) -> None:
    """node/core/catalog.py Batch.decode: raises BadBatch unless canonical (the sync
    runtime catches BadBatch and CatalogError)."""
    from corestate.node.core import catalog as cat

    b = cat.Batch.decode(data)
    assert b.raw == data
    b.verify(b"\0" * 32)


target("catalog-batch", _batch_raw, _catalog_errors)(fuzz_catalog_batch)


def _sync_seeds() -> list[bytes]:
    from corestate.node.core import sync as cs

    raws = _batch_raw()
    vec = {keys().peer_id: (1, 3, _h(7), False), "other": (0, 9, _h(8), True)}
    return [cs.encode(cs.Hello(vec)), cs.encode(cs.Reply(vec, tuple(raws), True)),
            cs.encode(cs.Push(tuple(raws)))]


def fuzz_catalog_sync(data: bytes) -> None:
    """node/core/sync.py decode (the catalog part of SyncOpen/SyncReply/SyncPush), then
    every batch it carries. Raises BadBatch; the runtime catches BadBatch/CatalogError."""
    from corestate.node.core import catalog as cat
    from corestate.node.core import sync as cs

    msg = cs.decode(data)
    batches = getattr(msg, "batches", ())
    for raw in batches:
        cat.Batch.decode(raw)


target("catalog-sync", _sync_seeds, _catalog_errors)(fuzz_catalog_sync)


def _op_seeds() -> list[bytes]:
    from corestate.node.core import membership as mem
    from corestate.protocol.keys import NodeKeys

    sk = keys().signing_key
    create = mem.sign_op(sk, kind="create", name="home lab", hlc=3)
    add = mem.sign_op(sk, kind="add", group=create.group,
                      subject=NodeKeys.from_root(bytes(32)).peer_id,
                      role="member", parents=[create.op_id], hlc=4)
    return [mem.encode_op(create), mem.encode_op(add)]


def _op_errors() -> Errors:
    from corestate.node.errors import BadMemberOp

    return (BadMemberOp,)


def fuzz_member_op(data: bytes) -> None:
    """node/core/membership.py decode_op, then verify_op. Raises BadMemberOp (the group
    service and the join client catch MembershipError)."""
    from corestate.node.core import membership as mem

    op = mem.decode_op(data)
    mem.verify_op(op)


target("member-op", _op_seeds, _op_errors)(fuzz_member_op)


def _records_seeds() -> list[bytes]:
    from corestate.node.core import records as r

    place = r.Placement(_h(5), 2, 3, 1 << 20, (
        r.Holder(0, "12D3KooWa", _h(6), 524288), r.Holder(2, "12D3KooWb", _h(7), 524288)))
    place2 = r.Placement(_h(5), 1, 1, 7, (r.Holder(0, "p", _h(6), 7),), owner="12D3KooWold")
    lease = r.RepairLease(_h(8), "12D3KooWowner", 1_800_000_000_000)
    addrs = r.AddressAdvert(("/ip4/10.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"))
    return [b"\x00" + place.value(), b"\x00" + place2.value(), b"\x01" + lease.value(),
            b"\x02" + addrs.value()]


def fuzz_catalog_records(data: bytes) -> None:
    """node/core/records.py: Placement, RepairLease, AddressAdvert decode (first byte picks
    the record). Raises CorruptRecord, which readers of a partition catch."""
    from corestate.node.core import records as r

    if not data:
        return
    which, value = data[0] % 3, data[1:]
    if which == 0:
        p = r.Placement.decode(b"k" + _h(5), value)
        assert p.value() is not None
    elif which == 1:
        r.RepairLease.decode(b"l" + _h(8), value)
    else:
        r.AddressAdvert.decode(value)


def _record_errors() -> Errors:
    from corestate.node.core.records import CorruptRecord

    return (CorruptRecord,)


target("catalog-records", _records_seeds, _record_errors)(fuzz_catalog_records)


# ---------------------------------------------------------------------------------------
# Repository objects: trees, snapshot records, packs.


def _corrupt_object() -> Errors:
    from corestate.protocol.errors import CorruptObject

    return (CorruptObject,)


def _tree_seeds() -> list[bytes]:
    from corestate.protocol import objects as o

    nodes = [
        o.Node(b"file.txt", o.FILE, 0o644, 1000, 1000, 1_700_000_000_000_000_000, 12,
               [_h(1), _h(2)], xattrs={b"user.a": b"1"}, inode=7),
        o.Node(b"dir", o.DIR, 0o755, 0, 0, 5, subtree=_h(3)),
        o.Node(b"link", o.SYMLINK, 0o777, 0, 0, 6, target=b"../file.txt"),
        o.Node(b"dev", o.CHARDEV, 0o600, 0, 0, 7, rdev=0x0501),
        o.Node(b"fifo", o.FIFO, 0o600, 0, 0, 8, sparse=True, torn=True),
    ]
    return [o.encode_tree(nodes), o.encode_tree([])]


def fuzz_tree(data: bytes) -> None:
    """protocol/objects.py decode_tree: CorruptObject for anything but a valid tree (restore,
    check, mount and diff catch CorruptObject / ProtocolError)."""
    from corestate.protocol import objects as o

    nodes = o.decode_tree(data, "tree fuzz")
    for n in nodes:
        assert o.valid_name(n.name)


target("tree", _tree_seeds, _corrupt_object)(fuzz_tree)


def _snapshot_seeds() -> list[bytes]:
    from corestate.protocol import objects as o

    s = o.Snapshot(_h(1), 1_700_000_000_000_000_000, "host", [b"/home", b"/etc"], "12D3KooWx",
                   10, 2, 12345, "btrfs", [b"/home/torn"], [(b"/etc/shadow", "permission denied")],
                   _h(9))
    return [s.encode(), o.Snapshot(_h(2), 0, "", [], "").encode()]


def fuzz_snapshot(data: bytes) -> None:
    """protocol/objects.py Snapshot.decode: CorruptObject for anything but a valid record."""
    from corestate.protocol import objects as o

    o.Snapshot.decode(data, "snapshot fuzz")


target("snapshot", _snapshot_seeds, _corrupt_object)(fuzz_snapshot)


@cache
def _sample_pack() -> tuple[bytes, bytes]:
    from corestate.protocol import pack as p

    k = keys()
    w = p.PackWriter(k, _h(0x5A))
    for i, (kind, body) in enumerate([(p.KIND_CHUNK, b"hello world " * 20),
                                      (p.KIND_CHUNK, bytes(range(256))),
                                      (p.KIND_TREE, b"tree-ish" * 3)]):
        blob_id = k.chunk_id(body) if kind == p.KIND_CHUNK else k.tree_id(body)
        w.add(kind, blob_id, body)
        del i
    return w.finish()


def _pack_seeds() -> list[bytes]:
    return [_sample_pack()[1]]


def fuzz_pack(data: bytes) -> None:
    """A whole pack as a holder or restore reads it (protocol/pack.py read_header, then every
    blob opened). CorruptObject for anything damaged."""
    from corestate.protocol import pack as p

    hdr = p.read_header(keys(), "pack fuzz", data)
    opener = p.BlobOpener(keys())
    for e, sealed in p.iter_blobs(data, hdr):
        opener.open(hdr.salt, e.kind, e.id, e.index, e.codec, e.raw_length, sealed)


target("pack", _pack_seeds, _corrupt_object)(fuzz_pack)


def seal_header(plain: bytes, salt: bytes = b"\x5a" * 32) -> bytes:
    """A pack prefix, ``plain`` sealed as its header, and the trailer (no blobs): the
    header parser's input past the AEAD, which a fuzzer could never forge."""
    import struct

    from corestate.protocol import pack as p
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    prefix = p.MAGIC + bytes([p.VERSION]) + salt
    aead = ChaCha20Poly1305(keys().pack_subkey(salt, "header"))
    sealed = aead.encrypt(p.nonce(0), plain, prefix)
    return prefix + sealed + struct.pack("<I", len(sealed)) + p.END_MAGIC


def _pack_header_seeds() -> list[bytes]:
    from corestate.protocol import pack as p

    _, data = _sample_pack()
    hdr = p.read_header(keys(), "seed", data)
    rows = [[e.kind, e.id, e.offset, e.length, e.raw_length, e.codec] for e in hdr.entries]

    def seed(rows: list[list[Any]]) -> bytes:
        area = sum(r[3] for r in rows)
        return area.to_bytes(3, "little") + cbor2.dumps({"v": 1, "blobs": rows}, canonical=True)

    return [seed(rows), seed([]), seed(rows[:1])]


def fuzz_pack_header(data: bytes) -> None:
    """protocol/pack.py read_header on a header that authenticates (the input is its
    plaintext, sealed here with the test key, after a 3-byte length of the blob area
    before it, at most 1 MiB). CorruptObject for anything malformed."""
    from corestate.protocol import pack as p

    if len(data) < 3:
        return
    area = int.from_bytes(data[:3], "little") % ((1 << 20) + 1)
    sealed = seal_header(data[3:])
    whole = sealed[: p.PREFIX_BYTES] + bytes(area) + sealed[p.PREFIX_BYTES :]
    hdr = p.read_header(keys(), "pack header fuzz", whole)
    for e in hdr.entries:
        assert e.offset >= p.PREFIX_BYTES and e.offset + e.length <= hdr.header_offset


target("pack-header", _pack_header_seeds, _corrupt_object)(fuzz_pack_header)


def _blob_seeds() -> list[bytes]:
    import zstandard

    body = b"compressible " * 100
    return [b"\x01" + len(body).to_bytes(4, "little") + zstandard.ZstdCompressor().compress(body),
            b"\x00" + (5).to_bytes(4, "little") + b"plain"]


def fuzz_pack_blob(data: bytes) -> None:
    """protocol/pack.py BlobOpener.open on a blob that authenticates (the input is its
    codec byte, raw length and body, sealed here): zstd frames of any shape, declared
    lengths of any size. CorruptObject for anything that is not the blob; the output is
    never more than the declared raw length (a zstd bomb stops there)."""
    import zstandard
    from corestate.protocol import pack as p
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(data) < 5:
        return
    codec = data[0] & 1
    raw_length = int.from_bytes(data[1:5], "little") % (p.MAX_BLOB_BYTES + 1)
    body = data[5:]
    salt = b"\x5a" * 32
    plain = body
    if codec:  # name the blob by its content when the frame decodes, so seeds pass
        try:  # read at most raw_length + 1 bytes: the harness allocates no more
            with zstandard.ZstdDecompressor().stream_reader(body) as r:
                plain = r.read(raw_length + 1)
        except zstandard.ZstdError:
            pass
    blob_id = keys().chunk_id(plain)
    sealed = ChaCha20Poly1305(keys().pack_subkey(salt, p.KIND_CHUNK)).encrypt(
        p.nonce(1), body, blob_id)
    out = p.BlobOpener(keys()).open(salt, p.KIND_CHUNK, blob_id, 1, codec, raw_length, sealed)
    assert len(out) == raw_length


target("pack-blob", _blob_seeds, _corrupt_object)(fuzz_pack_blob)


# ---------------------------------------------------------------------------------------
# Shares: headers, whole shares, scans in pieces, proofs (erasure/share.py).


def _share_errors() -> Errors:
    from corestate.erasure.errors import CorruptShare

    return (CorruptShare,)


@cache
def _sample_shares() -> list[bytes]:
    from corestate.erasure import share as s

    data = bytes(range(256)) * 20
    return [bytes(x) for x in s.make_shares(data, 2, 3, pack_id=_h(4), block_size=1024)]


def fuzz_share(data: bytes) -> None:
    """erasure/share.py read_header and verify_share on a share a peer returned: CorruptShare
    for anything but a share consistent with its root (restore and repair catch it)."""
    from corestate.erasure import share as s

    hdr = s.read_header(data)
    assert hdr.k <= hdr.n
    s.verify_share(data)


target("share", lambda: _sample_shares()[:2], _share_errors)(fuzz_share)


def _scan_seeds() -> list[bytes]:
    return [b"\x00" + _sample_shares()[0], b"\x83" + _sample_shares()[1]]


def fuzz_share_scan(data: bytes) -> None:
    """erasure/share.py scan_share over the input in pieces, maybe proving one block (first
    byte: piece size, proof or not). CorruptShare, or InvalidParameters for a block the
    share does not have (the holder's audit answers both as "not held")."""
    from corestate.erasure import share as s
    from corestate.erasure.errors import InvalidParameters

    if not data:
        return
    piece = ((data[0] & 0x7F) + 1) * 37
    prove = 1 if data[0] & 0x80 else None
    body = data[1:]
    try:
        hdr, proof = s.scan_share((body[i : i + piece] for i in range(0, len(body), piece)),
                                  prove_block=prove)
    except InvalidParameters:
        return
    whole = s.verify_share(body)  # scan and verify accept the same shares
    assert whole == hdr
    if proof is not None:
        assert s.verify_proof(hdr.root, proof.block_index, proof.to_bytes())


target("share-scan", _scan_seeds, _share_errors)(fuzz_share_scan)


def _proof_seeds() -> list[bytes]:
    from corestate.erasure import share as s

    sh = _sample_shares()[0]
    root = s.read_header(sh).root
    return [root + b"\x00" + s.prove(sh, 0).to_bytes(), root + b"\x02" + s.prove(sh, 2).to_bytes()]


def fuzz_share_proof(data: bytes) -> None:
    """erasure/share.py verify_proof on an audit answer: True or False, never an exception
    (the auditor counts a False as a failed audit)."""
    from corestate.erasure import share as s

    if len(data) < 33:
        return
    assert s.verify_proof(data[:32], data[32], data[33:]) in (True, False)


target("share-proof", _proof_seeds, _none)(fuzz_share_proof)


# ---------------------------------------------------------------------------------------
# Invite tokens, peer addresses, the address book.


def _group_error() -> Errors:
    from corestate.node.group import GroupError

    return (GroupError,)


def _invite_seeds() -> list[bytes]:
    from corestate.node.group import TOKEN_PREFIX, Invite

    inv = Invite(_h(3), "12D3KooWadmin", ("/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWadmin",),
                 bytes(range(16)), "member", 1_800_000_000_000)
    tok = inv.token()
    raw = base64.urlsafe_b64decode(tok[len(TOKEN_PREFIX):] + "=" * (-len(tok) % 4))
    return [b"\x00" + raw, b"\x01" + tok.encode()]


def fuzz_invite_token(data: bytes) -> None:
    """node/group.py Invite.parse (``corestate group join TOKEN``): GroupError for anything
    but a token. First byte: 0 — the rest is the token's CBOR (wrapped here as a token),
    1 — the rest is the text a person pasted."""
    from corestate.node.group import TOKEN_PREFIX, Invite

    if not data:
        return
    if data[0] & 1:
        text = data[1:].decode("utf-8", "surrogateescape")
    else:
        text = TOKEN_PREFIX + base64.urlsafe_b64encode(data[1:]).decode().rstrip("=")
    inv = Invite.parse(text)
    assert len(inv.group) == 32 and len(inv.secret) == 16


target("invite-token", _invite_seeds, _group_error)(fuzz_invite_token)


def _addr_seeds() -> list[bytes]:
    pid = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    return [f"/ip4/192.168.1.7/tcp/4001/p2p/{pid}".encode(), f"/p2p/{pid}".encode(),
            f"/dns/nas.local/tcp/4001/p2p/{pid}".encode()]


def fuzz_peer_address(data: bytes) -> None:
    """node/peers.py split_peer_addr (``peer add ADDR``, invites, adverts): BadAddress for
    anything but a supported peer address."""
    from corestate.node.peers import split_peer_addr

    peer, transport = split_peer_addr(data.decode("utf-8", "surrogateescape"))
    assert peer and (transport == "" or transport.startswith("/"))


def _bad_address() -> Errors:
    from corestate.node.peers import BadAddress

    return (BadAddress,)


target("peer-address", _addr_seeds, _bad_address)(fuzz_peer_address)


def _book_seeds() -> list[bytes]:
    from corestate.node.peers import PeerEntry

    e = PeerEntry("p", ["/ip4/1.2.3.4/tcp/1"], True, "user", ["site", "host"], 5, 6,
                  ["/ip4/5.6.7.8/tcp/2"])
    return [cbor2.dumps(e.to_obj()), cbor2.dumps({"addrs": ["/ip4/1.1.1.1/tcp/3"],
                                                  "source": "mdns"})]


def fuzz_address_book(data: bytes) -> None:
    """node/peers.py: an address-book value as the SqliteDict reads it (cbor2.loads) made
    into a PeerEntry. ``from_obj`` takes whatever the file holds (it ignores what is not
    an entry); values cbor2 cannot read are the store's problem, not this target's."""
    from corestate.node.peers import PeerEntry

    try:
        obj = cbor2.loads(data)
    except Exception:
        return
    e = PeerEntry.from_obj("12D3KooWpeer", obj)
    cbor2.dumps(e.to_obj())  # what add()/seen() write back


target("address-book", _book_seeds, _none)(fuzz_address_book)


# ---------------------------------------------------------------------------------------
# Files of a home: config.toml, targets.json, the anomaly state.


@cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="corestate-fuzz-"))


def _config_seeds() -> list[bytes]:
    return [
        b'[backup]\npaths = ["/home", "/etc"]\nexclude = ["*.tmp"]\n'
        b'[chunking]\nmin_size = 65536\navg_size = 262144\nmax_size = 1048576\n'
        b'[packing]\npack_size = 16777216\ncompression_level = 3\n'
        b'[mesh]\nk = 2\nn = 3\nquota_per_peer = "10 GiB"\npeer_timeout = 30\n'
        b'[schedule]\nbackup_every = "6h"\nrepair_every = "1h"\n'
        b'[health]\nholder_lost_after = "3d"\nrepair_bandwidth = "10 MiB/s"\n'
        b'[retention]\nkeep_last = 5\nkeep_within = "7d"\n'
        b'[restore]\nbuffer = "64 MiB"\n',
        b"[store]\npath = 'store'\n[network]\n[relay]\n[anomaly]\n",
    ]


def _config_error() -> Errors:
    from corestate.node.errors import ConfigError

    return (ConfigError,)


def fuzz_config(data: bytes) -> None:
    """node/home.py Config.load on a config file holding the input: ConfigError for
    anything that is not a valid config (every command and the daemon turn it into words)."""
    from corestate.node.home import Config

    path = _scratch() / "config.toml"
    path.write_bytes(data)
    Config.load(path)


target("config", _config_seeds, _config_error)(fuzz_config)


def _targets_seeds() -> list[bytes]:
    body = {"version": 1, "targets": [
        {"name": "nas", "url": "file:///mnt/nas/corestate", "endpoint": "", "quota": 1 << 40,
         "credentials_file": "", "profile": "default"},
        {"name": "b2", "url": "s3://bucket/prefix", "endpoint": "https://s3.example",
         "quota": 0, "credentials_file": "/etc/creds", "profile": "p"}]}
    return [json.dumps(body, indent=2).encode(), b'{"version": 1, "targets": []}']


def _target_error() -> Errors:
    from corestate.node.targets.store import TargetError

    return (TargetError,)


def fuzz_targets_json(data: bytes) -> None:
    """node/targets/registry.py load on a targets.json holding the input: TargetError for a
    damaged file (the CLI and the daemon say which file and what to do)."""
    from corestate.node.targets import registry

    home = _scratch() / "home-targets"
    home.mkdir(exist_ok=True)
    (home / registry.FILE_NAME).write_bytes(data)
    for spec in registry.load(home):
        assert isinstance(spec.name, str) and isinstance(spec.quota, int)


target("targets-json", _targets_seeds, _target_error)(fuzz_targets_json)


def _anomaly_seeds() -> list[bytes]:
    from corestate.node import anomalystate as a

    st = a.AnomalyState({"[\"/home\"]": {"baseline": "AAAA", "exts": ["txt"]}}, [
        a.Finding("ab" * 32, 5, ["/home"], "alert", 3.5, ["many renames"], {"renames": 40},
                  ["/home/x"], "cd" * 32, None, [], {"f": 1.0}, {"/home/y": "ee"}),
        a.Finding("12" * 32, 6, ["/home"], "ok", 0.1, []),
    ])
    return [json.dumps(st.to_json()).encode()]


def fuzz_anomaly_state(data: bytes) -> None:
    """node/anomalystate.py load on a state file holding the input: never raises — a damaged
    file is put aside and the model starts afresh (with the reason in words)."""
    from corestate.node import anomalystate as a

    home = _scratch() / "home-anomaly"
    home.mkdir(exist_ok=True)
    a.state_path(home).write_bytes(data)
    state, why = a.load(home)
    # What the node does with a loaded state right away: its questions, and saving it.
    state.protected()
    state.paused_series()
    if why is None:
        a.save(home, state)


target("anomaly-state", _anomaly_seeds, _none)(fuzz_anomaly_state)


def names() -> list[str]:
    return list(TARGETS)


def seeds_of(name: str) -> list[bytes]:
    return list(TARGETS[name].seeds())



if os.environ.get("CORESTATE_FUZZ_SELFTEST") == "1":
    # Only for test_fuzz.py: a target with a planted bug (a length field trusted), so the
    # tests can see the command find a crash, save its input and exit non-zero.

    def fuzz_selftest(data: bytes) -> None:
        """A planted bug: the first byte is trusted as an index."""
        if len(data) >= 2 and data[0] == 0x2A:
            _ = data[1:][data[1]]  # IndexError past the end: not an allowed error

    target("selftest", lambda: [b"\x00\x01ab", b"\x2a\x00x"], lambda: (ValueError,))(fuzz_selftest)
