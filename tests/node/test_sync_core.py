"""Catalog reconciliation: plans, messages, CRDT laws and bytes on the wire."""

from __future__ import annotations

import time

import pytest
from blake3 import blake3
from corestate.node.core import sync
from corestate.node.core.catalog import (
    ZERO_ID,
    Batch,
    Catalog,
    placement_key,
    seal_value,
    sign_batch,
    snapshot_key,
)
from corestate.node.core.sync import Send, plan
from corestate.node.errors import BadBatch
from corestate.protocol.keys import NodeKeys
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = 1_764_000_000_000
AUTHORS = [NodeKeys.from_root(bytes([0x40 + i]) * 32) for i in range(3)]
MEMBERS = frozenset(k.peer_id for k in AUTHORS)
KEYSPACE = [b"c", b"s1", b"s2", placement_key(b"\x01" * 32, 0), placement_key(b"\x01" * 32, 1)]


def clone(c: Catalog) -> Catalog:
    return Catalog.load(c.author_rows(), c.batch_rows(), c.entry_rows(), c.fork_rows(), c.clock)


def held(c: Catalog) -> list[bytes]:
    return [row[-1] for row in c.batch_rows()]


def replica(batches: list[bytes]) -> Catalog:
    c = Catalog()
    sync.apply_all(c, batches, members=MEMBERS, now_ms=NOW)
    return c


def exchange(x: Catalog, y: Catalog) -> tuple[int, int]:
    """One exchange initiated by x; returns (messages, bytes on the wire)."""
    m1 = sync.hello(x)
    m2 = sync.answer(y, m1)
    m3, _, complete = sync.finish(x, m2, members=MEMBERS, now_ms=NOW)
    assert complete
    sent = [m1, m2]
    if m3 is not None:
        sync.absorb(y, m3, members=MEMBERS, now_ms=NOW)
        sent.append(m3)
    return len(sent), sum(map(len, sent))


# -- plan and messages -----------------------------------------------------------------


def test_plan_sends_what_the_remote_lacks_and_nothing_it_would_refuse() -> None:
    local = {"a": (0, 10), "b": (1, 4), "c": (0, 7), "d": (2, 3), "e": (1, 5)}
    remote = {"b": (0, 99), "c": (0, 3), "d": (3, 1), "e": (1, 5), "z": (0, 1)}
    assert plan(local, remote) == [Send("a", 0, 1), Send("b", 1, 1), Send("c", 0, 4)]
    assert plan(local, local) == []
    assert plan({}, remote) == []


def test_vector_and_message_round_trips() -> None:
    v = {AUTHORS[0].peer_id: (0, 12, b"\x01" * 32, False), AUTHORS[1].peer_id: (3, 1, b"\x02" * 32, True)}
    assert sync.decode_vector(sync.encode_vector(v)) == v
    assert len(sync.encode_vector(v)) < 100 * len(v)
    with pytest.raises(ValueError):  # the wire form always carries the head and the flag
        sync.encode_vector({AUTHORS[0].peer_id: (0, 12)})
    for msg in (sync.Hello(v), sync.Reply(v, (b"x", b"yz"), False), sync.Push((b"q",))):
        assert sync.decode(sync.encode(msg)) == msg


def test_hostile_messages_are_refused() -> None:
    import cbor2

    h = bytes(32)
    for obj in ([], [9, {}], [1], [1, {"a": [0]}], [1, {"a": [0, -1]}], [1, {"a": [0, True]}],
                [1, {"a": [0, 1]}], [1, {"a": [0, 1, h]}], [1, {"a": [0, 1, h[:31], False]}],
                [1, {"a": [0, 1, h, 0]}], [1, {"a": [0, -1, h, False]}],
                [2, {}, [], 1], [2, {}, ["x"], True], [3, [1]], {"t": 1}, [1, []]):
        with pytest.raises(BadBatch):
            sync.decode(cbor2.dumps(obj, canonical=True))
    with pytest.raises(BadBatch):
        sync.decode(b"\x82\x01\xa0\x00")  # trailing byte
    with pytest.raises(BadBatch):
        sync.decode(b"\x82\x18\x01\xa0")  # non-minimal integer
    with pytest.raises(BadBatch):
        sync.answer(Catalog(), sync.encode(sync.Push(())))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_sync_messages(data: bytes) -> None:
    try:
        msg = sync.decode(data)
    except BadBatch:
        return
    assert sync.encode(msg) == data


