"""Messages of the share service and their strict canonical CBOR codec (SPEC.md, "Wire protocol").

A message is a frozen, slotted dataclass with a class-level ``TYPE``. Its encoding is the
canonical CBOR map ``{"t": TYPE, "v": 1, <field>: <value>, ...}``. Field limits are
declared once, in the annotations (``Annotated[bytes, Len(32)]``, ``Annotated[int,
Range(0, 255)]``, ...), and one generic codec checks every message against them.

Invariants:

- building a message with a value outside its declared limits raises
  :class:`LocalProtocolError`, so nothing invalid is ever sent;
- :meth:`Codec.decode` accepts exactly the canonical encodings of valid messages and
  raises :class:`RemoteProtocolError` for anything else, whatever the input: it parses
  CBOR itself (a small subset: unsigned and negative integers, byte and text strings,
  arrays, maps with text keys, ``true``/``false``/``null``) and refuses non-minimal heads,
  indefinite lengths, map keys out of canonical order or repeated, tags, floats, invalid
  UTF-8, nesting deeper than the codec's limit (4 levels unless it says otherwise) and
  trailing bytes. ``null`` passes only where a field's type admits ``None``. Hence
  ``encode(decode(b)) == b`` for every accepted ``b``.
- a field may be a *record* (a ``@record`` dataclass: a message without ``t`` and ``v``),
  encoded as the map of its fields and checked by the same limits, so results with
  structure (a list of peers, each with its fields) stay typed end to end.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import cbor2
from corestate.protocol.errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
SHARE_PROTOCOL = "/corestate/share/1"

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
MAX_SHARE_SIZE = 1 << 30
MAX_PROOF = (16 << 20) + (4 << 10)
MAX_HAS_ITEMS = 4096
# A frame large enough for the largest AuditReply; every other share message fits in the
# default 1 MiB. Only the auditor's side of an audit stream needs it.
AUDIT_MAX_FRAME = MAX_PROOF + 1024
MAX_DEPTH = 4  # nesting of CBOR arrays/maps, the top-level map counted as 1

DELETE_SIGNING_PREFIX = b"CoreState 2026-11-25 delete share\0"


# ---------------------------------------------------------------------------------------
# Declarative limits, read from the field annotations.


@dataclass(frozen=True, slots=True)
class Len:
    """Exact length of a byte string."""

    n: int


@dataclass(frozen=True, slots=True)
class MaxLen:
    """Longest byte string, or longest text string counted in UTF-8 bytes."""

    n: int


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds of an integer."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class MaxItems:
    """Most entries of an array or map."""

    n: int


class _Invalid(Exception):
    """A value outside its spec; turned into Local- or RemoteProtocolError by the caller."""


# Compiled checkers. ``check`` returns the value, normalised (lists become tuples), or
# raises _Invalid. Types are checked exactly: a bool is not an int, a bytearray not bytes.


@dataclass(frozen=True, slots=True)
class IntSpec:
    lo: int
    hi: int

    def check(self, v: object) -> object:
        if type(v) is not int:
            raise _Invalid(f"expected an integer, got {type(v).__name__}")
        if not self.lo <= v <= self.hi:
            raise _Invalid(f"{v} is outside {self.lo}..{self.hi}")
        return v


@dataclass(frozen=True, slots=True)
class BoolSpec:
    def check(self, v: object) -> object:
        if type(v) is not bool:
            raise _Invalid(f"expected a boolean, got {type(v).__name__}")
        return v


@dataclass(frozen=True, slots=True)
class BytesSpec:
    min_len: int
    max_len: int

    def check(self, v: object) -> object:
        if type(v) is not bytes:
            raise _Invalid(f"expected bytes, got {type(v).__name__}")
        if not self.min_len <= len(v) <= self.max_len:
            want = (
                f"{self.max_len}"
                if self.min_len == self.max_len
                else f"{self.min_len}..{self.max_len}"
            )
            raise _Invalid(f"{len(v)} bytes, expected {want}")
        return v


@dataclass(frozen=True, slots=True)
class TextSpec:
    max_len: int  # UTF-8 bytes

    def check(self, v: object) -> object:
        if type(v) is not str:
            raise _Invalid(f"expected text, got {type(v).__name__}")
        if v.isascii():
            n = len(v)
        else:
            try:
                n = len(v.encode("utf-8"))
            except UnicodeEncodeError:  # lone surrogates have no UTF-8 form
                raise _Invalid("text is not valid Unicode")
        if n > self.max_len:
            raise _Invalid(f"text of {n} UTF-8 bytes, at most {self.max_len}")
        return v


@dataclass(frozen=True, slots=True)
class ListSpec:
    item: Spec
    max_items: int

    def check(self, v: object) -> object:
        if type(v) is not tuple and type(v) is not list:
            raise _Invalid(f"expected an array, got {type(v).__name__}")
        if len(v) > self.max_items:
            raise _Invalid(f"{len(v)} items, at most {self.max_items}")
        check = self.item.check
        return tuple([check(x) for x in v])


@dataclass(frozen=True, slots=True)
class TupleSpec:
    items: tuple[Spec, ...]

    def check(self, v: object) -> object:
        if type(v) is not tuple and type(v) is not list:
            raise _Invalid(f"expected an array, got {type(v).__name__}")
        if len(v) != len(self.items):
            raise _Invalid(f"{len(v)} items, expected {len(self.items)}")
        return tuple([s.check(x) for s, x in zip(self.items, v, strict=True)])


@dataclass(frozen=True, slots=True)
class MapSpec:
    key: Spec
    value: Spec
    max_items: int

    def check(self, v: object) -> object:
        if type(v) is not dict:
            raise _Invalid(f"expected a map, got {type(v).__name__}")
        if len(v) > self.max_items:
            raise _Invalid(f"{len(v)} entries, at most {self.max_items}")
        return {self.key.check(k): self.value.check(x) for k, x in v.items()}


@dataclass(frozen=True, slots=True)
class UnionSpec:
    options: tuple[Spec, ...]

    def check(self, v: object) -> object:
        errors = []
        for s in self.options:
            try:
                return s.check(v)
            except _Invalid as e:
                errors.append(str(e))
        raise _Invalid(" / ".join(errors))


@dataclass(frozen=True, slots=True)
class NoneSpec:
    def check(self, v: object) -> object:
        if v is not None:
            raise _Invalid(f"expected null, got {type(v).__name__}")
        return v


@dataclass(frozen=True, slots=True)
class RecordSpec:
    cls: type[Record]

    def check(self, v: object) -> object:
        if type(v) is self.cls:
            return v  # built, so already checked
        if type(v) is not dict:
            raise _Invalid(f"expected a {self.cls.__name__} map, got {type(v).__name__}")
        specs = self.cls.SPECS
        if v.keys() != specs.keys():
            missing = sorted(specs.keys() - v.keys())
            extra = sorted(str(k) for k in v.keys() - specs.keys())
            raise _Invalid(f"{self.cls.__name__}: missing fields {missing}, unknown fields {extra}")
        try:
            return typing.cast(Any, self.cls)(**v)
        except LocalProtocolError as e:
            raise _Invalid(str(e)) from None


Spec = (IntSpec | BoolSpec | BytesSpec | TextSpec | ListSpec | TupleSpec | MapSpec | UnionSpec
        | NoneSpec | RecordSpec)


def compile_spec(tp: Any) -> Spec:
    """The checker for one annotation; limits are mandatory on every sized type."""
    meta: tuple[Any, ...] = ()
    if get_origin(tp) is Annotated:
        tp, *rest = get_args(tp)
        meta = tuple(rest)

    def one(kind: type) -> Any:
        found = [m for m in meta if isinstance(m, kind)]
        return found[0] if found else None

    origin = get_origin(tp)
    if tp is type(None):
        return NoneSpec()
    if isinstance(tp, type) and issubclass(tp, Record) and not issubclass(tp, Message):
        if "SPECS" not in tp.__dict__:
            raise TypeError(f"{tp.__name__} must be decorated with @record")
        return RecordSpec(tp)
    if tp is bool:
        return BoolSpec()
    if tp is int:
        r = one(Range)
        return IntSpec(r.lo, r.hi) if r else IntSpec(INT64_MIN, INT64_MAX)
    if tp is bytes:
        if (exact := one(Len)) is not None:
            return BytesSpec(exact.n, exact.n)
        if (most := one(MaxLen)) is not None:
            return BytesSpec(0, most.n)
        raise TypeError("bytes fields need Len(n) or MaxLen(n)")
    if tp is str:
        if (most := one(MaxLen)) is not None:
            return TextSpec(most.n)
        raise TypeError("str fields need MaxLen(n)")
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if (items := one(MaxItems)) is None:
                raise TypeError("tuple[X, ...] fields need MaxItems(n)")
            return ListSpec(compile_spec(args[0]), items.n)
        return TupleSpec(tuple(compile_spec(a) for a in args))
    if origin is dict:
        if (items := one(MaxItems)) is None:
            raise TypeError("dict fields need MaxItems(n)")
        k, v = get_args(tp)
        return MapSpec(compile_spec(k), compile_spec(v), items.n)
    if origin is typing.Union or origin is types.UnionType:
        return UnionSpec(tuple(compile_spec(a) for a in get_args(tp)))
    raise TypeError(f"no wire encoding for {tp!r}")


# Shared field types.
Bytes32 = Annotated[bytes, Len(32)]
ShareIndex = Annotated[int, Range(0, 255)]
U63 = Annotated[int, Range(0, INT64_MAX)]
ShareSize = Annotated[int, Range(0, MAX_SHARE_SIZE)]


# ---------------------------------------------------------------------------------------
# Messages.


class Record:
    """Base of records and messages: subclasses are ``@record`` (or ``@message``) above
    ``@dataclass(frozen=True, slots=True)``; building one checks every field."""

    __slots__ = ()
    SPECS: ClassVar[dict[str, Spec]]
    # The ``v`` a message carries; a protocol that changes its messages' format bumps it
    # (and its protocol id's major) for its own messages only.
    VERSION: ClassVar[int] = VERSION

    def __post_init__(self) -> None:
        for name, spec in self.SPECS.items():
            v = getattr(self, name)
            try:
                nv = spec.check(v)
            except _Invalid as e:
                raise LocalProtocolError(f"{self._label()}.{name}: {e}") from None
            if nv is not v:
                object.__setattr__(self, name, nv)

    def _label(self) -> str:
        return type(self).__name__


class Message(Record):
    """Base of every message: a record with a ``TYPE``, sent as ``{"t", "v", fields...}``."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def _label(self) -> str:
        return self.TYPE


