"""The signed catalog: batch format, strict decoder, sealed values and the apply rules."""

from __future__ import annotations

import cbor2
import nacl.signing
import pytest
from blake3 import blake3
from corestate.node.core import hlc
from corestate.node.core.catalog import (
    BATCH_PREFIX,
    MAX_ENTRIES,
    ZERO_ID,
    Applied,
    Batch,
    Catalog,
    Duplicate,
    Fork,
    Gap,
    Rejected,
    open_value,
    placement_key,
    seal_value,
    sign_batch,
    snapshot_key,
)
from corestate.node.errors import BadBatch, BadValue, CatalogWriteError
from corestate.protocol.keys import NodeKeys
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = 1_764_000_000_000
A, B, C = (NodeKeys.from_root(bytes([i + 1]) * 32) for i in range(3))
MEMBERS = frozenset({A.peer_id, B.peer_id, C.peer_id})


def _pk(i: int) -> bytes:
    return placement_key(blake3(i.to_bytes(4, "big")).digest(), i % 8)


def write(cat: Catalog, keys: NodeKeys, items: list[tuple[bytes, bytes | None]], *,
          epoch: int = 0, now: int = NOW) -> Batch:
    return cat.write(keys.signing_key, keys.peer_id, epoch, items, now)


def forge(signing_key: nacl.signing.SigningKey, author: str, *, epoch: int = 0,
          seq_first: int = 1, prev: bytes = ZERO_ID, stamp: int = 0,
          entries: list[list[bytes]] | None = None) -> bytes:
    """A well-formed batch claiming ``author``, signed by whatever key is given."""
    body = cbor2.dumps(
        [1, author, epoch, seq_first, prev, stamp, entries or [[b"k", b"v"]]], canonical=True
    )
    sig = signing_key.sign(BATCH_PREFIX + body).signature
    return cbor2.dumps([body, sig], canonical=True)


def apply(cat: Catalog, batch: Batch | bytes, **kw: object) -> object:
    kw.setdefault("members", MEMBERS)
    kw.setdefault("now_ms", NOW)
    return cat.apply(batch, **kw)


# -- format ----------------------------------------------------------------------------


def test_batch_round_trip_and_id() -> None:
    b = sign_batch(A.signing_key, epoch=2, seq_first=5, prev=bytes(range(32)), hlc=hlc.pack(NOW),
                   entries=[(b"cap", b"\x01\x02"), (b"s-gone", None)])
    again = Batch.decode(b.raw)
    assert again == b
    assert (again.author, again.epoch, again.seq_first, again.seq_last) == (A.peer_id, 2, 5, 6)
    assert again.entries == ((b"cap", b"\x01\x02"), (b"s-gone", None))
    assert again.batch_id == blake3(again.signed_bytes()).digest()
    assert again.signed_bytes().startswith(BATCH_PREFIX)
    assert again.verify(bytes(A.signing_key.verify_key))
    assert not again.verify(bytes(B.signing_key.verify_key))
    assert list(again.records()) == [(2, 5, b"cap", b"\x01\x02", b.hlc), (2, 6, b"s-gone", None, b.hlc)]


def test_golden_batch_bytes() -> None:
    # Ed25519 is deterministic: these bytes pin the wire format (SPEC.md, "Catalog").
    b = sign_batch(A.signing_key, epoch=0, seq_first=1, prev=ZERO_ID, hlc=hlc.pack(NOW, 1),
                   entries=[(b"c", b"\x05"), (b"x", None)])
    body = cbor2.dumps(
        [1, A.peer_id, 0, 1, ZERO_ID, hlc.pack(NOW, 1), [[b"c", b"\x05"], [b"x"]]],
        canonical=True,
    )
    assert b.raw == cbor2.dumps([body, b.signature], canonical=True)
    assert len(b.raw) == 1 + 2 + len(body) + 2 + 64  # array head, bstr heads, signature
    assert len(b.raw) == 179
    assert blake3(b.raw).hexdigest() == (
        "5653ce9d93d70449c80467a38a6de4725e3b283dc25c66d9f1ac8bc38c263651"
    )


def test_placement_entries_are_compact() -> None:
    items = [(_pk(i), (i % 300).to_bytes(2, "big")) for i in range(1000)]
    b = sign_batch(A.signing_key, epoch=0, seq_first=1, prev=ZERO_ID, hlc=0, entries=items)
    assert len(b.raw) / 1000 < 42  # 34-byte key + 2-byte value + 5 bytes of CBOR heads


