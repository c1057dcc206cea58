"""``pack-read``: ciphertext ranges of this node's packs, for ``corestate mount``.

The mount process decrypts chunks itself (it holds the key) and reads packs in the local
store directly; a pack that lives only on holders it asks the daemon for, range by range.
The daemon rebuilds such a pack once from any k of its shares (``Mesh.fetch``: each share
checked against its recorded root) and keeps the last ``CACHED_PACKS`` in memory, so the
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

CACHED_PACKS = 8  # packs of up to 16 MiB (pack_size): at most 128 MiB of ciphertext


class _PackCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.packs: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self.fetching: dict[bytes, threading.Event] = {}

    def get(self, pack: bytes) -> bytes | None:
        with self.lock:
            data = self.packs.get(pack)
            if data is not None:
                self.packs.move_to_end(pack)
            return data

    def put(self, pack: bytes, data: bytes) -> None:
        with self.lock:
            self.packs[pack] = data
            self.packs.move_to_end(pack)
            while len(self.packs) > CACHED_PACKS:
                self.packs.popitem(last=False)


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
    cache = _cache(node)
    data = cache.get(pack)
    if data is None:
        port = ctx.mesh()
        if port is None:
            raise StoreError(f"pack {pack.hex()[:16]} lives only on its holders and no mesh is open",
                             hint="start the daemon (`corestate node run`)")

        async def fetch(mesh: object) -> bytes:
            return await mesh.fetch(pack)  # type: ignore[attr-defined]
        data = port.call(fetch)
        cache.put(pack, data)
    return c.PackReadResult(data=data[call.offset:call.offset + call.length], fetched=True)


OPERATIONS = (Operation(c.PackReadCall, pack_read, lock=False),)

__all__ = ["OPERATIONS", "pack_read"]