# -- CRDT laws -------------------------------------------------------------------------

values = st.one_of(st.none(), st.binary(min_size=0, max_size=3))


@st.composite
def universes(draw: st.DrawFn) -> list[bytes]:
    """Valid batches of 1-3 authors, each with 1-2 epochs of 1-4 batches."""
    out: list[bytes] = []
    for keys in AUTHORS[: draw(st.integers(1, 3))]:
        w = Catalog()
        for epoch, n in enumerate(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))):
            for j in range(n):
                items = draw(st.dictionaries(st.sampled_from(KEYSPACE), values, min_size=1,
                                             max_size=4))
                out.append(w.write(keys.signing_key, keys.peer_id, epoch, items, NOW + j).raw)
    return out


LAWS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@LAWS
@given(st.data())
def test_any_delivery_order_with_redelivery_converges(data: st.DataObject) -> None:
    batches = data.draw(universes())
    reference = replica(batches)
    order = data.draw(st.permutations(batches))
    again = data.draw(st.lists(st.sampled_from(batches), max_size=5))
    c = Catalog()
    verdicts = sync.apply_all(c, order + again, members=MEMBERS, now_ms=NOW)
    assert c.state() == reference.state()
    assert {v.kind for v in verdicts} <= {"applied", "duplicate", "rejected"}
    assert all("older than" in v.reason for v in verdicts if v.kind == "rejected")
    # Idempotent: delivering everything again changes nothing.
    sync.apply_all(c, batches, members=MEMBERS, now_ms=NOW)
    assert c.state() == reference.state() and c.forks() == []


def _subset(data: st.DataObject, batches: list[bytes]) -> Catalog:
    return replica(data.draw(st.lists(st.sampled_from(batches), unique=True)) if batches else [])


@LAWS
@given(st.data())
def test_one_exchange_converges_in_at_most_three_messages(data: st.DataObject) -> None:
    batches = data.draw(universes())
    x, y = _subset(data, batches), _subset(data, batches)
    union = replica(held(x) + held(y))
    y_first = clone(y), clone(x)
    messages, _ = exchange(x, y)
    assert messages <= 3
    assert x.state() == y.state() == union.state()
    # Commutative: the other side initiating gives the same state.
    exchange(*y_first)
    assert y_first[0].state() == union.state() == y_first[1].state()
    # Idempotent: a second exchange sends no batch and changes nothing.
    messages, _ = exchange(x, y)
    assert messages == 2 and x.state() == union.state()


@LAWS
@given(st.data())
def test_merge_is_associative(data: st.DataObject) -> None:
    batches = data.draw(universes())
    x, y, z = (_subset(data, batches) for _ in range(3))
    union = replica(held(x) + held(y) + held(z))
    left_x, left_y, left_z = clone(x), clone(y), clone(z)
    exchange(left_x, left_y)
    exchange(left_x, left_z)  # (x ⊔ y) ⊔ z
    exchange(y, z)
    exchange(x, y)  # x ⊔ (y ⊔ z)
    assert left_x.state() == x.state() == union.state()


def test_missing_batches_are_forwarded_byte_for_byte() -> None:
    a = AUTHORS[0]
    w = Catalog()
    sent = [w.write(a.signing_key, a.peer_id, 0, [(b"c", bytes([i]))], NOW + i) for i in range(4)]
    r = replica([b.raw for b in sent[:1]])
    missing = w.missing_for(r.version_vector())
    assert [b.raw for b in missing] == [b.raw for b in sent[1:]]
    assert w.missing_for(w.version_vector()) == []


