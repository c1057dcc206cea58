"""A storage target answering the share service as a holder does, from this node.

Role: ``Mesh.request`` hands every request for a holder named ``target:NAME`` to that
target's ``TargetHolder``, which answers the share-service messages (PutShare, GetShare,
HasShares, DeleteShare, AuditShare, Capacity) from the target's ``ObjectStore`` in worker
threads, and returns the same replies, or raises the same errors, as ``Mesh.request``
does for a peer. So placement, uploads, fetches, audits, repair, health and prune treat a
target like a peer without knowing it is one.

What a target stores (protocol/SPEC.md, "Storage targets"): share ``i`` of pack ``P`` as
the object ``shares/<P hex>/<i>`` (the share exactly as erasure/FORMAT.md lays it out,
ciphertext), and beside it ``shares/<P hex>/<i>.leaves``: the share's Merkle leaf hashes
(32 bytes per block, in order), written after the share and before the PUT is
acknowledged.

Invariants:
- A PUT is acknowledged only after its bytes matched the announced size and BLAKE3
  digest, the share's header and root checked (its leaves hash to the root it states),
  and both objects were stored (the backend's put is durable and all-or-nothing).
- An audit answer is built from what the target returns now: the share's header and the
  challenged block by ranged GETs, the audit path from the leaves object. The owner checks
  it against the root recorded at upload (``erasure.share.verify_proof``), so a target
  that lost or changed the block, its header or its leaves fails the audit; nothing here
  vouches for the target. A missing leaves object falls back to a whole-share GET.
- A share is said missing (HasShares -1) only when the target proves it is there (its
  ``check`` passes): an unmounted NAS folder or a vanished bucket is an unreachable
  holder, not one that lost every share.
- Capacity answers only after the store's ``check`` passed (so a placement candidate is a
  target that takes writes now).
- Quota: ``TargetSpec.quota`` bounds what this node keeps there; used = the share bytes the
  ledger records on the target plus the PUTs in flight. A PUT past it is refused with the
  vault's ``quota`` error; Capacity answers min(free, quota left).
- Errors: a missing object is ``not-found``, a full target or quota ``quota`` (both a
  ``PeerRefused``); a target that cannot be used now (down, throttled after its retries,
  credentials refused, bucket or folder missing) raises ``TargetDown``, a ``MeshError``
  that callers count like an unreachable peer, carrying the store's hint. Every store call
  runs under the request's deadline; a call past it is abandoned (its thread finishes on
  its own) and the target counted unreachable. After a ``TargetDown``, requests to that
  target fail at once for ``DOWN_FOR`` seconds.
- Only this node's own shares live on its targets: a request for another owner's share
  (a member repairing for an absent owner) is refused; such shares are not reachable
  without the owner's credentials.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import blake3
import trio
from corestate.erasure import merkle
from corestate.erasure import share as sharefmt
from corestate.erasure.errors import CorruptShare
from corestate.node.errors import QuotaExceeded
from corestate.node.runtime.mesh import MIN_RATE, REQUEST_BASE, MeshError, PeerRefused
from corestate.node.targets.registry import TargetSpec
from corestate.node.targets.store import (
    ObjectMissing,
    ObjectStore,
    TargetError,
    TargetFull,
)
from corestate.protocol import messages as m

log = logging.getLogger("corestate.targets")

T = TypeVar("T")
# Store calls to targets at once (each a worker thread): enough for the uploads and
# fetches in flight, few enough not to take the process's threads.
TARGET_THREADS = 4
LEAVES = ".leaves"
# After a target could not be used (TargetDown), requests to it fail at once for this
# many seconds: a backup whose target hangs gives up on it after one deadline, not one per
# pack (the issue: give up within 60 s of trying).
DOWN_FOR = 30.0
# A HasShares of more shares than this is answered from a listing of the target (one
# request per 1000 objects on S3) instead of one lookup per share; the listing serves
# the next batches of the same round for LIST_TTL seconds. HAS_RATE: shares per second a
# HasShares is given beyond the request's deadline.
LIST_ABOVE = 64
LIST_TTL = 60.0
HAS_RATE = 200
# A store call past its request's deadline is left to finish in its thread (trio's keyword;
# the installed trio-stubs still know only its old name, ``cancellable``).
_ABANDON: dict[str, Any] = {"abandon_on_cancel": True}


class TargetDown(MeshError):
    """The target cannot be used now: callers count it as an unreachable holder."""

    def __init__(self, holder: str, exc: BaseException | str, *, hint: str = "",
                 retryable: bool = True) -> None:
        super().__init__(f"{holder}: {exc}" if not isinstance(exc, TargetError) else str(exc),
                         hint=hint or getattr(exc, "hint", ""), retryable=retryable)
        self.holder = holder


def share_key(pack: bytes, index: int) -> str:
    return f"shares/{bytes(pack).hex()}/{int(index)}"


def leaves_key(pack: bytes, index: int) -> str:
    return share_key(pack, index) + LEAVES


def share_leaves(share: bytes | memoryview, pack: bytes, index: int) -> bytes:
    """The leaf hashes of ``share``, after checking that they give the root its header
    states and that it is share ``index`` of ``pack``. Raises CorruptShare."""
    hdr = sharefmt.read_header(share)
    if hdr.pack_id != bytes(pack) or hdr.index != index:
        raise CorruptShare(hdr.index, "the share names another pack or index")
    payload = sharefmt.payload_of(share)
    if len(payload) != hdr.payload_length:
        raise CorruptShare(index, "the payload length differs from the header's")
    leaves = merkle.leaves(payload, hdr.block_size)
    if not merkle.same(merkle.root_hash(hdr.descriptor(), merkle.head(leaves)), hdr.root):
        raise CorruptShare(index, "the share's blocks do not give the root its header states")
    return b"".join(leaves)


class TargetHolder:
    """One target as a holder (see the module docstring). ``used`` gives the bytes the
    ledger records on it (read in a worker thread); ``threads`` bounds its store calls
    at once (the mesh shares one among its targets)."""

    def __init__(self, spec: TargetSpec, store: ObjectStore, used: Callable[[], int],
                 timeout: float, threads: trio.CapacityLimiter | None = None) -> None:
        self.spec, self.store, self.used, self.timeout = spec, store, used, timeout
        self.holder = spec.holder
        self._threads = threads or trio.CapacityLimiter(TARGET_THREADS)
        self._reserved = 0  # bytes of PUTs in flight
        self._down_since = self._down_until = -math.inf  # trio time of the last TargetDown, and DOWN_FOR on
        self._down_why = self._down_hint = ""
        self._listing: tuple[float, dict[str, int]] | None = None  # (trio time, key -> size)
        self._checking = trio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        call: Callable[[], T] = functools.partial(fn, *args)
        return await trio.to_thread.run_sync(call, limiter=self._threads, **_ABANDON)

    async def request(self, msg: Any, *, bulk: bytes | memoryview | None = None,
                      timeout: float | None = None,
                      expect_size: int | None = None) -> tuple[Any, bytes | None]:
        """Answer ``msg`` as ``Mesh.request`` would for a peer: (reply, bulk data)."""
        now = trio.current_time()
        if now < self._down_until:
            # It failed a moment ago: fail at once rather than make every pack of a backup
            # wait out its own deadline on a hung NAS or a dead endpoint.
            raise TargetDown(self.holder, f"unreachable {now - self._down_since:.0f} s ago: {self._down_why}",
                             hint=self._down_hint)
        try:
            return await self._request(msg, bulk, timeout, expect_size)
        except TargetDown as exc:
            self._down_since = trio.current_time()
            self._down_until = self._down_since + DOWN_FOR
            self._down_why, self._down_hint = str(exc).removeprefix(f"{self.holder}: "), exc.hint
            raise

    async def _request(self, msg: Any, bulk: bytes | memoryview | None, timeout: float | None,
                       expect_size: int | None) -> tuple[Any, bytes | None]:
        t = (timeout or self.timeout) * REQUEST_BASE
        if bulk is not None:
            t += len(bulk) / MIN_RATE
        elif isinstance(msg, m.GetShare):
            t += max(0, msg.length if msg.length >= 0 else expect_size or 0) / MIN_RATE
        elif isinstance(msg, m.HasShares):
            t += len(msg.items) / HAS_RATE
        try:
            with trio.fail_after(t):
                return await self._answer(msg, bulk, expect_size)
        except trio.TooSlowError:
            raise TargetDown(self.holder, f"no answer within {t:.0f} s",
                             hint="check the target's network or disk; the request is retried later") from None
        except ObjectMissing as exc:
            raise PeerRefused(self.holder, "not-found", str(exc), False) from None
        except TargetFull as exc:
            raise PeerRefused(self.holder, "quota", f"{exc} ({exc.hint})" if exc.hint else str(exc),
                              True) from None
        except TargetError as exc:
            raise TargetDown(self.holder, exc, retryable=True) from None
        except MeshError:  # our own answers (PeerRefused, TargetDown, a size mismatch)
            raise
        except Exception as exc:
            # A backend that let something else through (an OSError, a client library's
            # own error): the target is in trouble, and the caller must not be.
            log.warning("%s: unexpected error from its store: %r", self.holder, exc)
            raise TargetDown(self.holder, f"{type(exc).__name__}: {exc}") from None

    async def _answer(self, msg: Any, bulk: bytes | memoryview | None,
                      expect_size: int | None) -> tuple[Any, bytes | None]:
        if getattr(msg, "owner", ""):
            # Only this node's own shares live on its targets (module docstring).
            raise PeerRefused(self.holder, "refused", "a storage target holds its owner's shares only", False)
        if isinstance(msg, m.PutShare):
            return await self._put(msg, bulk), None
        if isinstance(msg, m.GetShare):
            return await self._get(msg, expect_size)
        if isinstance(msg, m.HasShares):
            return await self._has(msg), None
        if isinstance(msg, m.DeleteShare):
            if self._listing is not None:
                self._listing[1].pop(share_key(msg.pack, msg.index), None)
            await self._run(self.store.delete, leaves_key(msg.pack, msg.index))
            await self._run(self.store.delete, share_key(msg.pack, msg.index))
            return m.Ok(), None
        if isinstance(msg, m.AuditShare):
            return m.AuditReply(proof=await self._prove(msg.pack, msg.index, msg.block)), None
        if isinstance(msg, m.Capacity):
            # Proved usable now (a write, a read back, a delete): an S3 backend can say
            # nothing of its free space, and a candidate must not be a dead endpoint.
            await self._check()
            left = await self._quota_left()
            free = await self._run(self.store.free)
            free = left if free is None else min(free, left)
            return m.CapacityReply(free=max(0, free), quota_left=max(0, left)), None
        raise PeerRefused(self.holder, "unexpected", f"{type(msg).__name__} is not a request", False)

    async def _check(self) -> None:
        async with self._checking:  # one probe object per store: never two checks at once
            await self._run(self.store.check)

    async def _quota_left(self) -> int:
        if not self.spec.quota:
            return 1 << 62
        used = await trio.to_thread.run_sync(self.used)
        return self.spec.quota - used - self._reserved

    async def _put(self, msg: m.PutShare, bulk: bytes | memoryview | None) -> m.Ok:
        if bulk is None or len(bulk) != msg.size:
            raise PeerRefused(self.holder, "rejected", "the bytes differ from the announced size", False)
        left = await self._quota_left()
        if self.spec.quota and msg.size > left:
            exc = QuotaExceeded(self.holder, msg.size, max(0, left))
            raise PeerRefused(self.holder, "quota", str(exc), False)
        self._reserved += msg.size
        try:
            if await self._run(lambda: blake3.blake3(bulk).digest()) != msg.digest:  # off the loop
                raise PeerRefused(self.holder, "rejected", "the bytes differ from the announced digest", False)
            try:
                leaves = await self._run(share_leaves, bulk, msg.pack, msg.index)
            except CorruptShare as exc:
                raise PeerRefused(self.holder, "rejected", f"not a valid share: {exc.reason}", False) from None
            await self._run(self.store.put, share_key(msg.pack, msg.index), bulk, msg.size)
            await self._run(self.store.put, leaves_key(msg.pack, msg.index), leaves, len(leaves))
        finally:
            self._reserved -= msg.size
        return m.Ok()

    async def _get(self, msg: m.GetShare, expect_size: int | None) -> tuple[Any, bytes | None]:
        length = None if msg.length < 0 else msg.length
        data = await self._run(self.store.get, share_key(msg.pack, msg.index), msg.offset, length)
        if expect_size is not None and len(data) != expect_size:
            raise MeshError(f"{self.holder} returned {len(data)} bytes, the recorded size is {expect_size}")
        digest = await self._run(lambda: blake3.blake3(data).digest())  # off the loop: up to a whole share
        return m.ShareData(size=len(data), digest=digest), data

    async def _has(self, msg: m.HasShares) -> m.HasReply:
        """Sizes of the asked shares. A few are looked up one by one; many (an audit round
        asks about every share the target holds, 4096 at a time) from one listing of
        ``shares/``, kept ``LIST_TTL`` seconds for the next batches; a share the listing
        lacks is looked up by itself (it may be newer than the listing)."""
        items = [(bytes(p), int(i)) for p, i in msg.items]
        listed: dict[str, int] = {}
        if len(items) > LIST_ABOVE:
            now = trio.current_time()
            if self._listing is None or now - self._listing[0] > LIST_TTL:
                self._listing = (now, await self._run(lambda: dict(self.store.list("shares/"))))
            listed = self._listing[1]
        sizes: list[int] = []
        for pack, index in items:
            key = share_key(pack, index)
            size = listed.get(key)
            if size is None:
                size = await self._run(self.store.size, key)
            sizes.append(-1 if size is None else size)
        if -1 in sizes:
            # Prove the target is there before saying it lost shares (module docstring).
            await self._check()
        return m.HasReply(sizes=tuple(sizes))

    async def _prove(self, pack: bytes, index: int, block: int) -> bytes:
        """An audit answer made of what the target returns now (module docstring)."""
        key = share_key(pack, index)
        head = await self._run(self.store.get, key, 0, sharefmt.HEADER_SIZE)
        try:
            hdr = sharefmt.read_header(head)
        except CorruptShare as exc:
            raise PeerRefused(self.holder, "bad-block", f"share header unreadable: {exc.reason}", False) from None
        count = hdr.block_count
        if not 0 <= block < count:
            raise PeerRefused(self.holder, "bad-block", f"block {block} not in [0, {count})", False)
        try:
            raw = await self._run(self.store.get, leaves_key(pack, index))
        except ObjectMissing:
            raw = b""
        if len(raw) != count * merkle.HASH_SIZE:
            # No usable leaves: the whole share, proved as a peer's vault would.
            log.info("%s: leaves of share %d of %s missing or short; proving from the whole share",
                     self.holder, index, bytes(pack).hex()[:12])
            whole = await self._run(self.store.get, key)
            try:
                return sharefmt.prove(whole, block).to_bytes()
            except CorruptShare as exc:
                raise PeerRefused(self.holder, "bad-block", f"share unreadable: {exc.reason}", False) from None
        leaves = [raw[i:i + merkle.HASH_SIZE] for i in range(0, len(raw), merkle.HASH_SIZE)]
        lo, hi = merkle.block_bounds(block, hdr.payload_length, hdr.block_size)
        data = await self._run(self.store.get, key, sharefmt.HEADER_SIZE + lo, hi - lo)
        path = tuple(merkle.audit_path(merkle.levels(leaves), block))
        return sharefmt.Proof(hdr.descriptor(), block, data, path).to_bytes()

    def close(self) -> None:
        self.store.close()


__all__ = ["LEAVES", "TargetDown", "TargetHolder", "leaves_key", "share_key", "share_leaves"]