M = TypeVar("M", bound=type[Message])
R = TypeVar("R", bound=type[Record])


def _compile(cls: R) -> R:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a frozen, slotted dataclass")
    hints = get_type_hints(cls, include_extras=True)
    specs = {}
    for f in dataclasses.fields(typing.cast(Any, cls)):
        if f.name in ("t", "v"):
            raise TypeError(f"{cls.__name__}: field name {f.name!r} is reserved")
        specs[f.name] = compile_spec(hints[f.name])
    cls.SPECS = specs
    return cls


def message(cls: M) -> M:
    """Class decorator, above ``@dataclass(frozen=True, slots=True)``: compile the limits."""
    return _compile(cls)


def record(cls: R) -> R:
    """Class decorator for a record: a typed map that message fields may hold."""
    if issubclass(cls, Message):
        raise TypeError(f"{cls.__name__} is a message: use @message")
    return _compile(cls)


def _record_map(encoder: Any, value: object) -> None:
    if not isinstance(value, Record) or isinstance(value, Message):
        raise cbor2.CBOREncodeTypeError(f"no wire encoding for {type(value).__name__}")
    encoder.encode({name: getattr(value, name) for name in value.SPECS})


def encode(msg: Message) -> bytes:
    """The canonical CBOR payload of ``msg`` (fields were checked when it was built)."""
    obj: dict[str, object] = {"t": msg.TYPE, "v": msg.VERSION}
    for name in msg.SPECS:
        obj[name] = getattr(msg, name)
    return cbor2.dumps(obj, canonical=True, default=_record_map)