def test_a_lasting_gap_keeps_its_verdict() -> None:
    a = AUTHORS[0]
    w = Catalog()
    _b1, b2 = (w.write(a.signing_key, a.peer_id, 0, [(b"c", bytes([i]))], NOW) for i in range(2))
    c = Catalog()
    (v,) = sync.apply_all(c, [b2.raw], members=MEMBERS, now_ms=NOW)
    assert v.kind == "gap" and c.state() == {}


def _histories(x_len: int, y_len: int) -> tuple[list[bytes], list[bytes]]:
    """One author, a common batch at seq 1, then two histories it signed for seq 2 on (an
    equivocation), extended to ``x_len`` and ``y_len`` batches."""
    k = AUTHORS[0].signing_key
    common = sign_batch(k, epoch=0, seq_first=1, prev=ZERO_ID, hlc=NOW, entries=[(b"c", b"1")])
    out = []
    for tag, n in ((b"x", x_len), (b"y", y_len)):
        chain, prev = [common.raw], common.batch_id
        for i in range(n):
            b = sign_batch(k, epoch=0, seq_first=2 + i, prev=prev, hlc=NOW + i,
                           entries=[(placement_key(b"\x01" * 32, i), tag)])
            chain.append(b.raw)
            prev = b.batch_id
        out.append(chain)
    return out[0], out[1]


def sync_until_done(x: Catalog, y: Catalog, rounds: int = 4) -> list[str]:
    """Exchanges initiated by x until one says nothing is left; the verdict kinds seen."""
    kinds: list[str] = []
    for _ in range(rounds):
        m2 = sync.answer(y, sync.hello(x))
        m3, got, complete = sync.finish(x, m2, members=MEMBERS, now_ms=NOW)
        kinds += [v.kind for v in got]
        if m3 is not None:
            kinds += [v.kind for v in sync.absorb(y, m3, members=MEMBERS, now_ms=NOW)]
        if complete:
            break
    return kinds


@pytest.mark.parametrize(("x_len", "y_len"), [(2, 2), (1, 1), (3, 1), (1, 3), (2, 3)])
def test_an_author_signing_two_histories_is_seen_as_a_fork_by_both_replicas(x_len: int, y_len: int) -> None:
    xs, ys = _histories(x_len, y_len)
    x, y = replica(xs), replica(ys)
    author = AUTHORS[0].peer_id
    assert x.head(author) != y.head(author)
    kinds = sync_until_done(x, y)
    assert "fork" in kinds
    for c in (x, y):
        (ev, *_) = c.forks()
        assert ev.author == author and ev.epoch == 0
        # The evidence is two batches the author signed for overlapping seqs.
        kept, other = Batch.decode(ev.kept), Batch.decode(ev.other)
        pub = AUTHORS[0].signing_key.verify_key.encode()
        assert kept.verify(pub) and other.verify(pub) and kept.batch_id != other.batch_id
        assert kept.seq_first <= other.seq_last and other.seq_first <= kept.seq_last
        assert c.sync_vector()[author][3] is True
    # Each replica keeps the history it had (nothing is silently merged), and once both
    # hold evidence an exchange sends no more conflicting batches (no alert every round).
    assert x.head(author) == replica(xs).head(author) and y.head(author) == replica(ys).head(author)
    assert sync.decode(sync.answer(y, sync.hello(x))).batches == ()
    assert sync.decode(sync.answer(x, sync.hello(y))).batches == ()


def test_a_replica_with_evidence_hands_it_to_one_without() -> None:
    xs, ys = _histories(2, 2)
    x, y = replica(xs), replica(ys)
    sync_until_done(x, y)
    fresh = replica(xs[:1])  # holds only the common batch: it could not tell
    assert not fresh.forks()
    sync_until_done(fresh, x)
    assert fresh.forks() and fresh.sync_vector()[AUTHORS[0].peer_id][3] is True


def test_a_reply_over_budget_is_a_prefix_and_says_so() -> None:
    a = AUTHORS[0]
    w = Catalog()
    for i in range(5):
        w.write(a.signing_key, a.peer_id, 0, [(bytes([i]), b"v" * 1000)], NOW)
    c = Catalog()
    m2 = sync.answer(w, sync.hello(c), max_bytes=2500)
    _, verdicts, complete = sync.finish(c, m2, members=MEMBERS, now_ms=NOW)
    assert not complete and [v.kind for v in verdicts] == ["applied", "applied"]
    exchange(c, w)
    assert c.state() == w.state()


