"""``pack-read``: ciphertext ranges of this node's packs, for ``corestate mount``.

The mount process decrypts chunks itself (it holds the key) and reads packs in the local
store directly; a pack that lives only on holders it asks the daemon for, range by range.
The daemon rebuilds such a pack once from any k of its shares (``Mesh.fetch``: each share
checked against its recorded root) and keeps the newest ``CACHE_BYTES`` in memory, so the
reads of one file cost one fetch per pack, not one per range.

Invariants: only this node's packs are served (the share ledger or the local store must
know the pack); nothing is written to the store (a fetched pack stays in memory); the
answer is at most ``PACK_READ_MAX`` bytes (one frame).
"""

from __future__ import annotations

import collections
import threading
import weakref

from corestate.node.app import Context, Operation
from corestate.node.errors import PackMissing, StoreError
from corestate.node.local import LocalNode
from corestate.protocol import control as c

CACHE_BYTES = 128 << 20  # fetched packs kept (8 of the default 16 MiB); the newest always
FETCH_WAIT = 300.0  # seconds a read waits for another's fetch of the same pack


class _PackCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.packs: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self.fetching: dict[bytes, threading.Event] = {}
        self.size = 0

    def get(self, pack: bytes) -> bytes | None:
        with self.lock:
            data = self.packs.get(pack)
            if data is not None:
                self.packs.move_to_end(pack)
            return data

    def fetch(self, pack: bytes, ctx: Context) -> bytes:
        """The pack, from the cache or its holders; one fetch per pack at a time (a read
        that arrives while the mount's read-ahead fetches that pack waits for it, and
        fetches it itself if that failed)."""
        while True:
            data = self.get(pack)
            if data is not None:
                return data
            with self.lock:
                running = self.fetching.get(pack)
                if running is None:
                    mine = self.fetching[pack] = threading.Event()
            if running is not None:
                running.wait(FETCH_WAIT)
                continue
            try:
                data = _from_holders(pack, ctx)
                self.put(pack, data)
                return data
            finally:
                with self.lock:
                    del self.fetching[pack]
                mine.set()

    def put(self, pack: bytes, data: bytes) -> None:
        with self.lock:
            if pack not in self.packs:
                self.size += len(data)
            self.packs[pack] = data
            self.packs.move_to_end(pack)
            while self.size > CACHE_BYTES and len(self.packs) > 1:
                _, old = self.packs.popitem(last=False)
                self.size -= len(old)


def _from_holders(pack: bytes, ctx: Context) -> bytes:
    port = ctx.mesh()
    if port is None:
        raise StoreError(f"pack {pack.hex()[:16]} lives only on its holders and no mesh is open",
                         hint="start the daemon (`corestate node run`)")

    async def get(mesh: object) -> bytes:
        return await mesh.fetch(pack)  # type: ignore[attr-defined]
    return port.call(get)


_CACHES: weakref.WeakKeyDictionary[LocalNode, _PackCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache(node: LocalNode) -> _PackCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(node)
        if cache is None:
            cache = _CACHES[node] = _PackCache()
        return cache


def pack_read(node: LocalNode, call: c.PackReadCall, ctx: Context) -> c.PackReadResult:
    store = node.repo.store
    pack = bytes(call.pack)
    has_local = getattr(store, "has_local", None)
    if (has_local(pack) if has_local is not None else True):
        try:
            return c.PackReadResult(data=store.read_range(pack, call.offset, call.length), fetched=False)
        except PackMissing:
            pass  # dropped meanwhile (its shares all acknowledged): ask the holders
    if node.ledger.get(pack) is None:
        raise PackMissing(pack.hex())
    data = _cache(node).fetch(pack, ctx)
    # A fetched pack may be a bytearray (its data shares received in place): the
    # control codec sends bytes.
    return c.PackReadResult(data=bytes(data[call.offset:call.offset + call.length]), fetched=True)


OPERATIONS = (Operation(c.PackReadCall, pack_read, lock=False),)

__all__ = ["OPERATIONS", "pack_read"]