class Codec:
    """Decodes the messages of one protocol (its own set of ``TYPE``s)."""

    def __init__(self, classes: Iterable[type[Message]], *, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth
        self.by_type: dict[str, type[Message]] = {}
        for c in classes:
            if c.TYPE in self.by_type:
                raise ValueError(f"duplicate message type {c.TYPE!r}")
            self.by_type[c.TYPE] = c

    def decode(self, payload: bytes) -> Message:
        """The message in ``payload``; anything else raises RemoteProtocolError."""
        try:
            obj = _Reader(payload, self.max_depth).read_all()
            if type(obj) is not dict:
                raise _Invalid("a message is a CBOR map")
            t = obj.pop("t", None)
            if type(t) is not str or (cls := self.by_type.get(t)) is None:
                raise _Invalid(f"unknown message type {t!r}")
            v = obj.pop("v", None)
            if type(v) is not int or v != cls.VERSION:
                raise _Invalid(f"{t}: unsupported version {v!r}")
            if obj.keys() != cls.SPECS.keys():
                missing = sorted(cls.SPECS.keys() - obj.keys())
                extra = sorted(obj.keys() - cls.SPECS.keys())
                raise _Invalid(f"{t}: missing fields {missing}, unknown fields {extra}")
        except _Invalid as e:
            raise RemoteProtocolError(str(e)) from None
        try:
            return typing.cast(Any, cls)(**obj)
        except LocalProtocolError as e:
            raise RemoteProtocolError(str(e)) from None


class _Reader:
    """Parses the canonical CBOR subset described in the module docstring."""

    __slots__ = ("data", "max_depth", "pos")

    # Smallest argument that needs 1, 2, 4, 8 following bytes (additional info 24..27).
    _MIN_ARG: ClassVar[tuple[int, ...]] = (24, 1 << 8, 1 << 16, 1 << 32)

    def __init__(self, data: bytes, max_depth: int = MAX_DEPTH) -> None:
        if not isinstance(data, bytes):
            raise _Invalid(f"payload must be bytes, got {type(data).__name__}")
        self.data = data
        self.max_depth = max_depth
        self.pos = 0

    def read_all(self) -> object:
        obj = self._item(1)
        if self.pos != len(self.data):
            raise _Invalid(f"{len(self.data) - self.pos} trailing bytes")
        return obj

    def _head(self) -> tuple[int, int]:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _Invalid("truncated CBOR")
        ib = data[pos]
        major, info = ib >> 5, ib & 0x1F
        if major == 6:
            raise _Invalid("CBOR tags are not allowed")
        if major == 7:
            raise _Invalid("only true, false and null are allowed among CBOR simple values and floats")
        if info < 24:
            self.pos = pos + 1
            return major, info
        if info > 27:
            raise _Invalid("indefinite lengths are not allowed")
        n = 1 << (info - 24)
        end = pos + 1 + n
        if end > len(data):
            raise _Invalid("truncated CBOR")
        arg = int.from_bytes(data[pos + 1 : end], "big")
        if arg < self._MIN_ARG[info - 24]:
            raise _Invalid("non-minimal CBOR integer or length")
        self.pos = end
        return major, arg

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Invalid("truncated CBOR")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def _text(self, n: int) -> str:
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("text is not valid UTF-8")

    def _item(self, depth: int) -> object:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] in (0xF4, 0xF5, 0xF6):
            self.pos = pos + 1
            return None if data[pos] == 0xF6 else data[pos] == 0xF5
        major, arg = self._head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self._take(arg)
        if major == 3:
            return self._text(arg)
        if depth >= self.max_depth:
            raise _Invalid("CBOR nested too deeply")
        # Every item takes at least one byte: refuse impossible counts before looping.
        left = len(data) - self.pos
        if major == 4:
            if arg > left:
                raise _Invalid("truncated CBOR")
            return tuple([self._item(depth + 1) for _ in range(arg)])
        # major == 5: a map with text keys in canonical order, none repeated.
        if arg * 2 > left:
            raise _Invalid("truncated CBOR")
        out: dict[str, object] = {}
        prev = b""
        for _ in range(arg):
            start = self.pos
            if start >= len(data) or data[start] >> 5 != 3:
                raise _Invalid("map keys must be text")
            _, klen = self._head()
            key = self._text(klen)
            raw = data[start : self.pos]
            if prev and (len(raw), raw) <= (len(prev), prev):
                raise _Invalid("map keys out of canonical order or repeated")
            prev = raw
            out[key] = self._item(depth + 1)
        return out


