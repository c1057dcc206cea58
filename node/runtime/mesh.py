"""The mesh: the share service other nodes call, and this node's calls to them.

Role: moves shares. Serving: ``/corestate/share/1`` PUT/GET/HAS/DELETE/AUDIT/CAP for
peers, one request per stream, backed by the ``ShareVault``. Calling: upload a pack as
RS-coded shares to n distinct peers chosen by the pure placement core, fetch a pack back
from any k holders, survey holders for ``check``.

Invariants:
- A share is recorded in the ledger only after its holder acknowledged it, and the holder
  acknowledges only after checking size, BLAKE3 and the share's own root and writing it
  durably. Nothing is recorded as stored that is not.
- Everything a holder returns is checked against the root recorded at upload; a share
  that fails is excluded, its holder named in an ``alert`` event, and the next holder
  tried. The decoded pack must hash to its id.
- Every await on a peer is under a timeout (``Channel``); a handler never lets an
  exception reach libp2p (``P2PHost`` wraps it too; here errors become ``Error`` replies).
- This node never holds its own shares, and shares go only to trusted peers and to this
  node's own storage targets (holders ``target:NAME``, answered in this process by
  node/runtime/targethost.py).
- Serving costs a peer's bounded share of this node, whatever it sends (SPEC 8.5,
  "Limits"): streams and bulk bytes in flight are capped per peer, for strangers (peers
  neither trusted nor members) together and in total, strangers far lower; every request
  has a deadline; a PUT's quota is reserved before its body is read and the body goes to
  a file as it arrives; GET and AUDIT read the share file in slices, in worker threads.
  No share is ever held in memory whole on the serving side.
- A client takes a share's body only once its announced size is the recorded one.
- All erasure coding and decoding of this node runs in one thread (``in_coder``): the
  codec keeps a pack-sized scratch buffer per thread that coded. A pack's data shares are
  sent as views of the pack (``code_pack``), and fetched data shares land in one buffer
  of the pack's size: no share-sized copies beyond the parity.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import mmap
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3
import nacl.exceptions
import nacl.signing
import trio
from corestate.erasure import share as sharefmt
from corestate.erasure.errors import CorruptShare, InvalidParameters, NotEnoughShares
from corestate.erasure.rs import codec as erasure_codec
from corestate.node.core.admission import Admission
from corestate.node.core.holders import Challenge, ShareRef
from corestate.node.core.placement import Candidate, place, replace
from corestate.node.core.repair import Audit, Verdict, audit_block, best, judge_share, share_blocks
from corestate.node.errors import QuotaExceeded, ShareNotFound, ShareRejected, StoreError
from corestate.node.ledger import Ledger, ShareRow
from corestate.node.peers import AddressBook
from corestate.node.runtime import heap
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.reports import PackResult, Progress, UploadReport, short
from corestate.node.runtime.vault import SLICE, HeldShare, Incoming, ShareVault
from corestate.protocol import messages as m
from corestate.protocol.errors import ProtocolError, RemoteProtocolError
from corestate.protocol.keys import NodeKeys, public_key_from_peer_id

if TYPE_CHECKING:
    from corestate.node.runtime.groupsvc import GroupService
    from corestate.node.runtime.targethost import TargetHolder
    from corestate.node.targets.registry import TargetSpec
from corestate.protocol.streams import Channel, Host, Stream

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.mesh")

SHARE_PROTOCOL = "/corestate/share/1"
TARGET_PREFIX = "target:"  # holder ids of storage targets (node/targets/registry.py HOLDER_PREFIX)
# Raw-throughput probe: the client sends a PutShare header (pack = zeros, index 0) and
# ``size`` bytes; the server hashes and discards them and answers Ok. Measures what the
# link carries without the vault's disk writes (benchmarks, `peer list --probe`).
SINK_PROTOCOL = "/corestate/sink/1"
SINK_MAX = 1 << 30
MAX_SHARE = 1 << 30
# A refused PUT body up to this size is read and dropped (never kept), so that a client
# that writes its whole body before it reads sees the answer; a larger one is not read:
# the stream is closed. Real shares (16 MiB packs, k >= 1) fit.
DRAIN_MAX = 16 << 20
# A request's whole exchange must end within REQUEST_BASE x the peer timeout, plus the
# time its bulk bytes take at MIN_RATE bytes/s (per read and write the peer timeout holds).
REQUEST_BASE = 2
MIN_RATE = 1 << 20
BATCH = 1 << 20  # bytes of a PUT body gathered before one write to its file


# Worker threads that read whole share files at once (verification of GETs and PUTs,
# proofs): few, so that they cannot starve the event loop of the interpreter lock.
MEMBER_SCANS = 2
STRANGER_SCANS = 1


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class RateLimiter:
    """Bytes per second for repair traffic (``[health] repair_bandwidth``): each transfer
    first waits until the bytes before it, at ``rate``, would have gone. ``rate`` 0: no cap.
    One limiter for every repair transfer of the node, so parallel puts share the cap."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = -math.inf
        self.bytes = 0

    async def take(self, n: int) -> None:
        self.bytes += n
        if self.rate <= 0:
            return
        now = trio.current_time()
        self._next = max(now, self._next) + n / self.rate
        await trio.sleep_until(self._next)


class MeshError(CoreStateError):
    """A mesh operation could not be completed."""


class LocalPackDamaged(MeshError):
    """This node's own copy of a pack does not hash to its id (bit rot)."""


class PeerRefused(MeshError):
    def __init__(self, peer: str, code: str, message: str, retryable: bool) -> None:
        super().__init__(f"peer {short(peer)} refused: {message} ({code})", retryable=retryable)
        self.peer, self.code = peer, code


_ERROR_CODES: dict[type, str] = {QuotaExceeded: "quota", ShareNotFound: "not-found",
                                  ShareRejected: "rejected"}


async def _discard(piece: bytes) -> None:
    """A bulk sink that keeps nothing (the bytes are hashed on the way all the same)."""


# The erasure codec keeps a scratch buffer per thread that coded (a pack's parity, 16 MiB
# at k=2 n=4), for as long as the thread lives: coded in trio's worker threads, each of
# them would keep one. All of this node's coding runs in one thread instead.
_coder: concurrent.futures.ThreadPoolExecutor | None = None
_coder_lock = threading.Lock()


