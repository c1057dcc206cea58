"""Trees and snapshot records: the plaintext of tree and snapshot blobs (SPEC.md, "Trees").

A tree is one directory: canonical CBOR ``{"v": 1, "entries": [node, ...]}`` with nodes
sorted by name. Names are raw bytes (file names need not be UTF-8). Decoding is strict: a
name that is empty, ``.``, ``..``, or holds ``/`` or NUL is refused, whatever wrote it, so
no tree can steer a restore outside its target. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2
from corestate.protocol import cborguard
from corestate.protocol.errors import CorruptObject

TREE_VERSION = 1
SNAPSHOT_VERSION = 1

# Node types.
FILE = "f"
DIR = "d"
SYMLINK = "l"
FIFO = "p"
CHARDEV = "c"
BLOCKDEV = "b"
NODE_TYPES = (FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV)


def valid_name(name: object) -> bool:
    return (
        isinstance(name, bytes)
        and name not in (b"", b".", b"..")
        and b"/" not in name
        and b"\0" not in name
        and len(name) <= 4096
    )


@dataclass(slots=True)
class Node:
    """One directory entry as stored. Optional fields are left out of the encoding."""

    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    content: list[bytes] = field(default_factory=list)  # chunk ids, files only
    subtree: bytes | None = None  # tree id, directories only
    target: bytes | None = None  # symlinks only
    xattrs: dict[bytes, bytes] | None = None
    rdev: int | None = None  # devices only
    inode: int | None = None  # set when nlink > 1: equal values are one hard-linked file
    sparse: bool = False
    torn: bool = False  # the file changed while it was read

    def to_obj(self) -> dict[str, Any]:
        # Keys are inserted in canonical CBOR order (shorter first, then bytewise), so a
        # plain encoder emits the canonical form without sorting (tested against it).
        o: dict[str, Any] = {}
        if self.type == FILE:
            o["c"] = self.content
        o["g"] = self.gid
        if self.inode is not None:
            o["i"] = self.inode
        o["m"] = self.mode
        o["n"] = self.name
        if self.type == FILE:
            o["s"] = self.size
        o["t"] = self.type
        o["u"] = self.uid
        if self.xattrs:
            o["x"] = dict(sorted(self.xattrs.items(), key=lambda kv: (len(kv[0]), kv[0])))
        o["mt"] = self.mtime_ns
        if self.rdev is not None:
            o["rd"] = self.rdev
        if self.sparse:
            o["sp"] = True
        if self.target is not None:
            o["tg"] = self.target
        if self.subtree is not None:
            o["sub"] = self.subtree
        if self.torn:
            o["torn"] = True
        return o

    @classmethod
    def from_obj(cls, o: Any, where: str) -> Node:
        if not isinstance(o, dict):
            raise CorruptObject(where, "a tree entry is not a map")
        name = o.get("n")
        if not valid_name(name):
            raise CorruptObject(where, f"unsafe or invalid entry name {name!r}")
        assert isinstance(name, bytes)
        t = o.get("t")
        if t not in NODE_TYPES:
            raise CorruptObject(where, f"entry {name!r} has unknown type {t!r}")
        ints = ("m", "u", "g", "mt")
        if not all(isinstance(o.get(k), int) for k in ints):
            raise CorruptObject(where, f"entry {name!r} lacks its metadata")
        node = cls(name, t, o["m"], o["u"], o["g"], o["mt"])
        if t == FILE:
            content = o.get("c")
            size = o.get("s")
            if not isinstance(size, int) or size < 0 or not isinstance(content, list) or not all(
                isinstance(c, bytes) and len(c) == 32 for c in content
            ):
                raise CorruptObject(where, f"file {name!r} has malformed content")
            node.size, node.content = size, content
        elif t == DIR:
            sub = o.get("sub")
            if not isinstance(sub, bytes) or len(sub) != 32:
                raise CorruptObject(where, f"directory {name!r} names no subtree")
            node.subtree = sub
        elif t == SYMLINK:
            tg = o.get("tg")
            if not isinstance(tg, bytes) or b"\0" in tg or not tg:
                raise CorruptObject(where, f"symlink {name!r} has a bad target")
            node.target = tg
        elif t in (CHARDEV, BLOCKDEV):
            if not isinstance(o.get("rd"), int):
                raise CorruptObject(where, f"device {name!r} lacks its number")
            node.rdev = o["rd"]
        x = o.get("x")
        if x is not None:
            if not isinstance(x, dict) or not all(
                isinstance(k, bytes) and isinstance(v, bytes) for k, v in x.items()
            ):
                raise CorruptObject(where, f"entry {name!r} has malformed xattrs")
            node.xattrs = x
        if isinstance(o.get("i"), int):
            node.inode = o["i"]
        node.sparse = o.get("sp") is True
        node.torn = o.get("torn") is True
        return node


def encode_tree(nodes: list[Node]) -> bytes:
    """Canonical CBOR of a directory (to_obj already orders keys canonically)."""
    nodes.sort(key=lambda n: n.name)
    return cbor2.dumps({"v": TREE_VERSION, "entries": [n.to_obj() for n in nodes]})


def decode_tree(data: bytes, where: str) -> list[Node]:
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptObject(where, f"tree does not decode: {exc}")
    # Shared references would let one content list be checked once per entry (cborguard).
    if (why := cborguard.problem(obj, len(data))) is not None:
        raise CorruptObject(where, f"tree does not decode: {why}")
    if not isinstance(obj, dict) or obj.get("v") != TREE_VERSION or not isinstance(
        obj.get("entries"), list
    ):
        raise CorruptObject(where, "not a version-1 tree")
    nodes = [Node.from_obj(o, where) for o in obj["entries"]]
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise CorruptObject(where, "tree holds one name twice")
    return nodes


@dataclass(slots=True)
class Snapshot:
    """A snapshot record: what was backed up, when, and the root tree."""

    tree: bytes
    time_ns: int
    hostname: str
    paths: list[bytes]
    peer_id: str
    files: int = 0
    dirs: int = 0
    size: int = 0
    provider: str = "plain"
    torn: list[bytes] = field(default_factory=list)
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    parent: bytes | None = None

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "v": SNAPSHOT_VERSION, "tree": self.tree, "time_ns": self.time_ns,
                "host": self.hostname, "paths": self.paths, "peer": self.peer_id,
                "files": self.files, "dirs": self.dirs, "bytes": self.size,
                "provider": self.provider, "torn": self.torn,
                "errors": [[p, m] for p, m in self.errors], "parent": self.parent,
            },
            canonical=True,
        )

    @classmethod
    def decode(cls, data: bytes, where: str) -> Snapshot:
        try:
            o = cbor2.loads(data)
            if (why := cborguard.problem(o, len(data))) is not None:
                raise ValueError(why)
            if not isinstance(o, dict) or o.get("v") != SNAPSHOT_VERSION:
                raise ValueError("not a version-1 snapshot")
            tree = o["tree"]
            if not isinstance(tree, bytes) or len(tree) != 32:
                raise ValueError("bad root tree id")
            parent = o.get("parent")
            if parent is not None and (not isinstance(parent, bytes) or len(parent) != 32):
                raise ValueError("bad parent snapshot id")
            return cls(
                tree=tree, time_ns=int(o["time_ns"]), hostname=str(o["host"]),
                paths=[_path(p) for p in o["paths"]], peer_id=str(o["peer"]),
                files=int(o["files"]), dirs=int(o["dirs"]), size=int(o["bytes"]),
                provider=str(o["provider"]), torn=[_path(p) for p in o["torn"]],
                errors=[(_path(p), str(m)) for p, m in o["errors"]], parent=parent,
            )
        # OverflowError: int() of an infinite float.
        except (ValueError, TypeError, KeyError, OverflowError, cbor2.CBORDecodeError) as exc:
            raise CorruptObject(where, f"snapshot record does not decode: {exc}")


def _path(p: object) -> bytes:
    # Paths are byte strings as written; ``bytes(p)`` would also take an integer and
    # allocate that many zero bytes.
    if not isinstance(p, bytes):
        raise TypeError(f"a path is bytes, not {type(p).__name__}")
    return p