# ---------------------------------------------------------------------------------------
# The share service, /corestate/share/1: one request per stream, opened by the requester.


@message
@dataclass(frozen=True, slots=True)
class PutShare(Message):
    """Store share ``index`` of ``pack``; exactly ``size`` raw bytes follow. Reply Ok/Error."""

    TYPE: ClassVar[str] = "put"
    pack: Bytes32
    index: ShareIndex
    size: ShareSize
    digest: Bytes32  # BLAKE3 of the share bytes
    # The PeerID to file the share under; "" = the sender. A member repairing an absent
    # owner's pack puts the rebuilt shares under the owner (accepted from members of the
    # holder's group only, for a member owner), so the owner finds them as its own.
    owner: Annotated[str, MaxLen(128)] = ""


@message
@dataclass(frozen=True, slots=True)
class GetShare(Message):
    """Read a share (``length`` -1 = to the end). Reply ShareData + raw bytes, or Error."""

    TYPE: ClassVar[str] = "get"
    pack: Bytes32
    index: ShareIndex
    offset: U63
    length: Annotated[int, Range(-1, INT64_MAX)]
    # The PeerID the share was stored for; "" = the requester. Another owner's shares are
    # served to members of the holder's group only (repair; an owner that moved to a new
    # identity generation). Shares are ciphertext: this reveals nothing readable.
    owner: Annotated[str, MaxLen(128)] = ""


