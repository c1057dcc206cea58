"""The catalog record codec: the exact bytes SPEC 10.4 gives, and nothing malformed accepted."""

from __future__ import annotations

import cbor2
import pytest
from corestate.node.core import records
from hypothesis import given
from hypothesis import strategies as st

PEER = "12D3KooWGA6TsXbuTQMJB4fTiJrQtVAA1YLKfw2TxAzSG7pgzJkB"


def test_a_placement_is_the_positional_array_spec_gives() -> None:
    pack = bytes(range(32))
    rec = records.Placement(pack, 2, 4, 1000, (records.Holder(0, PEER, b"\1" * 32, 600),))
    assert rec.key == b"k" + pack
    assert rec.value() == cbor2.dumps([2, 4, 1000, [[0, PEER, b"\1" * 32, 600]]], canonical=True)
    moved = records.Placement(pack, 2, 4, 1000, (), owner=PEER)
    assert cbor2.loads(moved.value()) == [2, 4, 1000, [], PEER]
    assert records.Placement.decode(rec.key, rec.value()) == rec
    assert records.Placement.decode(moved.key, moved.value()) == moved


def test_keys_say_what_they_hold() -> None:
    assert records.kind(b"a") is records.Kind.ADDRS
    assert records.kind(b"k" + bytes(32)) is records.Kind.PLACEMENT
    assert records.kind(b"s" + bytes(32)) is records.Kind.SNAPSHOT
    for other in (b"", b"k", b"k" + bytes(31), b"z" + bytes(32), b"aa"):
        assert records.kind(other) is records.Kind.UNKNOWN


@pytest.mark.parametrize("value", [
    b"\xff",  # not CBOR
    cbor2.dumps({"k": 2}),  # not an array
    cbor2.dumps([2, 4, 1000]),  # too short
    cbor2.dumps([5, 4, 1000, []]),  # k > n
    cbor2.dumps([0, 4, 1000, []]),  # k = 0
    cbor2.dumps([2, 4, -1, []]),  # negative size
    cbor2.dumps([2, 4, 1000, [[4, PEER, b"\1" * 32, 1]]]),  # index beyond n
    cbor2.dumps([2, 4, 1000, [[0, PEER, b"\1" * 31, 1]]]),  # short root
    cbor2.dumps([2, 4, 1000, [[0, 7, b"\1" * 32, 1]]]),  # peer not text
    cbor2.dumps([2, 4, 1000, [], ""]),  # an empty owner
    cbor2.dumps([2, 4, 1000, [], PEER, "extra"]),
    cbor2.dumps([True, 4, 1000, []]),  # a bool is not an integer
])
def test_a_malformed_placement_is_refused(value: bytes) -> None:
    with pytest.raises(records.CorruptRecord):
        records.Placement.decode(b"k" + bytes(32), value)


def test_address_adverts_round_trip_and_refuse_other_shapes() -> None:
    advert = records.AddressAdvert(("/ip4/10.0.0.5/tcp/4001", "/ip6/::1/tcp/4001"))
    assert records.AddressAdvert.decode(advert.value()) == advert
    assert advert.value() == cbor2.dumps(list(advert.addrs), canonical=True)
    many = records.AddressAdvert(tuple(f"/ip4/10.0.0.{i}/tcp/1" for i in range(20)))
    assert len(records.AddressAdvert.decode(many.value()).addrs) == records.MAX_ADDRS
    for bad in (cbor2.dumps("x"), cbor2.dumps([1]), b"\x9f"):
        with pytest.raises(records.CorruptRecord):
            records.AddressAdvert.decode(bad)


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_valid_record_or_raise_corrupt_record(value: bytes) -> None:
    try:
        rec = records.Placement.decode(b"k" + bytes(32), value)
    except records.CorruptRecord:
        pass
    else:  # what decodes is a record that encodes and decodes to itself
        assert records.Placement.decode(rec.key, rec.value()) == rec and 1 <= rec.k <= rec.n
    try:
        advert = records.AddressAdvert.decode(value)
    except records.CorruptRecord:
        pass
    else:
        assert records.AddressAdvert.decode(advert.value()) == advert
