"""Trees and snapshot records: round trips and refusal of unsafe names."""

from __future__ import annotations

import cbor2
import pytest
from corestate.protocol.errors import CorruptObject
from corestate.protocol.objects import DIR, FILE, SYMLINK, Node, Snapshot, decode_tree, encode_tree
from hypothesis import given, settings
from hypothesis import strategies as st

names = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@given(st.lists(names, unique=True, max_size=10), st.integers(0, 2**63))
@settings(max_examples=50, deadline=None)
def test_tree_round_trip(ns: list[bytes], mtime: int) -> None:
    nodes = [Node(n, FILE, 0o644, 1, 2, mtime, size=3, content=[b"\1" * 32]) for n in ns]
    assert [n.to_obj() for n in decode_tree(encode_tree(nodes), "t")] == [
        n.to_obj() for n in sorted(nodes, key=lambda n: n.name)]


@pytest.mark.parametrize("name", [b"", b".", b"..", b"../../etc", b"a/b", b"/etc", b"x\0y", "str"])
def test_unsafe_names_are_refused(name: object) -> None:
    raw = cbor2.dumps({"v": 1, "entries": [
        {"n": name, "t": FILE, "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": 0, "c": []}]})
    with pytest.raises(CorruptObject, match="name"):
        decode_tree(raw, "t")


def test_duplicate_names_and_bad_shapes_are_refused() -> None:
    e = {"n": b"a", "t": DIR, "m": 0o755, "u": 0, "g": 0, "mt": 0, "sub": b"\0" * 32}
    with pytest.raises(CorruptObject):
        decode_tree(cbor2.dumps({"v": 1, "entries": [e, e]}), "t")
    with pytest.raises(CorruptObject):
        decode_tree(cbor2.dumps({"v": 1, "entries": [{**e, "sub": b"short"}]}), "t")
    with pytest.raises(CorruptObject):
        decode_tree(cbor2.dumps({"v": 1, "entries": [{**e, "t": SYMLINK, "tg": b""}]}), "t")
    with pytest.raises(CorruptObject):
        decode_tree(cbor2.dumps({"v": 2, "entries": []}), "t")


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_garbage_trees_raise_only_corrupt_object(junk: bytes) -> None:
    try:
        decode_tree(junk, "t")
    except CorruptObject:
        pass


def test_snapshot_round_trip() -> None:
    s = Snapshot(tree=b"\7" * 32, time_ns=5, hostname="h", paths=[b"/x"], peer_id="p",
                 files=3, torn=[b"/x/y"], errors=[(b"/x/z", "Permission denied")])
    assert Snapshot.decode(s.encode(), "s") == s


@given(st.lists(st.tuples(names, st.sampled_from(["f", "d", "l", "c"]), st.integers(0, 2**40),
                          st.dictionaries(st.binary(min_size=1, max_size=9), st.binary(max_size=5), max_size=4),
                          st.booleans()), unique_by=lambda t: t[0], max_size=6))
@settings(max_examples=100, deadline=None)
def test_tree_encoding_is_canonical_cbor(entries: list) -> None:
    nodes = []
    for name, t, num, xattrs, flag in entries:
        n = Node(name, t, 0o640, num, 7, num * 3, xattrs=xattrs or None, inode=num if flag else None,
                 sparse=flag, torn=not flag)
        if t == "f":
            n.size, n.content = num, [b"\2" * 32]
        elif t == "d":
            n.subtree = b"\3" * 32
        elif t == "l":
            n.target = b"x"
        else:
            n.rdev = num
        nodes.append(n)
    data = encode_tree(nodes)
    assert data == cbor2.dumps(cbor2.loads(data), canonical=True)


def _snapshot_obj() -> dict[str, object]:
    return cbor2.loads(Snapshot(tree=b"\7" * 32, time_ns=5, hostname="h", paths=[b"/x"],
                                peer_id="p", torn=[b"/x/t"], errors=[(b"/x/e", "why")]).encode())


@pytest.mark.parametrize("field,value", [
    ("time_ns", float("inf")),  # OverflowError escaped (int() of infinity)
    ("files", float("-inf")),
    ("paths", [10**12]),  # bytes(10**12): a terabyte of zeros asked for by 8 bytes
    ("torn", [1 << 40]),
    ("errors", [[1 << 40, "m"]]),
    ("parent", [1, 2]),
    ("parent", b"short"),
])
def test_a_malformed_snapshot_record_is_corrupt_not_a_crash(field: str, value: object) -> None:
    """Found by fuzzing (tests/fuzz, target snapshot): each of these escaped as another
    exception (OverflowError, MemoryError) or decoded into a record of the wrong types."""
    obj = _snapshot_obj()
    obj[field] = value
    with pytest.raises(CorruptObject, match="does not decode"):
        Snapshot.decode(cbor2.dumps(obj), "s")


def test_a_tree_whose_entries_share_one_content_list_is_refused_at_once() -> None:
    """Defence in depth after the catalog-sync fuzzing crash (protocol/cborguard.py): with
    shared references (CBOR tags 28/29) 40 KB of tree stood for 10,000 entries of 1,000
    chunk ids each, every one checked (seconds; a megabyte of it, hours)."""
    import time

    entry = Node(b"f", FILE, 0o644, 0, 0, 0, size=1, content=[b"\1" * 32] * 1000).to_obj()
    n = 10_000
    entries = (b"\x99" + n.to_bytes(2, "big") + b"\xd8\x1c" + cbor2.dumps(entry)
               + b"\xd8\x1d\x00" * (n - 1))
    spot = cbor2.dumps(["PLACEHOLDER"])
    raw = cbor2.dumps({"v": 1, "entries": ["PLACEHOLDER"]}).replace(spot, entries)
    assert len(cbor2.loads(raw)["entries"]) == n
    t0 = time.monotonic()
    with pytest.raises(CorruptObject, match="shared references"):
        decode_tree(raw, "t")
    assert time.monotonic() - t0 < 10.0  # a bound against a hang, generous for a loaded machine