@message
@dataclass(frozen=True, slots=True)
class HasShares(Message):
    """Which of these (pack, index) shares are held? Reply HasReply."""

    TYPE: ClassVar[str] = "has"
    items: Annotated[tuple[tuple[Bytes32, ShareIndex], ...], MaxItems(MAX_HAS_ITEMS)]


@message
@dataclass(frozen=True, slots=True)
class HasReply(Message):
    """Size of each asked share, in the order asked; -1 = not held."""

    TYPE: ClassVar[str] = "has-reply"
    sizes: Annotated[tuple[Annotated[int, Range(-1, INT64_MAX)], ...], MaxItems(MAX_HAS_ITEMS)]


@message
@dataclass(frozen=True, slots=True)
class DeleteShare(Message):
    """Drop a share; signed by the owner over :func:`delete_signing_bytes`. Reply Ok/Error."""

    TYPE: ClassVar[str] = "del"
    pack: Bytes32
    index: ShareIndex
    holder: Annotated[str, MaxLen(128)]  # PeerID (base58) of the peer asked to delete
    nonce: Annotated[bytes, Len(16)]
    signature: Annotated[bytes, Len(64)]  # Ed25519

    def signing_bytes(self) -> bytes:
        return delete_signing_bytes(self.holder, self.pack, self.index, self.nonce)


@message
@dataclass(frozen=True, slots=True)
class AuditShare(Message):
    """Prove possession of ``block`` of a share. Reply AuditReply or Error."""

    TYPE: ClassVar[str] = "audit"
    pack: Bytes32
    index: ShareIndex
    block: U63


@message
@dataclass(frozen=True, slots=True)
class AuditReply(Message):
    """``proof`` is ``erasure.share.Proof.to_bytes()``."""

    TYPE: ClassVar[str] = "audit-reply"
    proof: Annotated[bytes, MaxLen(MAX_PROOF)]


@message
@dataclass(frozen=True, slots=True)
class Capacity(Message):
    """How much may the requester still store here? Reply CapacityReply."""

    TYPE: ClassVar[str] = "cap"


@message
@dataclass(frozen=True, slots=True)
class CapacityReply(Message):
    TYPE: ClassVar[str] = "cap-reply"
    free: U63  # bytes free on the holder's disk
    quota_left: U63  # bytes the requester may still store


@message
@dataclass(frozen=True, slots=True)
class Ok(Message):
    TYPE: ClassVar[str] = "ok"


@message
@dataclass(frozen=True, slots=True)
class Error(Message):
    """A refused request. ``code`` is machine-readable (e.g. ``quota``, ``not-found``)."""

    TYPE: ClassVar[str] = "err"
    code: Annotated[str, MaxLen(64)]
    message: Annotated[str, MaxLen(1024)]
    retryable: bool


@message
@dataclass(frozen=True, slots=True)
class ShareData(Message):
    """Header of a GetShare reply: exactly ``size`` raw bytes hashing to ``digest`` follow."""

    TYPE: ClassVar[str] = "data"
    size: ShareSize
    digest: Bytes32


SHARE_MESSAGES: tuple[type[Message], ...] = (
    PutShare,
    GetShare,
    HasShares,
    HasReply,
    DeleteShare,
    AuditShare,
    AuditReply,
    Capacity,
    CapacityReply,
    Ok,
    Error,
    ShareData,
)
SHARE_CODEC = Codec(SHARE_MESSAGES)
REGISTRY = SHARE_CODEC.by_type  # TYPE -> class, share service


def decode(payload: bytes) -> Message:
    """Decode one share-service message (see :meth:`Codec.decode`)."""
    return SHARE_CODEC.decode(payload)


_SIGNED_FIELDS = (
    ("holder", DeleteShare.SPECS["holder"]),
    ("pack", DeleteShare.SPECS["pack"]),
    ("index", DeleteShare.SPECS["index"]),
    ("nonce", DeleteShare.SPECS["nonce"]),
)


def delete_signing_bytes(holder: str, pack: bytes, index: int, nonce: bytes) -> bytes:
    """What the owner signs to delete a share: a fixed prefix, then CBOR [holder, pack, index, nonce].

    Naming the holder binds the signature to one peer; the nonce (recorded by the holder)
    stops a replay.
    """
    values = (holder, pack, index, nonce)
    for (name, spec), v in zip(_SIGNED_FIELDS, values, strict=True):
        try:
            spec.check(v)
        except _Invalid as e:
            raise LocalProtocolError(f"delete signature {name}: {e}") from None
    return DELETE_SIGNING_PREFIX + cbor2.dumps(list(values), canonical=True)