# -- the benchmark: two 1M-entry catalogs that differ in 1% ----------------------------


def _log(keys: NodeKeys, n_batches: int, per_batch: int, data_key: bytes) -> list[Batch]:
    """An author's realistic log: placement records, a snapshot record and a capacity
    advert per batch (a backup run that stored ~1000 shares)."""
    out: list[Batch] = []
    prev, seq = ZERO_ID, 1
    tag = keys.peer_id.encode()
    for b in range(n_batches):
        snap = blake3(tag + b"snap" + b.to_bytes(4, "big")).digest()
        items: list[tuple[bytes, bytes | None]] = [
            (snapshot_key(snap), seal_value(data_key, keys.peer_id, snapshot_key(snap),
                                            b"\xa4" + bytes(180), nonce=snap[:12])),
            (b"c", (1_000_000_000_000 - b).to_bytes(8, "big") + b"site-a/host-1"),
        ]
        for i in range(per_batch - 2):
            pack = blake3(tag + (b * per_batch + i).to_bytes(8, "big")).digest()
            items.append((placement_key(pack, i % 6), (i % 24).to_bytes(2, "big")))
        batch = sign_batch(keys.signing_key, epoch=0, seq_first=seq, prev=prev,
                           hlc=(NOW + b) << 16, entries=items)
        out.append(batch)
        prev, seq = batch.batch_id, batch.seq_last + 1
    return out


@pytest.mark.slow
def test_two_million_entry_catalogs_differing_in_one_percent_converge_in_budget() -> None:
    authors = [NodeKeys.from_root(bytes([0x60 + i]) * 32) for i in range(10)]
    members = frozenset(k.peer_id for k in authors)
    logs = [_log(k, 101, 1000, bytes(32)) for k in authors]  # 100 common batches + 1 more
    x = Catalog()
    for log in logs:
        for batch in log[:100]:
            assert x.apply(batch, members=members, now_ms=NOW).kind == "applied"
    y = clone(x)
    assert sum(seq for _, seq in x.version_vector().values()) == 1_000_000
    # x is ahead on the first five authors, y on the other five: 10,000 entries differ.
    for i, log in enumerate(logs):
        (x if i < 5 else y).apply(log[100], members=members, now_ms=NOW)
    start = time.perf_counter()
    m1 = sync.hello(x)
    m2 = sync.answer(y, m1)
    m3, verdicts, complete = sync.finish(x, m2, members=members, now_ms=NOW)
    assert m3 is not None and complete
    pushed = sync.absorb(y, m3, members=members, now_ms=NOW)
    seconds = time.perf_counter() - start
    assert [v.kind for v in verdicts + pushed] == ["applied"] * 10
    wire = len(m1) + len(m2) + len(m3)
    print(f"\n1% of 1M: 3 messages, {wire} bytes on the wire "
          f"({wire / 10_000:.1f} per differing entry), {seconds:.3f} s")
    assert wire <= 1_200_000
    assert x.version_vector() == y.version_vector()
    assert x.state() == y.state()


@pytest.mark.parametrize("bomb", ["map-keys", "shared"])
def test_cbor_that_explodes_when_re_encoded_is_refused_first(bomb: str) -> None:
    """Found by fuzzing (tests/fuzz, target catalog-sync): 122 bytes of nested map keys
    froze ``decode`` in its canonical re-encoding (a member's SyncOpen could hang the
    responder). The ones here are small enough to finish without the guard — in seconds,
    with another reason."""
    from cborbombs import map_key_bomb, shared_bomb

    data = map_key_bomb(18) if bomb == "map-keys" else shared_bomb(8)
    t0 = time.monotonic()
    with pytest.raises(BadBatch, match="not plain CBOR data"):
        sync.decode(data)
    assert time.monotonic() - t0 < 10.0  # a bound against a hang, generous for a loaded machine