def _bad(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadBatch) as e:
        Batch.decode(raw)
    assert fragment in e.value.reason


def test_decoder_refuses_non_canonical_and_invalid_batches() -> None:
    good = sign_batch(A.signing_key, epoch=0, seq_first=1, prev=ZERO_ID, hlc=0,
                      entries=[(b"k", b"v")])
    body = good.raw[2:-66]
    assert len(body) < 256 and good.raw[1] == 0x58
    # A non-minimal length head for the body.
    _bad(b"\x82\x59" + len(body).to_bytes(2, "big") + body + good.raw[-66:], "canonical")
    _bad(good.raw + b"\x00", "trailing")
    _bad(good.raw[:-1], "CBOR")  # truncated
    _bad(cbor2.dumps([body], canonical=True), "array")
    _bad(cbor2.dumps([body, b"s" * 63], canonical=True), "signature")
    _bad(b"\xd8\x18" + good.raw, "")  # a tag around the whole

    def with_body(fields: list[object]) -> bytes:
        return cbor2.dumps([cbor2.dumps(fields, canonical=True), b"s" * 64], canonical=True)

    base: list[object] = [1, A.peer_id, 0, 1, ZERO_ID, 0, [[b"k", b"v"]]]

    def patched(i: int, v: object) -> bytes:
        f = list(base)
        f[i] = v
        return with_body(f)

    assert Batch.decode(with_body(base)).entries == ((b"k", b"v"),)
    _bad(patched(0, 2), "version")
    _bad(patched(1, b"author"), "author")
    _bad(patched(1, ""), "author")
    _bad(patched(2, -1), "epoch")
    _bad(patched(2, True), "epoch")
    _bad(patched(3, 0), "seq_first")
    _bad(patched(4, b"\0" * 31), "prev")
    _bad(patched(5, 1.5), "hlc")
    _bad(patched(5, 1 << 64), "hlc")
    _bad(patched(6, []), "entries")
    _bad(patched(6, [[b"k", b"v"]] * 2), "at most once")
    _bad(patched(6, [[b"k", None]]), "value")
    _bad(patched(6, [[b"", b"v"]]), "key")
    _bad(patched(6, [[b"k" * 65]]), "key")
    _bad(patched(6, [[b"k", b"v", b"w"]]), "entry")
    _bad(patched(6, [{"k": b"v"}]), "entry")
    _bad(patched(6, [[bytes([i % 256, i // 256])] for i in range(MAX_ENTRIES + 1)]), "entries")
    _bad(with_body(base[:6]), "7 fields")
    _bad(b"\x82" + b"\x43" + b"abc" + b"\x58\x40" + b"s" * 64, "7 fields")
    with pytest.raises(BadBatch):
        Batch.decode(bytearray(good.raw))
    with pytest.raises(CatalogWriteError):
        sign_batch(A.signing_key, epoch=0, seq_first=1, prev=ZERO_ID, hlc=0, entries=[])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_decode_or_raise_bad_batch(data: bytes) -> None:
    try:
        b = Batch.decode(data)
    except BadBatch:
        return
    assert b.raw == data


_GOOD = sign_batch(A.signing_key, epoch=3, seq_first=9, prev=b"\x07" * 32, hlc=hlc.pack(NOW),
                   entries=[(b"cap", b"\x01"), (b"gone", None), (_pk(1), b"\x00\x02")]).raw


@settings(max_examples=400)
@given(st.integers(0, len(_GOOD) - 1), st.integers(1, 255), st.integers(0, 3))
def test_fuzz_mutated_batches_never_apply(pos: int, xor: int, cut: int) -> None:
    data = bytearray(_GOOD)
    data[pos] ^= xor
    mutated = bytes(data[: len(data) - cut])
    try:
        Batch.decode(mutated)
    except BadBatch:
        pass
    cat = Catalog()
    v = cat.apply(mutated, members=lambda _a: True, now_ms=NOW)
    assert isinstance(v, Rejected | Gap)  # decoded but gapped (seq 9) cannot happen unsigned
    if isinstance(v, Gap):  # only possible if the signature still verifies: it cannot
        pytest.fail("a mutated batch verified")
    assert cat.state() == {}


# -- sealed values ---------------------------------------------------------------------


def test_sealed_values_bind_author_and_key() -> None:
    key = bytes(range(32))
    k = snapshot_key(b"\x11" * 32)
    sealed = seal_value(key, A.peer_id, k, b"/home/alice", nonce=b"\x00" * 12)
    assert sealed == seal_value(key, A.peer_id, k, b"/home/alice", nonce=b"\x00" * 12)
    assert len(sealed) == 12 + len(b"/home/alice") + 16
    assert open_value(key, A.peer_id, k, sealed) == b"/home/alice"
    other = seal_value(key, A.peer_id, k, b"/home/alice")
    assert other != sealed and open_value(key, A.peer_id, k, other) == b"/home/alice"
    for args in [(bytes(32), A.peer_id, k), (key, B.peer_id, k), (key, A.peer_id, k + b"x")]:
        with pytest.raises(BadValue):
            open_value(*args, sealed)
    with pytest.raises(BadValue):
        open_value(key, A.peer_id, k, sealed[:20])


# -- apply rules -----------------------------------------------------------------------


def test_own_writes_chain_and_replicate() -> None:
    own, replica = Catalog(), Catalog()
    b1 = write(own, A, [(b"c", b"\x01"), (_pk(1), b"\x00\x01")])
    b2 = write(own, A, [(b"c", b"\x02"), (_pk(1), None)], now=NOW + 5)
    assert (b1.seq_first, b1.seq_last, b1.prev) == (1, 2, ZERO_ID)
    assert (b2.seq_first, b2.prev) == (3, b1.batch_id)
    assert b2.hlc > b1.hlc
    for b in (b1, b2):
        v = apply(replica, b.raw)
        assert isinstance(v, Applied) and not v.clamped and v.superseded_epoch is None
    assert replica.state() == own.state()
    assert replica.version_vector() == {A.peer_id: (0, 4)}
    e = replica.get(A.peer_id, _pk(1))
    assert e is not None and (e.seq, e.value) == (4, None)  # a tombstone replicates
    assert replica.get(A.peer_id, b"c") == (3, b"\x02", b2.hlc)
    assert set(replica.entries(A.peer_id)) == {b"c", _pk(1)}
    assert replica.get(B.peer_id, b"c") is None and dict(replica.entries(B.peer_id)) == {}
    assert replica.head(A.peer_id) == (0, 4, b2.batch_id)


def test_redelivery_is_a_duplicate_and_changes_nothing() -> None:
    own, replica = Catalog(), Catalog()
    b1 = write(own, A, [(b"c", b"\x01")])
    b2 = write(own, A, [(b"d", b"\x01")])
    apply(replica, b1)
    apply(replica, b2)
    before = replica.state()
    for b in (b1, b2, b1):
        v = apply(replica, b.raw)
        assert isinstance(v, Duplicate) and v.batch_id == b.batch_id
    assert replica.state() == before and replica.forks() == []


def test_non_members_revoked_and_forged_batches_are_refused() -> None:
    own = Catalog()
    b1 = write(own, A, [(b"c", b"\x01")])
    cat = Catalog()
    v = apply(cat, b1, members=frozenset({B.peer_id}))
    assert isinstance(v, Rejected) and "not a member" in v.reason
    v = apply(cat, b1, members=lambda p: True, revoked={A.peer_id})
    assert isinstance(v, Rejected) and "removed" in v.reason
    # B writes into A's partition: the signature is B's, the author A.
    v = apply(cat, forge(B.signing_key, A.peer_id))
    assert isinstance(v, Rejected) and "signature" in v.reason
    # A signature over other bytes.
    body_sig = Batch.decode(forge(A.signing_key, A.peer_id, entries=[[b"k", b"w"]])).signature
    raw = cbor2.dumps([Batch.decode(b1.raw).signed_bytes()[len(BATCH_PREFIX):], body_sig],
                      canonical=True)
    v = apply(cat, raw)
    assert isinstance(v, Rejected) and "signature" in v.reason
    v = apply(cat, forge(A.signing_key, "QmNotAnEd25519PeerId", entries=[[b"k", b"v"]]),
              members=lambda p: True)
    assert isinstance(v, Rejected) and "PeerID" in v.reason
    v = apply(cat, b"\x82\x00")
    assert isinstance(v, Rejected) and v.batch_id == b""
    assert cat.state() == {} and cat.forks() == []


def test_gaps_are_refused_with_the_seq_needed() -> None:
    own = Catalog()
    b1 = write(own, A, [(b"a", b"1"), (b"b", b"2")])
    b2 = write(own, A, [(b"c", b"3")])
    b3 = write(own, A, [(b"d", b"4")])
    cat = Catalog()
    v = apply(cat, b2)
    assert isinstance(v, Gap) and (v.epoch, v.need_seq) == (0, 1)
    assert cat.state() == {}
    apply(cat, b1)
    v = apply(cat, b3)
    assert isinstance(v, Gap) and v.need_seq == 3 and "need seq 3" in v.reason
    assert cat.version_vector() == {A.peer_id: (0, 2)}
    assert isinstance(apply(cat, b2), Applied) and isinstance(apply(cat, b3), Applied)


def test_two_batches_for_one_seq_are_a_fork_kept_as_evidence() -> None:
    first, second = Catalog(), Catalog()  # two instances of A, e.g. a cloned disk
    x1 = write(first, A, [(b"c", b"\x01")])
    y1 = write(second, A, [(b"c", b"\x09")])
    x2 = write(first, A, [(b"d", b"\x01")])
    cat = Catalog()
    apply(cat, x1)
    before = cat.state()
    v = apply(cat, y1)
    assert isinstance(v, Fork) and "two different batches for seq 1" in v.reason
    assert v.evidence.kept == x1.raw and v.evidence.other == y1.raw
    assert cat.state() == before
    assert cat.forks() == [v.evidence]
    assert isinstance(apply(cat, y1), Fork) and len(cat.forks()) == 1  # evidence kept once
    # The fork's continuation does not chain either.
    y2 = write(second, A, [(b"e", b"\x01")])
    v = apply(cat, y2)
    assert isinstance(v, Fork) and "prev does not chain" in v.reason
    assert isinstance(apply(cat, x2), Applied)
    assert len(cat.forks()) == 2
    # Evidence survives a save and load.
    loaded = Catalog.load(cat.author_rows(), cat.batch_rows(), cat.entry_rows(), cat.fork_rows())
    assert loaded.forks() == cat.forks()


def test_a_forked_batch_overlapping_two_held_batches() -> None:
    first, second = Catalog(), Catalog()
    write(first, A, [(b"a", b"1")])
    write(second, A, [(b"a", b"1")])
    x2 = write(first, A, [(b"b", b"1"), (b"c", b"1")])
    y2 = write(second, A, [(b"b", b"1")])
    y3 = write(second, A, [(b"c", b"2"), (b"d", b"2")])
    cat = Catalog()
    for b in first.batches(A.peer_id):
        apply(cat, b)
    v = apply(cat, y2)
    assert isinstance(v, Fork) and v.evidence.kept == x2.raw  # seq 2 also held in x2
    v = apply(cat, y3)
    assert isinstance(v, Fork) and v.evidence.kept == x2.raw


def test_new_epoch_supersedes_and_the_old_epoch_is_refused() -> None:
    old_instance = Catalog()
    o1 = write(old_instance, A, [(b"c", b"\x01"), (b"keep", b"1")])
    o2 = write(old_instance, A, [(b"c", b"\x02")])
    cat = Catalog()
    apply(cat, o1)
    # A recovers: it fetched its head (o1) and writes epoch 1 carrying forward what it keeps.
    recovered = Catalog()
    apply(recovered, o1)
    n1 = write(recovered, A, [(b"keep", b"1"), (b"new", b"1")], epoch=1)
    assert (n1.epoch, n1.seq_first, n1.prev) == (1, 1, ZERO_ID)
    v = apply(cat, n1)
    assert isinstance(v, Applied) and v.superseded_epoch == 0
    assert set(cat.entries(A.peer_id)) == {b"keep", b"new"}
    assert cat.version_vector() == {A.peer_id: (1, 2)}
    # The old instance keeps running: its next batch is refused everywhere that saw epoch 1.
    v = apply(cat, o2)
    assert isinstance(v, Rejected) and "older than epoch 1" in v.reason
    v = apply(cat, o1)
    assert isinstance(v, Rejected)
    # A later epoch must start at seq 1 with a zero prev.
    n2 = write(recovered, A, [(b"x", b"1")], epoch=1)
    v = apply(Catalog(), n2)
    assert isinstance(v, Gap) and (v.epoch, v.need_seq) == (1, 1)
    bad = forge(A.signing_key, A.peer_id, epoch=2, prev=b"\x01" * 32)
    v = apply(cat, bad)
    assert isinstance(v, Rejected) and "zero prev" in v.reason
    with pytest.raises(CatalogWriteError):
        write(recovered, A, [(b"y", b"1")], epoch=0)
    with pytest.raises(CatalogWriteError):
        recovered.write(B.signing_key, A.peer_id, 1, [(b"y", b"1")], NOW)


def test_future_timestamps_are_clamped_reported_and_kept() -> None:
    far = hlc.pack(NOW + 30 * 86_400_000)
    raw = forge(A.signing_key, A.peer_id, stamp=far)
    cat = Catalog()
    v = apply(cat, raw, max_drift_ms=60_000)
    assert isinstance(v, Applied) and v.clamped and "clamped" in v.reason
    e = cat.get(A.peer_id, b"k")
    assert e is not None and e.hlc == far  # stored verbatim: signed, and replicas converge
    assert hlc.physical(cat.clock) <= NOW + 60_000 + 1  # our clock was not dragged ahead
    assert hlc.clamp(e.hlc, NOW, 60_000) < far
    own = write(cat, B, [(b"c", b"1")])
    assert hlc.physical(own.hlc) <= NOW + 60_000 + 1


def test_rows_round_trip() -> None:
    own, cat = Catalog(), Catalog()
    for i in range(5):
        b = write(own, A, [(_pk(i), b"\x01"), (b"c", bytes([i]))], now=NOW + i)
        apply(cat, b)
    write(cat, B, [(b"c", b"\x07")])
    rows = (list(cat.author_rows()), list(cat.batch_rows()), list(cat.entry_rows()))
    loaded = Catalog.load(*rows, clock=cat.clock)
    assert loaded.state() == cat.state()
    assert loaded.version_vector() == cat.version_vector()
    assert [b.raw for b in loaded.batches(A.peer_id)] == [b.raw for b in cat.batches(A.peer_id)]
    nxt = write(own, A, [(b"c", b"\x09")], now=NOW + 9)
    assert isinstance(apply(loaded, nxt), Applied)
    assert isinstance(apply(loaded, own.batches(A.peer_id)[0]), Duplicate)


def test_a_partition_is_capped_in_entries_and_bytes() -> None:
    w = Catalog()
    batches = [w.write(A.signing_key, A.peer_id, 0, [(bytes([i]), b"v" * 100)], NOW) for i in range(6)]
    # A replica with a cap of 4 entries per partition takes 4 and refuses the rest.
    small = Catalog(max_partition_entries=4)
    kinds = [small.apply(b.raw, members=MEMBERS, now_ms=NOW).kind for b in batches]
    assert kinds == ["applied"] * 4 + ["rejected", "gap"]
    assert small.head(A.peer_id)[1] == 4
    # The same in bytes; the count survives a reload from rows.
    size = len(batches[0].raw)
    by_bytes = Catalog(max_partition_bytes=3 * size)
    verdicts = [by_bytes.apply(b.raw, members=MEMBERS, now_ms=NOW) for b in batches]
    assert [v.kind for v in verdicts] == ["applied"] * 3 + ["rejected", "gap", "gap"]
    assert "bytes" in verdicts[3].reason
    again = Catalog.load(by_bytes.author_rows(), by_bytes.batch_rows(), by_bytes.entry_rows(),
                         max_partition_bytes=3 * size)
    assert again.apply(batches[3].raw, members=MEMBERS, now_ms=NOW).kind == "rejected"
    # The author's own writes stop there too.
    own = Catalog(max_partition_entries=2)
    own.write(A.signing_key, A.peer_id, 0, [(b"a", b"1"), (b"b", b"2")], NOW)
    with pytest.raises(CatalogWriteError, match="entries"):
        own.write(A.signing_key, A.peer_id, 0, [(b"c", b"3")], NOW)
    # The defaults leave room for a node with years of backups and a million placements.
    assert Catalog().max_partition_entries >= 10_000_000 and Catalog().max_partition_bytes >= 1 << 30


@pytest.mark.parametrize("bomb", ["map-keys", "shared"])
def test_a_batch_of_cbor_that_explodes_when_re_encoded_is_refused_first(bomb: str) -> None:
    """Found by fuzzing (tests/fuzz, target catalog-sync; Batch.decode re-encodes the same
    way): without the guard these take seconds (each level more doubles it) and fail with
    another reason."""
    import time

    from cborbombs import map_key_bomb, shared_bomb

    data = map_key_bomb(18) if bomb == "map-keys" else shared_bomb(8)
    t0 = time.monotonic()
    for raw in (data, cbor2.dumps([data, b"\0" * 64])):  # as the batch, and as its body
        with pytest.raises(BadBatch, match="not plain CBOR data"):
            Batch.decode(raw)
    assert time.monotonic() - t0 < 10.0  # a bound against a hang, generous for a loaded machine
