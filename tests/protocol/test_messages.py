"""The message codec: round trips, canonical bytes, and nothing but RemoteProtocolError on bad input.

Strategies and invalid values are derived from each message's declared field limits, so a
new message is covered by adding it to SHARE_MESSAGES or CONTROL_MESSAGES.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from corestate.protocol import control, messages
from corestate.protocol.errors import LocalProtocolError, RemoteProtocolError
from corestate.protocol.messages import (
    BoolSpec,
    BytesSpec,
    IntSpec,
    ListSpec,
    MapSpec,
    Message,
    NoneSpec,
    RecordSpec,
    Spec,
    TextSpec,
    TupleSpec,
    UnionSpec,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ALL = [*messages.SHARE_MESSAGES, *control.CONTROL_MESSAGES[:-2]]  # Ok/Error once
CODEC_OF = {c: messages.SHARE_CODEC for c in messages.SHARE_MESSAGES} | {
    c: control.CONTROL_CODEC for c in control.CONTROL_MESSAGES[:-2]
}


def strategy(spec: Spec) -> st.SearchStrategy[Any]:
    match spec:
        case IntSpec(lo, hi):
            return st.integers(lo, hi)
        case BoolSpec():
            return st.booleans()
        case BytesSpec(lo, hi):
            return st.binary(min_size=lo, max_size=max(lo, min(hi, 64)))
        case TextSpec(n):
            return st.text(max_size=min(n, 40)).filter(lambda s: len(s.encode()) <= n)
        case ListSpec(item, n):
            return st.lists(strategy(item), max_size=min(n, 6)).map(tuple)
        case TupleSpec(items):
            return st.tuples(*(strategy(i) for i in items))
        case MapSpec(k, v, n):
            return st.dictionaries(strategy(k), strategy(v), max_size=min(n, 6))
        case UnionSpec(options):
            return st.one_of(*(strategy(o) for o in options))
        case NoneSpec():
            return st.none()
        case RecordSpec(cls):
            return st.builds(cls, **{name: strategy(s) for name, s in cls.SPECS.items()})
    raise AssertionError(spec)


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, **{name: strategy(s) for name, s in cls.SPECS.items()})


any_message = st.sampled_from(ALL).flatmap(message_strategy)


def example(spec: Spec) -> Any:
    """The simplest valid value."""
    match spec:
        case IntSpec(lo, hi):
            return max(lo, min(hi, 0))
        case BoolSpec():
            return False
        case BytesSpec(lo, _):
            return b"\0" * lo
        case TextSpec(_):
            return ""
        case ListSpec(_, _):
            return ()
        case TupleSpec(items):
            return tuple(example(i) for i in items)
        case MapSpec(_, _, _):
            return {}
        case UnionSpec(options):
            return example(options[0])
        case NoneSpec():
            return None
        case RecordSpec(cls):
            return cls(**{name: example(s) for name, s in cls.SPECS.items()})
    raise AssertionError(spec)


def _accepts(spec: Spec, v: Any) -> bool:
    try:
        spec.check(v)
    except Exception:
        return False
    return True


def invalid(spec: Spec) -> list[Any]:
    """Values every decoder must refuse for ``spec`` (each just past a limit, or of a wrong type)."""
    match spec:
        case IntSpec(lo, hi):
            return [lo - 1, hi + 1, True, False, float(max(lo, 0)), str(lo), None, b"\0"]
        case BoolSpec():
            return [0, 1, None, "true", 1.0]
        case BytesSpec(lo, hi):
            out: list[Any] = [b"\0" * (hi + 1), "x" * lo, 0, None, [], bytes(range(lo))[:lo].hex()]
            if lo:
                out.append(b"\0" * (lo - 1))
            return out
        case TextSpec(n):
            # Limits count UTF-8 bytes: n // 2 + 1 two-byte characters are too many.
            return ["x" * (n + 1), "é" * (n // 2 + 1), b"x", 0, None, ["x"]]
        case ListSpec(item, n):
            bad_items = [(v,) for v in invalid(item)[:3]]
            return [(example(item),) * (n + 1), "x", {}, 0, *bad_items]
        case TupleSpec(items):
            good = [example(i) for i in items]
            out = [tuple(good[:-1]), (*good, good[0]), "x", 0]
            for pos, i in enumerate(items):
                for bad in invalid(i)[:3]:
                    out.append(tuple(bad if j == pos else g for j, g in enumerate(good)))
            return out
        case MapSpec(k, v, n):
            key_n = k.max_len if isinstance(k, TextSpec) else 10
            many = {f"{i:0{min(key_n, 8)}}"[-key_n:]: example(v) for i in range(n + 1)}
            return [many, {"k": None}, {"k": 1.5}, {"k": b"x"}, {"k": "x" * 5000}, {1: 1}, [], 0]
        case UnionSpec(options):
            # What no option takes (None is fine for ``X | None``).
            return [v for v in [None, 1.5, b"x", 1 << 64, [], "x" * 100_000]
                    if not any(_accepts(o, v) for o in options)]
        case NoneSpec():
            return [0, False, "", b"", []]
        case RecordSpec(cls):
            good = {name: example(s) for name, s in cls.SPECS.items()}
            first = next(iter(good))
            out = ["x", 0, [], {}, {**good, "extra": 0}, {k: v for k, v in good.items() if k != first}]
            for bad in invalid(cls.SPECS[first])[:3]:
                out.append({**good, first: bad})
            return out
    raise AssertionError(spec)


def _raw(v: Any) -> Any:
    """Records as the plain maps they are on the wire."""
    if isinstance(v, messages.Record):
        return {n: _raw(getattr(v, n)) for n in v.SPECS}
    if isinstance(v, tuple):
        return tuple(_raw(x) for x in v)
    return v


def raw_map(msg: Message) -> dict[str, Any]:
    return {"t": msg.TYPE, "v": 1, **{n: _raw(getattr(msg, n)) for n in msg.SPECS}}


def minimal(cls: type[Message]) -> Message:
    return cls(**{name: example(s) for name, s in cls.SPECS.items()})


# ---------------------------------------------------------------------------------------
# Round trips and canonical form.


@given(any_message)
def test_round_trip_every_message(msg: Message) -> None:
    data = messages.encode(msg)
    back = CODEC_OF[type(msg)].decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert messages.encode(back) == data
    # Our own reader and cbor2 agree on the canonical bytes.
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.TYPE)
def test_each_message_type_round_trips(cls: type[Message]) -> None:
    @settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
    @given(message_strategy(cls))
    def check(msg: Message) -> None:
        assert CODEC_OF[cls].decode(messages.encode(msg)) == msg

    check()


def test_golden_encodings() -> None:
    put = messages.PutShare(pack=bytes(32), index=7, size=1000, digest=b"\xff" * 32)
    # Pinned by hand: the keys in canonical order (shorter first): t, v, pack, size, index,
    # owner ("" = the sender, still encoded), digest.
    assert messages.encode(put) == bytes.fromhex(
        "a7"
        "6174" "63707574"
        "6176" "01"
        "647061636b" "5820" + "00" * 32 +
        "6473697a65" "1903e8"
        "65696e646578" "07"
        "656f776e6572" "60"
        "66646967657374" "5820" + "ff" * 32
    )
    assert messages.encode(messages.Ok()) == bytes.fromhex("a2617462" "6f6b" "617601")


def test_lists_are_normalised_to_tuples() -> None:
    m = messages.HasShares(items=[[bytes(32), 1]])
    assert m.items == ((bytes(32), 1),)
    assert messages.decode(messages.encode(m)) == m


# ---------------------------------------------------------------------------------------
# Field limits: refused when building (LocalProtocolError) and when decoding (Remote...).


CASES = [
    (cls, name, bad)
    for cls in ALL
    for name, spec in cls.SPECS.items()
    for bad in invalid(spec)
]


@pytest.mark.parametrize(
    ("cls", "name", "bad"), CASES, ids=lambda x: getattr(x, "TYPE", None)
)
def test_out_of_limit_fields_are_refused(cls: type[Message], name: str, bad: Any) -> None:
    good = minimal(cls)
    with pytest.raises(LocalProtocolError):
        cls(**{**{n: getattr(good, n) for n in cls.SPECS}, name: bad})
    data = cbor2.dumps({**raw_map(good), name: _raw(bad)}, canonical=True)
    with pytest.raises(RemoteProtocolError):
        CODEC_OF[cls].decode(data)


def test_limits_at_the_boundary_are_accepted() -> None:
    ok = [
        messages.HasShares(items=((bytes(32), 255),) * 4096),
        messages.DeleteShare(
            pack=bytes(32), index=0, holder="é" * 64, nonce=bytes(16), signature=bytes(64)
        ),
        messages.Error(code="c" * 64, message="m" * 1024, retryable=True),
        messages.GetShare(pack=bytes(32), index=255, offset=(1 << 63) - 1, length=-1),
        messages.ShareData(size=1 << 30, digest=bytes(32)),
        messages.HasReply(sizes=(-1, 0, (1 << 63) - 1)),
    ]
    for m in ok:
        assert messages.decode(messages.encode(m)) == m


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.TYPE)
def test_envelope_mistakes_are_refused(cls: type[Message]) -> None:
    good = raw_map(minimal(cls))
    codec = CODEC_OF[cls]
    bad_maps: list[Any] = [
        {**good, "v": 2},
        {**good, "v": 0},
        {**good, "v": True},
        {**good, "v": "1"},
        {**good, "t": cls.TYPE.upper()},
        {**good, "t": 1},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "t"},
        {k: v for k, v in good.items() if k != "v"},
        [good],
        list(good.items()),
        0,
        "ok",
    ]
    if cls.SPECS:
        first = next(iter(cls.SPECS))
        bad_maps.append({k: v for k, v in good.items() if k != first})
    for bad in bad_maps:
        with pytest.raises(RemoteProtocolError):
            codec.decode(cbor2.dumps(bad, canonical=True))


def test_each_codec_knows_only_its_own_messages() -> None:
    put = messages.encode(messages.PutShare(pack=bytes(32), index=0, size=0, digest=bytes(32)))
    run = messages.encode(control.LsCall(snapshot="latest", path=b"", recursive=False))
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        control.decode(put)
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        messages.decode(run)
    for shared in (messages.Ok(), messages.Error(code="x", message="", retryable=False)):
        assert control.decode(messages.encode(shared)) == shared
    types = [c.TYPE for c in (*messages.SHARE_MESSAGES, *control.CONTROL_MESSAGES)]
    assert len(set(types)) == len(messages.SHARE_MESSAGES) + len(control.CONTROL_MESSAGES) - 2


# ---------------------------------------------------------------------------------------
# Non-canonical and exotic CBOR: always refused.

OK = bytes.fromhex("a2617462" "6f6b" "617601")  # {"t": "ok", "v": 1}


@pytest.mark.parametrize(
    "hexdata",
    [
        "a2617462" "6f6b" "61761801",  # non-minimal integer
        "a2617462" "6f6b" "6176190001",  # non-minimal integer, 2 bytes
        "a2617478026f6b" "617601",  # non-minimal text length
        "b800" "",  # non-minimal map length (empty map)
        "a2617601" "6174626f6b",  # keys out of order
        "a3617462" "6f6b" "6174626f6b" "617601",  # repeated key
        "bf617462" "6f6b" "617601ff",  # indefinite-length map
        "a261747f626f6bff" "617601",  # indefinite-length text
        "a2617462" "6f6b" "6176c24101",  # tag 2 (bignum)
        "d9d9f7" "a2617462" "6f6b" "617601",  # self-describe tag
        "a2617462" "6f6b" "6176f93c00",  # half float 1.0
        "a2617462" "6f6b" "6176fb3ff0000000000000",  # double 1.0
        "a2617462" "6f6b" "6176f6",  # null
        "a2617462" "6f6b" "6176f7",  # undefined
        "a2617462" "6f6b" "6176f820",  # simple value 32
        "a2617462" "6f6b" "6176fc",  # reserved
        "a2617462" "ff6b" "617601",  # invalid UTF-8
        "a2617462" "eda0" "617601",  # encoded surrogate
        "a2017462" "6f6b" "617601",  # integer key
        "a2617462" "6f6b" "617601" "00",  # trailing byte
        "a2617462" "6f6b" "6176",  # truncated
        "",  # empty
        "5bffffffffffffffff",  # absurd byte-string length
        "9bffffffffffffffff",  # absurd array length
        "bbffffffffffffffff",  # absurd map length
        "81" * 100_000 + "01",  # deep nesting
        "a1" + "6161a1" * 10_000 + "01",  # deep map nesting
    ],
)
def test_non_canonical_or_exotic_cbor_is_refused(hexdata: str) -> None:
    with pytest.raises(RemoteProtocolError):
        messages.decode(bytes.fromhex(hexdata))
    assert messages.decode(OK) == messages.Ok()


def test_unsorted_keys_from_a_plain_encoder_are_refused() -> None:
    put = messages.PutShare(pack=bytes(32), index=0, size=0, digest=bytes(32))
    plain = cbor2.dumps(raw_map(put))  # insertion order: t, v, pack, index, size, digest
    assert plain != messages.encode(put)
    with pytest.raises(RemoteProtocolError, match="canonical order"):
        messages.decode(plain)


def test_non_bytes_payload_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        messages.decode(bytearray(OK))


# ---------------------------------------------------------------------------------------
# Fuzzing: random bytes and mutations of valid encodings.


def check_strict(codec: messages.Codec, data: bytes) -> None:
    try:
        msg = codec.decode(data)
    except RemoteProtocolError:
        return
    assert messages.encode(msg) == data  # only canonical encodings are ever accepted


@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check_strict(messages.SHARE_CODEC, data)
    check_strict(control.CONTROL_CODEC, data)


@given(st.binary(max_size=60))
def test_random_bytes_behind_a_valid_map_head(data: bytes) -> None:
    for head in (b"\xa2\x61t", b"\xa3\x61t\x63put\x61v\x01", b"\xa4\x61t\x64data\x61v\x01"):
        check_strict(messages.SHARE_CODEC, head + data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[type[Message], bytes]:
    msg = draw(any_message)
    data = bytearray(messages.encode(msg))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=4))
    return type(msg), bytes(data)


@settings(max_examples=500)
@given(mutated())
def test_mutated_valid_messages(case: tuple[type[Message], bytes]) -> None:
    cls, data = case
    check_strict(CODEC_OF[cls], data)


# ---------------------------------------------------------------------------------------
# Delete signatures.


def test_delete_signing_bytes_golden() -> None:
    got = messages.delete_signing_bytes("12D3KooW", b"\x01" * 32, 3, b"\x02" * 16)
    assert got == (
        b"CoreState 2026-11-25 delete share\0"
        + bytes.fromhex("84" "6831324433 4b6f6f57".replace(" ", ""))
        + bytes.fromhex("5820" + "01" * 32 + "03" + "50" + "02" * 16)
    )
    msg = messages.DeleteShare(
        pack=b"\x01" * 32, index=3, holder="12D3KooW", nonce=b"\x02" * 16, signature=bytes(64)
    )
    assert msg.signing_bytes() == got
    # Anything that differs gives different bytes.
    assert messages.delete_signing_bytes("12D3KooX", b"\x01" * 32, 3, b"\x02" * 16) != got


@pytest.mark.parametrize(
    "args",
    [
        ("x" * 129, bytes(32), 0, bytes(16)),
        ("h", bytes(31), 0, bytes(16)),
        ("h", bytes(32), 256, bytes(16)),
        ("h", bytes(32), True, bytes(16)),
        ("h", bytes(32), 0, bytes(15)),
    ],
)
def test_delete_signing_bytes_refuses_bad_fields(args: tuple[Any, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        messages.delete_signing_bytes(*args)


def test_largest_messages_fit_their_frame_limits() -> None:
    proof = messages.AuditReply(proof=b"\0" * messages.MAX_PROOF)
    assert len(messages.encode(proof)) <= messages.AUDIT_MAX_FRAME
    has = messages.HasShares(items=((b"\xff" * 32, 255),) * messages.MAX_HAS_ITEMS)
    assert len(messages.encode(has)) <= 1 << 20
    reply = messages.HasReply(sizes=((1 << 63) - 1,) * messages.MAX_HAS_ITEMS)
    assert len(messages.encode(reply)) <= 1 << 20
