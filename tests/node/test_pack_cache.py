"""The daemon's cache of fetched packs for ``corestate mount`` (node/app/mount.py): bounded in
bytes past its limit with real pack sizes, and one fetch per pack however many reads ask
at once (the mount's read-ahead and its reads race for the same pack)."""

from __future__ import annotations

import threading
import time
from typing import Any

from corestate.node.app import mount


def test_the_cache_keeps_at_most_its_bytes_newest_first() -> None:
    cache = mount._PackCache()
    packs = [(i.to_bytes(32, "big"), bytes([i]) * (16 << 20)) for i in range(12)]  # 192 MiB
    for pid, data in packs:
        cache.put(pid, data)
        assert cache.size <= mount.CACHE_BYTES
    assert len(cache.packs) == mount.CACHE_BYTES // (16 << 20) == 8
    assert cache.get(packs[0][0]) is None and cache.get(packs[11][0]) == packs[11][1]
    big = (b"\xff" * 32, b"x" * (mount.CACHE_BYTES + 1))  # larger than the whole cache: kept alone
    cache.put(*big)
    assert list(cache.packs) == [big[0]]


class _Port:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def call(self, fn: Any) -> bytes:
        with self.lock:
            self.calls += 1
        time.sleep(0.3)  # a fetch from holders takes a while
        return b"pack bytes"


class _Ctx:
    def __init__(self, port: _Port) -> None:
        self.port = port

    def mesh(self) -> _Port:
        return self.port


def test_concurrent_reads_of_one_pack_fetch_it_once() -> None:
    cache, port = mount._PackCache(), _Port()
    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(cache.fetch(b"p" * 32, _Ctx(port))))  # type: ignore[arg-type]
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == [b"pack bytes"] * 8
    assert port.calls == 1
    assert not cache.fetching