async def in_coder(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the mesh's one coding thread; its result or exception. A caller
    cancelled meanwhile leaves the call to finish there, its result unused."""
    global _coder
    with _coder_lock:
        if _coder is None:
            _coder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mesh-coder")
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass
    future = _coder.submit(fn, *args)
    future.add_done_callback(wake)
    await done.wait()
    return future.result()


@dataclass(frozen=True, slots=True)
class CodedShare:
    """A share ready to send: its header and payload apart (a data share's payload is a
    view of the pack, not a copy), its size, the BLAKE3 of its bytes (the transfer digest
    a PUT announces) and its root (what the ledger records)."""

    index: int
    parts: tuple[bytes | memoryview, ...]
    size: int
    digest: bytes
    root: bytes


def code_pack(data: bytes, k: int, n: int, pack: bytes) -> list[CodedShare]:
    """The n shares of ``pack`` (whose bytes are ``data``, checked against its id first),
    as ``erasure.share.make_shares`` makes them, without copying the data shares'
    payloads. For the coding thread (``in_coder``): parity comes out of its scratch and
    is copied before the next pack reuses it."""
    if blake3.blake3(data).digest() != pack:
        raise LocalPackDamaged(f"local pack {pack.hex()[:16]} does not match its id; run `corestate check`")
    payloads = erasure_codec(k, n).encode_views(data, threads=1)
    shares = []
    for i, view in enumerate(payloads):
        payload: bytes | memoryview = bytes(view) if i >= k else view
        hdr = sharefmt.ShareHeader(pack, k, n, i, sharefmt.DEFAULT_BLOCK_SIZE, len(payload), len(data), b"")
        root = sharefmt.compute_root(hdr, payload)
        head = hdr.descriptor() + root
        digest = blake3.blake3(head)
        digest.update(payload)
        shares.append(CodedShare(i, (head, payload), len(head) + len(payload), digest.digest(), root))
    return shares


@dataclass(frozen=True, slots=True)
class PackView:
    """Where a pack's bytes lie: data share ``i`` holds bytes ``i*payload ..`` of it."""

    pack: bytes
    k: int
    size: int  # the pack's length
    payload: int  # bytes of pack per data share
    rows: dict[int, list[ShareRow]]  # data share index -> its holders
    owner: str


class Mesh:
    def __init__(self, host: Host, keys: NodeKeys, vault: ShareVault, book: AddressBook,
                 ledger: Ledger, events: EventBus, *, timeout: float = 20.0,
                 uploads_in_flight: int = 3, authorized: Callable[[str], bool] | None = None,
                 in_group: Callable[[], bool] | None = None,
                 trusted: Callable[[], list[str]] | None = None,
                 targets: Callable[[], list[TargetSpec]] | None = None) -> None:
        self.host, self.keys, self.vault, self.book = host, keys, vault, book
        self.ledger, self.events = ledger, events
        self.timeout = timeout
        self.uploads_in_flight = uploads_in_flight
        self.signer = nacl.signing.SigningKey(keys.identity_seed)
        self.authorized = authorized or (lambda peer: bool((e := book.get(peer)) and e.trusted))
        self.in_group = in_group or (lambda: False)
        self.trusted = trusted or (lambda: [e.peer for e in book.trusted()])
        # The storage targets of this home (node/targets/registry.py), read again whenever
        # a target is looked up, so that `target add/remove` take effect in a daemon.
        self.targets: Callable[[], list[TargetSpec]] = targets or list
        self._holders: dict[str, tuple[TargetSpec, TargetHolder]] = {}
        from corestate.node.runtime.targethost import TARGET_THREADS
        self._target_threads = trio.CapacityLimiter(TARGET_THREADS)  # shared by the targets
        self._target_lock = trio.Lock()
        # Why each target that did not answer the last capacity request could not be used
        # (its error and the store's hint), for the person (a backup that placed nothing).
        self.target_trouble: dict[str, str] = {}
        self.groups: GroupService | None = None  # set by open_mesh
        self.reach: Any = None  # a ReachService (node/runtime/reach.py), set by open_mesh for a daemon
        # Members of this node's group (set by open_mesh): who may put shares for whom.
        self.is_member: Callable[[str], bool] = lambda peer: False
        # Peers that get no new shares (evicted or lost holders; node/app/health.py).
        self.shunned: Callable[[], set[str]] = set
        self.admission = Admission()
        self._room = trio.lowlevel.ParkingLot()  # members waiting for admission
        self._member_scans = trio.CapacityLimiter(MEMBER_SCANS)
        self._stranger_scans = trio.CapacityLimiter(STRANGER_SCANS)
        host.set_handler(SHARE_PROTOCOL, self.serve_share)
        host.set_handler(SINK_PROTOCOL, self.serve_sink)

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    # -- serving -----------------------------------------------------------------------

    def _stranger(self, peer: str) -> bool:
        """Neither a group member nor a peer the user added (nor one with a quota here)."""
        return not (self.authorized(peer) or self.vault.has_quota(peer))

    async def _enter(self, peer: str, stranger: bool, *, streams: int = 0, bulk: int = 0) -> bool:
        """Take room in the admission scopes: strangers at once or never (False), members
        wait for it (under the request's deadline)."""
        while not self.admission.try_enter(peer, stranger, streams=streams, bulk=bulk):
            if stranger:
                return False
            await self._room.park()
        return True

    def _leave(self, peer: str, stranger: bool, *, streams: int = 0, bulk: int = 0) -> None:
        self.admission.leave(peer, stranger, streams=streams, bulk=bulk)
        self._room.unpark_all()

    async def serve_share(self, stream: Stream) -> None:
        sender = stream.remote_peer
        ch = Channel(stream, timeout=self.timeout)
        stranger = self._stranger(sender)
        entered = False
        try:
            if self.in_group() and not self.authorized(sender):
                # In a group the share service is for members (and peers the user
                # added) only; removed members are refused the moment we know.
                with trio.move_on_after(2):
                    await ch.send(m.Error(code="refused", message="not a member of this node's group",
                                          retryable=False))
                return
            with trio.move_on_after(REQUEST_BASE * self.timeout) as deadline:
                entered = await self._enter(sender, stranger, streams=1)
                if not entered:
                    # Read nothing: a refused stranger costs no more than this answer.
                    await ch.send(m.Error(code="busy", message="too many requests from you or "
                                          "peers like you in flight here; retry later", retryable=True))
                    return
                await self._serve_request(ch, sender, stranger, deadline)
            if deadline.cancelled_caught:
                log.info("share request from %s ran past its deadline", short(sender))
        except ProtocolError as exc:  # the peer went away or stalled: nothing to answer
            log.info("share request from %s ended: %s", short(sender), exc)
        finally:
            if entered:
                self._leave(sender, stranger, streams=1)
            with trio.move_on_after(2):
                await ch.aclose()

    async def _serve_request(self, ch: Channel, sender: str, stranger: bool,
                             deadline: trio.CancelScope) -> None:
        try:
            msg = await ch.receive()
            await self._serve_one(ch, sender, stranger, msg, deadline)
        except RemoteProtocolError as exc:
            log.warning("peer %s sent a bad request: %s", short(sender), exc)
            with trio.move_on_after(2):
                await ch.send(m.Error(code="protocol", message=str(exc)[:1000], retryable=False))
        except (QuotaExceeded, ShareNotFound, ShareRejected, StoreError) as exc:
            await ch.send(m.Error(code=_ERROR_CODES.get(type(exc), "store"),
                                  message=str(exc)[:1000], retryable=exc.retryable))

    async def serve_sink(self, stream: Stream) -> None:
        ch = Channel(stream, timeout=self.timeout)
        try:
            msg = await ch.receive()
            if not isinstance(msg, m.PutShare) or not self.authorized(stream.remote_peer):
                await ch.send(m.Error(code="refused", message="the sink serves trusted peers only",
                                      retryable=False))
                return
            await ch.receive_bulk_to(msg.size, msg.digest, _discard)
            await ch.send(m.Ok())
        except ProtocolError as exc:
            log.info("sink request from %s ended: %s", short(stream.remote_peer), exc)
        finally:
            with trio.move_on_after(2):
                await ch.aclose()

    async def probe(self, peer: str, data: bytes) -> float:
        """Send ``data`` to ``peer``'s sink; return the seconds it took (acknowledged)."""
        entry = self.book.get(peer)
        t0 = time.monotonic()
        stream = await self.host.open_stream(peer, SINK_PROTOCOL, addrs=entry.addrs if entry else [],
                                             timeout=self.timeout)
        ch = Channel(stream, timeout=self.timeout)
        try:
            await ch.send(m.PutShare(pack=bytes(32), index=0, size=len(data),
                                     digest=blake3.blake3(data).digest()))
            await ch.send_bulk(data)
            reply = await ch.receive()
            if isinstance(reply, m.Error):
                raise PeerRefused(peer, reply.code, reply.message, reply.retryable)
        finally:
            with trio.move_on_after(2):
                await ch.aclose()
        return time.monotonic() - t0

    async def _scan(self, stranger: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` (a whole-file vault pass) in a worker thread of the caller's class."""
        limiter = self._stranger_scans if stranger else self._member_scans
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    async def _serve_one(self, ch: Channel, sender: str, stranger: bool, msg: Any,
                         deadline: trio.CancelScope) -> None:
        v = self.vault
        if isinstance(msg, m.PutShare):
            await self._serve_put(ch, sender, stranger, msg, deadline)
        elif isinstance(msg, m.GetShare):
            owner = msg.owner or sender
            if owner != sender and not (self.in_group() and self.authorized(sender)):
                await ch.send(m.Error(code="refused", message="another owner's shares go to group members only",
                                      retryable=False))
                return
            held: HeldShare = await self._scan(stranger, v.open_share, owner, msg.pack, msg.index,
                                               msg.offset, msg.length)
            try:
                await self._serve_get(ch, sender, stranger, held, deadline)
            finally:
                held.close()
        elif isinstance(msg, m.HasShares):
            items = [(bytes(p), int(i)) for p, i in msg.items]
            sizes = await trio.to_thread.run_sync(v.sizes, sender, items)
            await ch.send(m.HasReply(sizes=sizes))
        elif isinstance(msg, m.DeleteShare):
            if msg.holder != self.peer_id:
                await ch.send(m.Error(code="wrong-holder", message="signed for another holder", retryable=False))
                return
            pub = public_key_from_peer_id(sender)
            try:
                if pub is None:
                    raise nacl.exceptions.BadSignatureError("no key in the PeerID")
                nacl.signing.VerifyKey(pub).verify(
                    m.delete_signing_bytes(msg.holder, msg.pack, msg.index, msg.nonce), msg.signature)
            except nacl.exceptions.BadSignatureError:
                await ch.send(m.Error(code="bad-signature", message="delete not signed by the owner", retryable=False))
                return
            # The share is looked up first: a delete of nothing records no nonce (and is
            # answered Ok: what the owner asked for holds).
            outcome = await trio.to_thread.run_sync(v.delete_signed, sender, msg.pack, msg.index, msg.nonce)
            if outcome == "replay":
                await ch.send(m.Error(code="replay", message="this delete was already used", retryable=False))
                return
            await ch.send(m.Ok())
        elif isinstance(msg, m.AuditShare):
            try:
                proof = await self._scan(stranger, v.prove, sender, msg.pack, msg.index, msg.block)
            except InvalidParameters as exc:
                await ch.send(m.Error(code="bad-block", message=str(exc)[:1000], retryable=False))
                return
            await ch.send(m.AuditReply(proof=proof))
        elif isinstance(msg, m.Capacity):
            left = await trio.to_thread.run_sync(v.quota_left, sender)
            if stranger:
                free = left  # the disk's free space is for members and trusted peers only
            else:
                free = await trio.to_thread.run_sync(v.free_bytes)
            await ch.send(m.CapacityReply(free=free, quota_left=left))
        else:
            await ch.send(m.Error(code="unexpected", message=f"{type(msg).__name__} is not a request",
                                  retryable=False))

    async def _serve_put(self, ch: Channel, sender: str, stranger: bool, msg: m.PutShare,
                         deadline: trio.CancelScope) -> None:
        v = self.vault
        if msg.owner and msg.owner != sender:
            if not (self.in_group() and self.is_member(sender) and self.is_member(msg.owner)):
                await ch.send(m.Error(code="refused", message="shares for another owner are taken from group "
                                      "members for members only", retryable=False))
                await self._drain(ch, msg)
                return
            sender = msg.owner  # filed (and counted against the quota) as the owner's
        try:
            # Reserved before a byte of the body is read: concurrent PUTs cannot together
            # pass the quota, and a refusal costs no body.
            res = await trio.to_thread.run_sync(v.reserve, sender, msg.pack, msg.index, msg.size)
        except QuotaExceeded as exc:
            await ch.send(m.Error(code="quota", message=str(exc)[:1000], retryable=False))
            await self._drain(ch, msg)
            return
        try:
            if not await self._enter(sender, stranger, bulk=msg.size):
                await ch.send(m.Error(code="busy", message="too many bytes in flight from you or peers "
                                      "like you; retry later", retryable=True))
                await self._drain(ch, msg)
                return
            try:
                deadline.deadline += msg.size / MIN_RATE
                inc: Incoming = await trio.to_thread.run_sync(v.incoming, res)
                try:
                    batch = bytearray()

                    async def to_file(piece: bytes) -> None:
                        nonlocal batch
                        batch += piece
                        if len(batch) >= BATCH:
                            full, batch = batch, bytearray()
                            await trio.to_thread.run_sync(inc.write, full)

                    await ch.receive_bulk_to(msg.size, msg.digest, to_file)
                    await trio.to_thread.run_sync(inc.write, batch)
                    await self._scan(stranger, v.commit, inc)
                finally:
                    inc.abort()
            finally:
                self._leave(sender, stranger, bulk=msg.size)
        finally:
            v.release(res)
        await ch.send(m.Ok())

    async def _drain(self, ch: Channel, msg: m.PutShare) -> None:
        """After refusing a PUT: a small body is read and dropped, so that a client that
        writes before it reads sees the answer; a large one is not read at all (the stream
        is closed, and its bytes stop at the transport's window)."""
        if msg.size > DRAIN_MAX:
            return
        with trio.move_on_after(self.timeout):
            try:
                await ch.receive_bulk_to(msg.size, msg.digest, _discard)
            except ProtocolError:
                pass

    async def _serve_get(self, ch: Channel, sender: str, stranger: bool, held: HeldShare,
                         deadline: trio.CancelScope) -> None:
        if not await self._enter(sender, stranger, bulk=held.size):
            await ch.send(m.Error(code="busy", message="too many bytes in flight from you or peers "
                                  "like you; retry later", retryable=True))
            return
        try:
            deadline.deadline += held.size / MIN_RATE
            await ch.send(m.ShareData(size=held.size, digest=held.digest))
            while piece := await trio.to_thread.run_sync(held.read, SLICE):
                await ch.send_bulk(piece)
        finally:
            self._leave(sender, stranger, bulk=held.size)

    # -- storage targets -----------------------------------------------------------------

    async def target(self, holder: str) -> TargetHolder:
        """The ``TargetHolder`` of the holder named ``target:NAME`` (opened on first use,
        opened again when its entry in ``targets.json`` changed). A name no longer
        configured raises ``TargetDown``: its shares are unreachable from now on."""
        async with self._target_lock:  # one TargetHolder per target, even on a first burst
            return await self._target(holder)

    async def _target(self, holder: str) -> TargetHolder:
        from corestate.node.runtime.targethost import TargetDown, TargetHolder
        from corestate.node.targets.registry import open_store
        from corestate.node.targets.store import TargetError
        specs = {s.holder: s for s in await trio.to_thread.run_sync(self.targets)}
        spec = specs.get(holder)
        known = self._holders.get(holder)
        if known is not None and known[0] == spec:
            return known[1]
        if known is not None:
            del self._holders[holder]
            await trio.to_thread.run_sync(known[1].close)
        if spec is None:
            raise TargetDown(holder, "no such storage target is configured (`corestate target list`)",
                             hint="add it again with `corestate target add`, or let repair move its shares",
                             retryable=False)
        try:
            store = await trio.to_thread.run_sync(open_store, spec)
        except TargetError as exc:
            raise TargetDown(holder, exc, retryable=exc.retryable) from None
        used: Callable[[], int] = functools.partial(self.ledger.bytes_on, holder)
        th = TargetHolder(spec, store, used, self.timeout, self._target_threads)
        self._holders[holder] = (spec, th)
        return th

    def close_targets(self) -> None:
        for _, th in self._holders.values():
            th.close()
        self._holders.clear()

    # -- calling -----------------------------------------------------------------------

    async def request(self, peer: str, msg: Any, *,
                      bulk: bytes | memoryview | Sequence[bytes | memoryview] | None = None,
                      timeout: float | None = None, expect_size: int | None = None,
                      sink: Callable[[bytes], Awaitable[None]] | None = None,
                      ) -> tuple[Any, bytes | None]:
        """One request on a fresh stream; returns (reply, bulk data of a ShareData reply).
        ``Error`` replies raise ``PeerRefused``; network trouble raises ProtocolError. With
        ``expect_size``, a ShareData announcing any other size raises MeshError before a
        byte of its body is taken (a holder must not make us buffer what we never stored).
        With ``sink``, a ShareData body is handed to it as it arrives (data None; a
        TransferError after the last piece means the sink must forget what it got).

        A holder named ``target:NAME`` is a storage target of this node: its
        ``TargetHolder`` answers in this process (node/runtime/targethost.py), with the
        same replies and errors; one that cannot be used now raises ``TargetDown`` (a
        ``MeshError``), as an unreachable peer would."""
        if peer.startswith(TARGET_PREFIX):
            th = await self.target(peer)
            if bulk is not None and not isinstance(bulk, (bytes, bytearray, memoryview)):
                bulk = b"".join(bulk)  # a share in parts (header, payload view): one object
            reply, data = await th.request(msg, bulk=bulk, timeout=timeout, expect_size=expect_size)
            if sink is not None and data is not None:
                await sink(data)
                data = None
            return reply, data
        entry = self.book.get(peer)
        addrs = entry.addrs if entry else []
        t = timeout or self.timeout
        stream = await self.host.open_stream(peer, SHARE_PROTOCOL, addrs=addrs, timeout=t)
        big = isinstance(msg, m.AuditShare)  # an audit answer carries a whole block
        ch = Channel(stream, timeout=t, max_frame=m.AUDIT_MAX_FRAME if big else 1 << 20)
        try:
            await ch.send(msg)
            if bulk is None:
                reply = await ch.receive()
            else:
                # The holder may refuse on the header alone (quota) without reading the
                # bytes: read its answer while sending, and stop sending once it came.
                reply = await self._send_while_reading(ch, bulk)
            data = None
            if isinstance(reply, m.ShareData):
                if expect_size is not None and reply.size != expect_size:
                    raise MeshError(f"peer {short(peer)} announced {reply.size} bytes, the recorded "
                                    f"size is {expect_size}")
                if sink is not None:
                    await ch.receive_bulk_to(reply.size, reply.digest, sink)
                else:
                    data = await ch.receive_bulk(reply.size, reply.digest)
            elif isinstance(reply, m.Error):
                raise PeerRefused(peer, reply.code, reply.message, reply.retryable)
            return reply, data
        finally:
            with trio.move_on_after(2):
                await ch.aclose()

    @staticmethod
    async def _send_while_reading(ch: Channel, bulk: bytes | memoryview | Sequence[bytes | memoryview]) -> Any:
        box: list[Any] = []
        sent = trio.Event()
        parts = [bulk] if isinstance(bulk, (bytes, bytearray, memoryview)) else list(bulk)

        async def send() -> None:
            try:
                for part in parts:
                    await ch.send_bulk(part)
            except ProtocolError:
                if not box:  # broke before any answer: let the reader see why
                    raise
            sent.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                box.append(await ch.receive())
                if not isinstance(box[0], m.Error):
                    await sent.wait()  # an Ok is only sent after every byte arrived
                nursery.cancel_scope.cancel()
        except* ProtocolError as group:
            # One peer, one failure: callers handle a plain ProtocolError.
            raise _first_leaf(group) from None
        return box[0]

    async def candidates(self) -> tuple[list[Candidate], list[str]]:
        """Trusted peers and storage targets that answer a capacity request now,
        weighted by what they can take for us; and those that did not answer. Holders
        evicted or counted lost (``shunned``) are not asked: they get no new shares."""
        shun = await trio.to_thread.run_sync(self.shunned)
        trusted = [p for p in self.trusted() if p != self.peer_id and p not in shun]
        found: list[Candidate] = []
        missing: list[str] = []

        async def ask(peer: str) -> None:
            try:
                reply, _ = await self.request(peer, m.Capacity(), timeout=min(self.timeout, 5.0))
            except (ProtocolError, MeshError) as exc:
                log.info("peer %s not available: %s", short(peer), exc)
                missing.append(peer)
                return
            cap = min(reply.free, reply.quota_left)
            entry = self.book.get(peer)
            found.append(Candidate(peer, cap, tuple(entry.domains) if entry else ()))
            await trio.to_thread.run_sync(self.book.seen, peer)
        async def ask_target(holder: str) -> None:
            try:
                reply, _ = await self.request(holder, m.Capacity(), timeout=min(self.timeout, 5.0))
            except (ProtocolError, MeshError) as exc:
                log.info("%s not available: %s", holder, exc)
                self.target_trouble[holder] = f"{exc}" + (f" ({exc.hint})" if getattr(exc, "hint", "") else "")
                missing.append(holder)
                return
            self.target_trouble.pop(holder, None)
            # A target is a failure domain of its own, at the most general level: no
            # peer's site or host, nor another target, shares it.
            found.append(Candidate(holder, min(reply.free, reply.quota_left), (holder,)))
        targets = [s.holder for s in await trio.to_thread.run_sync(self.targets) if s.holder not in shun]
        async with trio.open_nursery() as nursery:
            for p in trusted:
                nursery.start_soon(ask, p)
            for t in targets:
                nursery.start_soon(ask_target, t)
        found.sort(key=lambda c: c.peer)
        return found, sorted(missing)

    async def upload(self, read_pack: Callable[[bytes], bytes], packs: Sequence[bytes],
                     k: int, n: int, candidates: list[Candidate],
                     progress: Progress | None = None) -> UploadReport:
        """Code each pack into n shares and put them on n distinct peers, in parallel with
        at most ``uploads_in_flight`` packs in memory at once (back-pressure)."""
        report = UploadReport()
        t0 = time.monotonic()
        limit = trio.Semaphore(self.uploads_in_flight)

        async def one(pack: bytes) -> None:
            async with limit:
                res = await self._upload_pack(read_pack, pack, k, n, candidates, report)
                await in_coder(heap.trim)  # its pack and shares are freed: their pages go back
                report.packs.append(res)
                if progress is not None:
                    progress.done += 1
        async with trio.open_nursery() as nursery:
            for p in packs:
                nursery.start_soon(one, p)
        report.seconds = time.monotonic() - t0
        return report

    async def upload_stream(self, read_pack: Callable[[bytes], bytes],
                            next_pack: Callable[[], Awaitable[bytes | None]], k: int, n: int,
                            candidates: list[Candidate], report: UploadReport,
                            placed: Callable[[PackResult], Awaitable[None]] | None = None,
                            in_flight: int = 0) -> None:
        """Upload packs as ``next_pack`` hands them over (None: no more), at most
        ``in_flight`` (default ``uploads_in_flight``) at once: the next one is asked for
        only when one of those is done, so a slow holder holds back whoever feeds
        ``next_pack``. ``report`` fills as packs finish (its ``first_put``/``last_ack``
        span the uploads); ``placed`` hears of each."""
        limit = trio.Semaphore(in_flight or self.uploads_in_flight)

        async def one(pack: bytes) -> None:
            try:
                res = await self._upload_pack(read_pack, pack, k, n, candidates, report)
                # Its pack and shares are freed: their pages go back (node/runtime/heap.py).
                await in_coder(heap.trim)
                report.packs.append(res)
                if placed is not None:
                    await placed(res)
            finally:
                limit.release()
        async with trio.open_nursery() as nursery:
            while True:
                await limit.acquire()
                pack = await next_pack()
                if pack is None:
                    limit.release()
                    break
                if report.first_put is None:
                    report.first_put = time.monotonic()
                nursery.start_soon(one, pack)
        if report.first_put is not None:
            report.last_ack = time.monotonic()

    async def _upload_pack(self, read_pack: Callable[[bytes], bytes], pack: bytes, k: int, n: int,
                           candidates: list[Candidate], report: UploadReport) -> PackResult:
        data = await trio.to_thread.run_sync(read_pack, pack)
        try:
            shares: list[CodedShare | None] = await in_coder(code_pack, data, k, n, pack)
        except LocalPackDamaged:
            # The local copy rotted. One damaged pack must not fail every backup from now
            # on (found by the chaos campaign): its shares already on holders rebuild it;
            # without enough of them it stays unplaced (the backup reports it degraded,
            # `check` names the damage).
            try:
                data = bytes(await self.fetch(pack))
            except MeshError as exc:
                log.error("local pack %s does not match its id and cannot be rebuilt from holders (%s); "
                          "run `corestate check`", pack.hex()[:12], exc)
                return PackResult(pack, k, n, 0, [f"local copy damaged: {exc}"])
            log.warning("local pack %s does not match its id: its shares on holders rebuilt it",
                        pack.hex()[:12])
            shares = await in_coder(code_pack, data, k, n, pack)
        del data  # the data shares' payloads are views of it: it goes with the last of them
        prior = self.ledger.get(pack)
        self.ledger.begin_pack(pack, k, n, sum(s.size for s in shares if s) // n * k)
        have: dict[int, str] = {}
        if prior is not None and (prior.k, prior.n) == (k, n):
            for row in prior.shares:
                have.setdefault(row.index, row.peer)
        live = [c for c in candidates if c.peer != self.peer_id]
        plan = place(pack, n, live, exclude={self.peer_id})
        peers: list[str | None] = list(plan.peers) + [None] * (n - len(plan.peers))
        for i, p in have.items():
            peers[i] = p
        result = PackResult(pack, k, n, 0)
        tried: set[str] = set()

        async def put(i: int) -> None:
            peer = peers[i]
            while peer is not None:
                if i in have and have[i] == peer:
                    return  # acknowledged in an earlier run
                tried.add(peer)
                share = shares[i]
                assert share is not None
                t = time.monotonic()
                try:
                    await self._put_coded(peer, pack, share)
                except (ProtocolError, MeshError) as exc:
                    result.failures.append(f"share {i} -> {short(peer)}: {exc}")
                    log.info("put share %d of %s to %s failed: %s", i, pack.hex()[:12], short(peer), exc)
                    peer = replace(pack, peers, i, live, exclude={self.peer_id, *tried})
                    peers[i] = peer
                    continue
                report.put_latencies.append(time.monotonic() - t)
                report.share_bytes += share.size
                shares[i] = None  # acknowledged: its bytes may go
                return
        async with trio.open_nursery() as nursery:
            for i in range(n):
                if peers[i] is not None:
                    nursery.start_soon(put, i)
        final = self.ledger.get(pack)
        result.placed = final.placed if final else 0
        return result

    async def fetch(self, pack: bytes, *, rate: RateLimiter | None = None,
                    mapped: bool = False) -> bytes | bytearray | memoryview:
        """Rebuild a pack from its holders: data shares first, each share checked against
        the root recorded at upload; corrupt or missing holders are excluded (and named
        in an alert) and the next tried."""
        coded = self.ledger.get(pack)
        if coded is None or not coded.shares:
            raise MeshError(f"pack {pack.hex()[:16]}: no record of where its shares went",
                            hint="the share ledger of this home is missing it; see `corestate check`")
        return await self.fetch_rows(pack, coded.k, coded.shares, coded.owner, rate=rate, mapped=mapped)

    async def fetch_rows(self, pack: bytes, k: int, rows: Sequence[ShareRow], owner: str = "", *,
                         rate: RateLimiter | None = None,
                         mapped: bool = False) -> bytes | bytearray | memoryview:
        """:meth:`fetch` from the holders ``rows`` name (filed under ``owner``; "" = us):
        a member repairing another owner's pack reads the rows from the catalog.

        With a systematic code the data shares' payloads, in order, are the pack: each
        data share's body is received straight into its place in one buffer of the
        pack's size (no other copy of it is made), checked against its recorded root,
        and the pack is that buffer once all k data shares came. Only when a data
        share could not be had are parity shares fetched (each into its own buffer)
        and the pack decoded. Either way the result must hash to the pack's id.

        ``mapped``: the buffer is an anonymous memory map of its own and the pack a
        memoryview of it, for callers that hold many packs for a short while (a
        restore's waves): unmapped, its memory goes back to the system the moment the
        last view of it goes, instead of staying in the heap as a freed 16 MiB block."""
        # Data shares first: with a systematic code they are the pack itself.
        queue: list[ShareRow] = sorted(rows, key=lambda r: (r.index >= k, r.index))
        roots = {r.index: r.root for r in rows}
        size = max((r.size for r in rows), default=0)
        payload = max(0, size - sharefmt.HEADER_SIZE)
        out: bytearray | mmap.mmap = (mmap.mmap(-1, max(1, k * payload), flags=mmap.MAP_PRIVATE)
                                      if mapped else bytearray(k * payload))
        view = memoryview(out)
        heads: dict[int, sharefmt.ShareHeader] = {}  # data shares in ``out``, checked
        whole: dict[int, bytes | bytearray] = {}  # other shares, whole, checked
        problems: list[str] = []
        busy: set[int] = set()
        lock = trio.Lock()

        async def worker() -> None:
            while True:
                async with lock:
                    if len(heads) + len(whole) + len(busy) >= k:
                        return
                    row = next((r for r in queue if r.index not in heads and r.index not in whole
                                and r.index not in busy), None)
                    if row is None:
                        return
                    queue.remove(row)
                    busy.add(row.index)
                try:
                    if rate is not None:
                        await rate.take(row.size)
                    if row.index < k and row.size == size:
                        slot = view[row.index * payload:(row.index + 1) * payload]
                        hdr = await self._fetch_share(row, problems, owner, slot)
                        if hdr is not None:
                            heads[row.index] = hdr
                    else:
                        got = await self._fetch_share_whole(row, problems, owner)
                        if got is not None:
                            whole[row.index] = got
                finally:
                    busy.discard(row.index)
        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(worker)
        if len(heads) + len(whole) < k:
            raise MeshError(
                f"pack {pack.hex()[:16]}: only {len(heads) + len(whole)} of the {k} shares needed "
                "could be fetched" + (" (" + "; ".join(problems[:6]) + ")" if problems else ""),
                hint="bring more of the holders back online (`corestate peer list`) and retry",
                retryable=True)
        data: bytes | bytearray | memoryview
        if len(heads) == k:
            lengths = {h.data_length for h in heads.values()}
            if len(lengths) != 1 or lengths.pop() > len(out):
                raise MeshError(f"pack {pack.hex()[:16]}: its data shares disagree on its length")
            length = heads[0].data_length
            if isinstance(out, mmap.mmap):
                data = view[:length]
            else:
                try:
                    view.release()  # the slots were its slices, all gone with the workers
                    del out[length:]  # the code's padding: a resize in place, not a copy
                    data = out
                except BufferError:  # a slice still lives somewhere: copy rather than fail
                    data = bytes(memoryview(out)[:length])
        else:
            shares: list[bytes | bytearray] = list(whole.values())
            for i, hdr in heads.items():
                shares.append(hdr.to_bytes() + bytes(view[i * payload:(i + 1) * payload]))
            del view, out
            try:
                restored = await in_coder(functools.partial(
                    sharefmt.decode_shares, shares, pack_id=pack, roots=roots, threads=1))
            except NotEnoughShares as exc:
                raise MeshError(f"pack {pack.hex()[:16]}: {exc}", retryable=True)
            del shares
            data = restored.data
        digest = await trio.to_thread.run_sync(lambda: blake3.blake3(data).digest())
        if digest != pack:
            raise MeshError(f"pack {pack.hex()[:16]}: decoded bytes do not match its id")
        return data

    def _share_problem(self, row: ShareRow, exc: CorruptShare, problems: list[str]) -> None:
        problems.append(f"share {row.index} from {short(row.peer)} is corrupt: {exc.reason}")
        self.events.publish("alert", what="corrupt-share", peer=row.peer, pack=row.pack.hex(),
                            index=row.index, reason=exc.reason)
        log.warning("peer %s returned a corrupt share %d of %s: %s",
                    row.peer, row.index, row.pack.hex()[:12], exc.reason)

    async def _receive_share(self, row: ShareRow, owner: str,
                             sink: Callable[[bytes], Awaitable[None]]) -> None:
        """The share ``row`` names, its ``row.size`` bytes handed to ``sink`` in order (from
        this node's own vault when it holds it for ``owner``)."""
        if row.peer == self.peer_id and owner:
            # A member repairing another owner's pack holds one of its shares itself.
            data = await trio.to_thread.run_sync(self.vault.get, owner, row.pack, row.index)
            if len(data) != row.size:
                raise MeshError(f"own copy of share {row.index} is {len(data)} bytes, "
                                f"the recorded size is {row.size}")
            await sink(data)
            return
        await self.request(row.peer, m.GetShare(pack=row.pack, index=row.index, offset=0, length=-1,
                                                owner=owner), expect_size=row.size, sink=sink)

    async def _fetch_share(self, row: ShareRow, problems: list[str], owner: str,
                           slot: memoryview) -> sharefmt.ShareHeader | None:
        """Fetch data share ``row``: its header returned, its payload into ``slot`` (of
        the payload's size), checked against the recorded root; None (and the reason in
        ``problems``) when it could not be had."""
        head = bytearray()
        pos = 0

        async def fill(piece: bytes) -> None:
            nonlocal pos
            cut = max(0, sharefmt.HEADER_SIZE - len(head))
            if cut:
                head.extend(piece[:cut])
                piece = piece[cut:]
            slot[pos:pos + len(piece)] = piece
            pos += len(piece)

        def check() -> sharefmt.ShareHeader:
            hdr = sharefmt.read_header(head)
            if hdr.index != row.index:
                raise CorruptShare(hdr.index, f"expected share {row.index}, got share {hdr.index}")
            if hdr.pack_id != row.pack:
                raise CorruptShare(hdr.index, "belongs to another pack")
            if hdr.root != row.root:
                raise CorruptShare(hdr.index, "root differs from the one recorded at upload")
            if hdr.payload_length != len(slot):
                raise CorruptShare(hdr.index, f"payload of {hdr.payload_length} bytes, {len(slot)} expected")
            if sharefmt.compute_root(hdr, slot) != hdr.root:
                raise CorruptShare(hdr.index, "payload or header does not match the share root")
            return hdr

        try:
            await self._receive_share(row, owner, fill)
            if pos != len(slot):
                raise MeshError(f"share {row.index}: {pos} payload bytes of {len(slot)} arrived")
            return await trio.to_thread.run_sync(check)
        except CorruptShare as exc:
            self._share_problem(row, exc, problems)
        except (ProtocolError, MeshError, ShareNotFound) as exc:
            problems.append(f"share {row.index} from {short(row.peer)}: {exc}")
        return None

    async def _fetch_share_whole(self, row: ShareRow, problems: list[str],
                                 owner: str) -> bytearray | None:
        """Fetch share ``row`` whole into a buffer of its recorded size, checked against
        the recorded root; None (and the reason in ``problems``) when it could not be had."""
        buf = bytearray(row.size)
        pos = 0

        async def fill(piece: bytes) -> None:
            nonlocal pos
            buf[pos:pos + len(piece)] = piece
            pos += len(piece)

        try:
            await self._receive_share(row, owner, fill)
            if pos != row.size:
                raise MeshError(f"share {row.index}: {pos} bytes of {row.size} arrived")
            await trio.to_thread.run_sync(functools.partial(
                sharefmt.verify_share, buf, root=row.root, pack_id=row.pack, index=row.index))
        except CorruptShare as exc:
            self._share_problem(row, exc, problems)
            return None
        except (ProtocolError, MeshError, ShareNotFound) as exc:
            problems.append(f"share {row.index} from {short(row.peer)}: {exc}")
            return None
        return buf

    async def survey(self, packs: Sequence[bytes], *, audit: bool = True,
                     rng: random.Random | None = None,
                     per_holder: dict[tuple[bytes, int, str], Verdict] | None = None,
                     ) -> dict[bytes, dict[int, Verdict]]:
        """Ask every holder which shares it has (HAS) and, with ``audit``, prove one block
        of each (AUDIT against the recorded root). Returns, per pack, share index -> its
        verdict (the best over its holders); ``per_holder``, when given, gets each
        (pack, index, holder)'s. The judging is node/core/repair.py's.

        The audited block is drawn from ``rng``, by default the system's CSPRNG: a holder
        that could predict it could keep only the blocks that will be asked for."""
        coded = {p: self.ledger.get(p) for p in packs}
        by_peer: dict[str, list[ShareRow]] = {}
        for c in coded.values():
            if c is not None:
                for r in c.shares:
                    by_peer.setdefault(r.peer, []).append(r)
        verdicts: dict[bytes, dict[int, Verdict]] = {p: {} for p in packs}
        pick = rng or random.SystemRandom()

        def mark(row: ShareRow, verdict: Verdict) -> None:
            if per_holder is not None:
                per_holder[(row.pack, row.index, row.peer)] = verdict
            verdicts[row.pack][row.index] = best(verdicts[row.pack].get(row.index), verdict)

        async def ask(peer: str, rows: list[ShareRow]) -> None:
            sizes: list[int] = []
            try:
                for i in range(0, len(rows), 4096):
                    part = rows[i:i + 4096]
                    reply, _ = await self.request(peer, m.HasShares(items=[[r.pack, r.index] for r in part]))
                    sizes.extend(reply.sizes)
            except (ProtocolError, MeshError):
                for r in rows:
                    mark(r, judge_share(r.size, None))
                return
            if len(sizes) != len(rows):
                sizes = [-1] * len(rows)  # a confused holder: count its shares as missing
            for r, size in zip(rows, sizes, strict=True):
                if size != r.size or not audit:
                    mark(r, judge_share(r.size, size))
                    continue
                blocks = share_blocks(r.size, sharefmt.HEADER_SIZE, sharefmt.DEFAULT_BLOCK_SIZE)
                block = audit_block(blocks, pick)
                try:
                    reply, _ = await self.request(peer, m.AuditShare(pack=r.pack, index=r.index, block=block))
                except PeerRefused:
                    mark(r, judge_share(r.size, size, Audit.REFUSED))
                    continue
                except (ProtocolError, MeshError):
                    mark(r, judge_share(r.size, size, Audit.UNREACHABLE))
                    continue
                proved = sharefmt.verify_proof(r.root, block, reply.proof)
                verdict = judge_share(r.size, size, Audit.PROVED if proved else Audit.FAILED)
                mark(r, verdict)
                if verdict is Verdict.CORRUPT:
                    self.events.publish("alert", what="failed-audit", peer=peer, pack=r.pack.hex(), index=r.index)
        async with trio.open_nursery() as nursery:
            for peer, rows in by_peer.items():
                nursery.start_soon(ask, peer, rows)
        return verdicts

    async def audit_round(self, challenges: Sequence[Challenge], rows: dict[tuple[bytes, int, str], ShareRow],
                          peers: Sequence[str]) -> tuple[list[tuple[Challenge, bool, str]], set[str], set[str]]:
        """One audit round (node/core/holders.py planned it): each holder in ``peers`` is
        asked HAS for every share ``rows`` records on it (an answer proves it is there; a
        share it says it lacks is a failed audit), then its ``challenges``: a spot check
        asks AUDIT for one block and checks the Merkle path against the root recorded at
        upload; a whole-share check GETs the share and verifies every block against it.
        Returns (challenge or HAS finding, passed, what), the peers that answered, and the
        peers that did not. Holders are asked in parallel, each one's requests in turn."""
        found: list[tuple[Challenge, bool, str]] = []
        answered: set[str] = set()
        silent: set[str] = set()
        by_peer: dict[str, list[Challenge]] = {p: [] for p in peers}
        for ch in challenges:
            by_peer.setdefault(ch.share.peer, []).append(ch)
        held: dict[str, list[ShareRow]] = {}
        for key, row in rows.items():
            held.setdefault(key[2], []).append(row)

        async def one(peer: str, todo: list[Challenge]) -> None:
            mine = sorted(held.get(peer, []), key=lambda r: (r.pack, r.index))
            try:
                sizes: list[int] = []
                if not mine:  # a holder of nothing of ours now (counted lost): is it back?
                    await self.request(peer, m.Capacity(), timeout=min(self.timeout, 10.0))
                for i in range(0, len(mine), 4096):
                    part = mine[i:i + 4096]
                    reply, _ = await self.request(peer, m.HasShares(items=[[r.pack, r.index] for r in part]),
                                                  timeout=min(self.timeout, 10.0))
                    sizes.extend(reply.sizes)
            except PeerRefused:
                answered.add(peer)  # it is there, but will not say: the challenges will tell
                sizes = [r.size for r in mine]
            except (ProtocolError, MeshError):
                silent.add(peer)
                return
            answered.add(peer)
            gone: set[tuple[bytes, int]] = set()
            if len(sizes) == len(mine):
                for r, size in zip(mine, sizes, strict=True):
                    if size != r.size:
                        gone.add((r.pack, r.index))
                        ref = ShareRef(r.pack, r.index, peer, 0)
                        found.append((Challenge(ref, None, "presence"), False,
                                      f"share {r.index} of {r.pack.hex()[:12]}: holder says it has none"))
            for c in todo:
                if (c.share.pack, c.share.index) in gone:
                    continue
                row = rows.get(c.share.key)
                if row is None:
                    continue
                what = f"share {row.index} of {row.pack.hex()[:12]}"
                try:
                    if c.block is not None:
                        reply, _ = await self.request(peer, m.AuditShare(pack=row.pack, index=row.index, block=c.block))
                        ok = sharefmt.verify_proof(row.root, c.block, reply.proof)
                        found.append((c, ok, f"{what} block {c.block}" + ("" if ok else ": proof does not check")))
                    else:
                        _, data = await self.request(peer, m.GetShare(pack=row.pack, index=row.index, offset=0,
                                                                      length=-1), expect_size=row.size)
                        assert data is not None
                        try:
                            sharefmt.verify_share(data, root=row.root, pack_id=row.pack, index=row.index)
                            found.append((c, True, f"{what} whole"))
                        except CorruptShare as exc:
                            found.append((c, False, f"{what} whole: {exc.reason}"))
                except PeerRefused as exc:
                    if exc.code in ("not-found", "bad-block"):
                        found.append((c, False, f"{what}: {exc.code}"))
                    # busy and the like: no finding either way
                except (ProtocolError, MeshError, AssertionError):
                    silent.add(peer)
                    return
        async with trio.open_nursery() as nursery:
            for peer, todo in by_peer.items():
                nursery.start_soon(one, peer, todo)
        for c, ok, _ in found:
            if not ok:
                self.events.publish("alert", what="failed-audit", peer=c.share.peer, pack=c.share.pack.hex(),
                                    index=c.share.index)
        return found, answered, silent - answered

    async def probe_foreign(self, rows: Sequence[ShareRow], owner: str) -> dict[tuple[bytes, int, str], Verdict]:
        """Whether each holder in ``rows`` still has its share of ``owner``'s pack (a member
        looking after an absent owner): a GET of the share's header, which an honest holder
        serves only after verifying the whole share against its root, compared with the
        root recorded in the catalog. Holders are asked in parallel, each in turn."""
        out: dict[tuple[bytes, int, str], Verdict] = {}
        by_peer: dict[str, list[ShareRow]] = {}
        for r in rows:
            by_peer.setdefault(r.peer, []).append(r)

        def held_here(r: ShareRow) -> Verdict:
            try:
                with self.vault.open_share(owner, r.pack, r.index, 0, sharefmt.HEADER_SIZE) as held:
                    header = held.read(sharefmt.HEADER_SIZE)
            except ShareNotFound:
                return Verdict.MISSING
            return Verdict.OK if sharefmt.read_header(header).root == r.root else Verdict.CORRUPT

        async def one(peer: str, mine: list[ShareRow]) -> None:
            for r in mine:
                key = (r.pack, r.index, r.peer)
                if peer == self.peer_id:  # this member holds it itself: its own vault says
                    out[key] = await trio.to_thread.run_sync(held_here, r)
                    continue
                try:
                    _, data = await self.request(peer, m.GetShare(pack=r.pack, index=r.index, offset=0,
                                                                  length=sharefmt.HEADER_SIZE, owner=owner),
                                                 timeout=min(self.timeout, 10.0))
                    ok = data is not None and sharefmt.read_header(data).root == r.root
                    out[key] = Verdict.OK if ok else Verdict.CORRUPT
                except PeerRefused as exc:
                    out[key] = Verdict.MISSING if exc.code == "not-found" else Verdict.UNREACHABLE
                except (ProtocolError, MeshError):
                    for rest in mine:
                        out.setdefault((rest.pack, rest.index, rest.peer), Verdict.UNREACHABLE)
                    return
                except CoreStateError:  # a header that does not parse
                    out[key] = Verdict.CORRUPT
        async with trio.open_nursery() as nursery:
            for peer, mine in by_peer.items():
                nursery.start_soon(one, peer, mine)
        return out

    async def ping(self, peer: str, timeout: float = 5.0) -> bool:
        """Whether ``peer`` answers a capacity request now (noted in the address book)."""
        try:
            await self.request(peer, m.Capacity(), timeout=min(self.timeout, timeout))
        except (ProtocolError, MeshError):
            return False
        if not peer.startswith(TARGET_PREFIX):
            await trio.to_thread.run_sync(self.book.seen, peer)
        return True

    async def _put_share(self, peer: str, pack: bytes, index: int, share: bytes, *, owner: str = "") -> None:
        """PUT one share; record it in the ledger once the holder acknowledged it (only
        for this node's own packs: a share put for another ``owner`` is recorded by the
        caller, in the catalog)."""
        await self.request(peer, m.PutShare(pack=pack, index=index, size=len(share),
                                            digest=blake3.blake3(share).digest(), owner=owner), bulk=share)
        if not owner:
            self.ledger.record_share(pack, index, peer, sharefmt.read_header(share).root, len(share))

    async def _put_coded(self, peer: str, pack: bytes, share: CodedShare) -> None:
        """PUT one share of this node's own pack, coded by ``code_pack``; record it in
        the ledger once the holder acknowledged it."""
        await self.request(peer, m.PutShare(pack=pack, index=share.index, size=share.size,
                                            digest=share.digest), bulk=share.parts)
        self.ledger.record_share(pack, share.index, peer, share.root, share.size)

    async def rebuild(self, pack: bytes, data: bytes, k: int, n: int, indexes: Sequence[int],
                      holders: Sequence[tuple[int, str]], candidates: list[Candidate],
                      *, rate: RateLimiter | None = None, owner: str = "",
                      roots: dict[int, bytes] | None = None) -> dict[int, str]:
        """Make shares ``indexes`` of ``pack`` (whose bytes are ``data``) and put each on a
        peer that holds no other share of it, the next-ranked one after a refusal. Returns
        index -> new holder for the shares acknowledged (each recorded in the ledger, or,
        for another ``owner``'s pack, filed under it by the holder and its root put in
        ``roots`` for the caller's catalog record)."""
        if blake3.blake3(data).digest() != pack:
            raise MeshError(f"pack {pack.hex()[:16]}: its bytes do not match its id")
        shares = await in_coder(functools.partial(sharefmt.make_shares, data, k, n, pack_id=pack, threads=1))
        live = [c for c in candidates if c.peer != self.peer_id]
        peers: list[str | None] = [None] * n
        for i, peer in holders:
            peers[i] = peer
        placed: dict[int, str] = {}
        tried: set[str] = set()
        lock = trio.Lock()

        async def put(i: int) -> None:
            while True:
                async with lock:  # one choice at a time: two indexes never pick one peer
                    peer = replace(pack, peers, i, live, exclude={self.peer_id, *tried})
                    peers[i] = peer
                    if peer is None:
                        return
                    tried.add(peer)
                try:
                    if rate is not None:
                        await rate.take(len(shares[i]))
                    await self._put_share(peer, pack, i, shares[i], owner=owner)
                except (ProtocolError, MeshError) as exc:
                    log.info("repair: share %d of %s to %s failed: %s", i, pack.hex()[:12], short(peer), exc)
                    continue
                placed[i] = peer
                if roots is not None:
                    roots[i] = sharefmt.read_header(shares[i]).root
                return
        async with trio.open_nursery() as nursery:
            for i in indexes:
                nursery.start_soon(put, i)
        return placed

    async def delete_share(self, peer: str, pack: bytes, index: int) -> None:
        nonce = os.urandom(16)
        sig = self.signer.sign(m.delete_signing_bytes(peer, pack, index, nonce)).signature
        await self.request(peer, m.DeleteShare(pack=pack, index=index, holder=peer, nonce=nonce, signature=sig))
        self.ledger.forget(pack, index, peer)

    # -- reading parts of a pack -------------------------------------------------------

    async def open_view(self, pack: bytes, head: int = 0) -> tuple[PackView, bytes]:
        """Where ``pack``'s bytes lie in its data shares, and its first ``head`` bytes.

        One ranged GET of data share 0: its share header (checked against the root
        recorded at upload, so the lengths it states are the ones the owner coded) and the
        start of its payload, which with a systematic code is the start of the pack. The
        bytes of a range are checked in transit only (the share's Merkle root covers the
        whole share): what a caller reads must authenticate itself (a pack's sealed
        header does). Raises ``MeshError`` when no holder of share 0 answers."""
        coded = self.ledger.get(pack)
        if coded is None or not coded.shares:
            raise MeshError(f"pack {pack.hex()[:16]}: no record of where its shares went")
        rows: dict[int, list[ShareRow]] = {}
        for r in coded.shares:
            if r.index < coded.k:
                rows.setdefault(r.index, []).append(r)
        payload = max((r.size for r in coded.shares), default=0) - sharefmt.HEADER_SIZE
        want = sharefmt.HEADER_SIZE + max(0, min(head, payload))
        data = await self._get_range(pack, rows, 0, 0, want, coded.owner)
        try:
            hdr = sharefmt.read_header(data)
        except CorruptShare as exc:
            raise MeshError(f"pack {pack.hex()[:16]}: share 0 header unreadable: {exc.reason}")
        recorded = {r.root for r in rows.get(0, [])}
        if (hdr.pack_id != pack or hdr.index != 0 or hdr.k != coded.k or hdr.root not in recorded
                or hdr.payload_length != payload):
            raise MeshError(f"pack {pack.hex()[:16]}: share 0 header does not match the ledger")
        view = PackView(pack, coded.k, hdr.data_length, payload, rows, coded.owner)
        return view, bytes(data[sharefmt.HEADER_SIZE:])

    async def read_view(self, view: PackView, start: int, end: int) -> bytes:
        """Bytes ``start .. end`` of the pack, read by ranged GETs of the data shares that
        hold them (the holder sends only those bytes)."""
        if not 0 <= start <= end <= view.size:
            raise ValueError(f"range {start}..{end} outside a pack of {view.size} bytes")
        parts: list[bytes] = []
        L = view.payload
        pos = start
        while pos < end:
            i = pos // L
            hi = min(end, (i + 1) * L)
            parts.append(await self._get_range(view.pack, view.rows, i, sharefmt.HEADER_SIZE + pos - i * L,
                                               hi - pos, view.owner))
            pos = hi
        return b"".join(parts)

    async def _get_range(self, pack: bytes, rows: dict[int, list[ShareRow]], index: int, offset: int,
                         length: int, owner: str) -> bytes:
        problems: list[str] = []
        for row in rows.get(index, []):
            try:
                _, data = await self.request(row.peer, m.GetShare(pack=pack, index=index, offset=offset,
                                                                  length=length, owner=owner),
                                             expect_size=length)
            except (ProtocolError, MeshError) as exc:
                problems.append(f"{short(row.peer)}: {exc}")
                continue
            assert data is not None
            return data
        raise MeshError(f"pack {pack.hex()[:16]}: no holder of data share {index} answered"
                        + (" (" + "; ".join(problems[:4]) + ")" if problems else ""), retryable=True)
