"""The group over the network: sync (``/corestate/sync/2``), invites (``/corestate/join/2``),
anti-entropy, and what members tell each other about themselves.

Role: carries ``protocol/group.py`` messages between ``GroupNode`` replicas. Invariants:

- the sync service reads nothing from a peer that is not a member of the group (the
  PeerID is the one Noise authenticated) and answers it with ``Error`` ``refused``; the
  join service reads at most ``STRANGER_MAX_FRAME`` bytes (one ``JoinRequest``) from a
  peer that is not a member, under a short timeout;
- frames from members are decoded, and what they carry applied, in a worker thread, never
  on the event loop (the control socket and every other service stay responsive);
- concurrent sync and join streams are bounded (in total and per peer); past the bound a
  peer is told ``busy`` (retryable) at once;
- a peer speaking an earlier version of either protocol is told so (``Error`` code
  ``version``), not left waiting;
- every await on a peer is under the channel's timeout.

Anti-entropy: every ``interval`` seconds the node syncs with up to three random members;
a local write (a backup's catalog entries) triggers a push round to every member at once.
When and with whom is the scheduler core's decision (node/core/scheduler.py): the daemon's
scheduler drives it (``on_kick`` routes kicks there); ``run`` drives a scheduler of its own
for a host without a daemon (the test kit).
Each member advertises its listen addresses in its own partition (``records.AddressAdvert``), so
members find each other without a coordinator.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import trio
from corestate.node.core import records
from corestate.node.core import scheduler as sched
from corestate.node.group import GroupError, GroupNode
from corestate.node.peers import AddressBook, split_peer_addr
from corestate.protocol import group as gw
from corestate.protocol import messages as m
from corestate.protocol.errors import ProtocolError
from corestate.protocol.streams import Channel, Host, Stream

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.group")
MAX_SYNC_STREAMS = 8  # served at once, all members together
MAX_SYNC_PER_PEER = 2
MAX_JOIN_STREAMS = 4  # strangers redeeming invites, at once
STRANGER_TIMEOUT = 5.0  # for a stranger's one small JoinRequest
# Exchanges one sync_with may chain while each says more is left (a page each way).
MAX_EXCHANGES = 256


class GroupService:
    def __init__(self, host: Host, group: GroupNode, book: AddressBook, *, timeout: float = 20.0,
                 interval: float = 20.0, on_change: Any = None, events: Any = None) -> None:
        self.host, self.group, self.book = host, group, book
        self.events = events
        self.timeout, self.interval = timeout, interval
        # Set by a daemon whose scheduler decides the rounds: kicks go there (in the loop).
        self.on_kick: Any = None
        self.on_change = on_change
        self._kick = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._sync_slots = trio.Semaphore(MAX_SYNC_STREAMS)
        self._join_slots = trio.Semaphore(MAX_JOIN_STREAMS)
        self._per_peer: dict[str, int] = {}
        # Decoding and applying group messages: CPU work in threads, two at a time at most
        # (the GroupNode lock serialises the rest anyway).
        self._cpu = trio.CapacityLimiter(2)
        host.set_handler(gw.SYNC_PROTOCOL, self.serve_sync)
        host.set_handler(gw.JOIN_PROTOCOL, self.serve_join)
        for old in gw.OLD_PROTOCOLS:
            host.set_handler(old, self._serve_old_version)

    # -- serving -----------------------------------------------------------------------

    async def _thread(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._cpu)

    async def _decode(self, ch: Channel) -> m.Message | None:
        """The next message of ``ch``, decoded off the event loop; None at a clean end."""
        frame = await ch.receive_frame_or_eof()
        return None if frame is None else await self._thread(gw.decode, frame)

    async def _refuse(self, stream: Stream, code: str, why: str, retryable: bool = False) -> None:
        """Answer ``Error`` without reading anything from the stream, and close it."""
        # The frame limit only bounds what we send here: nothing is ever read.
        ch = Channel(stream, timeout=min(self.timeout, STRANGER_TIMEOUT), max_frame=4096)
        try:
            await ch.send(m.Error(code=code, message=why, retryable=retryable))
        except (ProtocolError, CoreStateError):
            pass
        finally:
            with trio.move_on_after(2):
                await ch.aclose()

    async def _serve_old_version(self, stream: Stream) -> None:
        log.info("peer %s speaks an earlier group protocol: refused", stream.remote_peer[-8:])
        await self._refuse(stream, "version", f"this node speaks {gw.SYNC_PROTOCOL} and "
                           f"{gw.JOIN_PROTOCOL} only: upgrade CoreState on the calling node")

    async def serve_sync(self, stream: Stream) -> None:
        peer = stream.remote_peer
        # Authorise from the Noise-authenticated PeerID before reading a byte.
        if not self.group.is_member(peer):
            log.info("sync from %s refused: not a member", peer[-8:])
            await self._refuse(stream, "refused", "not a member of this group")
            return
        if self._per_peer.get(peer, 0) >= MAX_SYNC_PER_PEER:
            await self._refuse(stream, "busy", "too many sync streams from this peer", retryable=True)
            return
        try:
            self._sync_slots.acquire_nowait()
        except trio.WouldBlock:
            await self._refuse(stream, "busy", "too many sync streams at once", retryable=True)
            return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        ch = Channel(stream, timeout=self.timeout, max_frame=gw.SYNC_MAX_FRAME, decode=gw.decode)
        try:
            msg = await self._decode(ch)
            if not isinstance(msg, gw.SyncOpen):
                raise GroupError("expected a sync request")
            try:
                reply = await self._thread(self.group.sync_reply, peer, msg)
            except (GroupError, CoreStateError) as exc:
                log.info("sync from %s refused: %s", peer[-8:], exc)
                await ch.send(m.Error(code="refused", message=str(exc)[:1000], retryable=False))
                return
            await ch.send(reply)
            await self._thread(self.book.seen, peer)  # it is there (see _exchange)
            push = await self._decode(ch)
            if isinstance(push, gw.SyncPush) and (push.ops or push.catalog):
                verdicts = await self._thread(self.group.sync_absorb, peer, push)
                self._report(peer, verdicts)
                self._learn_addrs()
                if self.on_change is not None:
                    self.on_change()
        except (ProtocolError, GroupError, CoreStateError) as exc:
            log.info("sync with %s ended: %s", peer[-8:], exc)
            if "unsupported version" in str(exc):
                with trio.move_on_after(2):
                    await ch.send(m.Error(code="version", message=str(exc)[:1000], retryable=False))
        finally:
            self._sync_slots.release()
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]
            with trio.move_on_after(2):
                await ch.aclose()

    async def serve_join(self, stream: Stream) -> None:
        peer = stream.remote_peer
        try:
            self._join_slots.acquire_nowait()
        except trio.WouldBlock:
            await self._refuse(stream, "busy", "too many joins at once", retryable=True)
            return
        # A stranger (the usual joiner) may send one JoinRequest and nothing bigger.
        member = self.group.is_member(peer)
        ch = Channel(stream, timeout=self.timeout if member else min(self.timeout, STRANGER_TIMEOUT),
                     max_frame=gw.SYNC_MAX_FRAME if member else gw.STRANGER_MAX_FRAME,
                     decode=gw.decode)
        try:
            msg = await self._decode(ch)
            if not isinstance(msg, gw.JoinRequest):
                raise GroupError("expected a join request")
            try:
                await self._thread(self.group.redeem, peer, msg.group, msg.secret)
            except GroupError as exc:
                log.warning("join by %s refused: %s", peer, exc)
                await ch.send(m.Error(code="refused", message=str(exc)[:1000], retryable=False))
                return
            pages = await self._thread(self.group.join_pages)
            addrs = [f"{e.peer} {a}" for e in self.book.all()
                     if self.group.is_member(e.peer) for a in e.addrs[:2]]
            addrs += [f"{self.host.peer_id} {a.rsplit('/p2p/', 1)[0]}" for a in self.host.addrs()[:4]]
            # Now a member: our replies are as large as a member's (we read nothing more).
            ch.timeout, ch.max_frame = self.timeout, gw.SYNC_MAX_FRAME
            for i, ops in enumerate(pages):
                last = i == len(pages) - 1
                await ch.send(gw.JoinReply(ops=ops, more=not last, addrs=tuple(addrs[:64]) if last else ()))
            log.info("peer %s joined the group", peer)
            self.book.add(peer, [], trusted=True)
            if self.on_change is not None:
                self.on_change()
        except (ProtocolError, CoreStateError) as exc:
            log.info("join by %s ended: %s", peer[-8:], exc)
            if "unsupported version" in str(exc):
                with trio.move_on_after(2):
                    await ch.send(m.Error(code="version", message=str(exc)[:1000], retryable=False))
        finally:
            self._join_slots.release()
            with trio.move_on_after(2):
                await ch.aclose()

    # -- calling -----------------------------------------------------------------------

    async def sync_with(self, peer: str, addrs: list[str] | None = None) -> list[Any]:
        """Exchanges with ``peer`` until neither side has anything left for the other (one
        exchange, three messages, unless a side's backlog is over a message's budget)."""
        verdicts: list[Any] = []
        for _ in range(MAX_EXCHANGES):
            more, got = await self._exchange(peer, addrs)
            verdicts.extend(got)
            if not more:
                break
        return verdicts

    async def _exchange(self, peer: str, addrs: list[str] | None) -> tuple[bool, list[Any]]:
        entry = self.book.get(peer)
        stream = await self.host.open_stream(peer, gw.SYNC_PROTOCOL,
                                             addrs=addrs or (entry.addrs if entry else []),
                                             timeout=self.timeout)
        ch = Channel(stream, timeout=self.timeout, max_frame=gw.SYNC_MAX_FRAME, decode=gw.decode)
        try:
            await ch.send(await self._thread(self.group.sync_open))
            reply = await self._decode(ch)
            if reply is None:
                raise GroupError(f"peer {peer[-8:]} closed the sync stream without an answer")
            if isinstance(reply, m.Error):
                raise GroupError(f"peer {peer[-8:]} refused to sync: {reply.message}")
            if not isinstance(reply, gw.SyncReply):
                raise GroupError("unexpected sync reply")
            push, verdicts, more = await self._thread(self._finish, reply)
            await ch.send(push)
        finally:
            with trio.move_on_after(2):
                await ch.aclose()
        self._report(peer, verdicts)
        self._learn_addrs()
        # It answered: when members last heard of each other tells an owner away
        # (node/core/lease.py) and a holder lost (node/core/holders.py).
        await self._thread(self.book.seen, peer)
        return more, verdicts

    def _finish(self, reply: gw.SyncReply) -> tuple[gw.SyncPush, list[Any], bool]:
        """``sync_finish``, and whether another exchange should follow (a page was cut at its
        budget either way, or the push showed the peer a fork it will answer with its
        evidence), read under the same lock: exchanges with several peers run at once."""
        with self.group._lock:
            push, verdicts = self.group.sync_finish(reply)
            return push, verdicts, not self.group.last_reply_complete

    def _report(self, peer: str, verdicts: list[Any]) -> None:
        """Refused batches are logged; forks (an author signed two histories) and clocks
        far ahead are alerts: kept or clamped, never silently dropped."""
        for v in verdicts:
            if v.kind == "rejected":
                log.warning("catalog batch via %s refused: %s", peer[-8:], v.reason)
            elif v.kind == "fork":
                log.error("FORK in the partition of %s (via %s): %s; both batches kept as evidence",
                          v.author, peer[-8:], v.reason)
                if self.events is not None:
                    self.events.publish("alert", what="catalog-fork", author=v.author, reason=v.reason)
            elif v.kind == "applied" and v.clamped:
                log.warning("catalog batch of %s carries a time far in the future (its clock is "
                            "wrong): clamped", v.author)
                if self.events is not None:
                    self.events.publish("alert", what="clock-ahead", author=v.author)

    async def join(self, invite: Any) -> None:
        """Redeem ``invite`` at its admin; adopt the group's ops and member addresses.

        The token is only a claim: nothing is trusted or saved (no address-book entry for
        its admin, no group) until the admin's answer proves the membership
        (``GroupNode.accept_join``); a forged invite leaves the node as it was."""
        stream = await self.host.open_stream(invite.admin, gw.JOIN_PROTOCOL, addrs=list(invite.addrs),
                                             timeout=self.timeout)
        ch = Channel(stream, timeout=self.timeout, max_frame=gw.SYNC_MAX_FRAME, decode=gw.decode)
        ops: list[bytes] = []
        try:
            await ch.send(gw.JoinRequest(group=invite.group, secret=invite.secret))
            reply = await self._decode(ch)
            # The group's ops come in pages, ``more`` on all but the last.
            while isinstance(reply, gw.JoinReply) and reply.more and len(ops) < (1 << 20):
                ops.extend(reply.ops)
                reply = await self._decode(ch)
        finally:
            with trio.move_on_after(2):
                await ch.aclose()
        if isinstance(reply, m.Error):
            raise GroupError(f"the admin refused the invite: {reply.message}",
                             hint="ask the admin for a new invite")
        if not isinstance(reply, gw.JoinReply):
            raise GroupError("unexpected answer to the join request")
        ops.extend(reply.ops)
        await trio.to_thread.run_sync(self.group.accept_join, invite.group, invite.admin, ops)
        # Proven: the admin and the members the answer names are trusted from here on.
        admin_addrs = []
        for a in invite.addrs:
            try:
                peer, transport = split_peer_addr(a if "/p2p/" in a else f"{a}/p2p/{invite.admin}")
            except CoreStateError:
                continue
            if peer == invite.admin and transport:
                admin_addrs.append(transport)
        self.book.add(invite.admin, admin_addrs, trusted=True)
        for line in reply.addrs:
            peer, _, addr = line.partition(" ")
            if peer == self.group.me or not self.group.is_member(peer):
                continue
            try:
                _, transport = split_peer_addr(f"{addr}/p2p/{peer}")
            except CoreStateError:
                continue
            self.book.add(peer, [transport] if transport else [], trusted=True)

    def _learn_addrs(self) -> None:
        """Members' advertised addresses into the address book (as trusted: members)."""
        for peer in self.group.members():
            if peer == self.group.me:
                continue
            e = self.group.catalog.get(peer, records.ADDRS_KEY)
            addrs: tuple[str, ...] = ()
            if e is not None and e.value:
                try:
                    addrs = records.AddressAdvert.decode(e.value).addrs
                except records.CorruptRecord as exc:
                    log.info("address advert of %s unreadable: %s", peer[-8:], exc)
            clean = []
            for a in addrs:
                try:
                    _, transport = split_peer_addr(a if "/p2p/" in a else f"{a}/p2p/{peer}")
                    clean.append(transport)
                except CoreStateError:
                    continue
            self.book.add(peer, clean, trusted=True)

    def advertise(self) -> None:
        """Write this node's listen addresses into its partition (when they changed)."""
        value = records.AddressAdvert(tuple(a.rsplit("/p2p/", 1)[0] for a in self.host.addrs())).value()
        cur = self.group.catalog.get(self.group.me, records.ADDRS_KEY)
        if self.group.in_group and (cur is None or cur.value != value):
            self.group.write({records.ADDRS_KEY: value})

    def kick(self) -> None:
        """Start a sync round with every member now (callable from any thread, also one
        holding the group's lock: it never waits for the loop)."""
        try:
            self._token.run_sync_soon(self._set_kick)
        except trio.RunFinishedError:
            pass

    def _set_kick(self) -> None:
        if self.on_kick is not None:
            self.on_kick()
        else:
            self._kick.set()

    def others(self) -> tuple[str, ...]:
        """The members to sync with: all but this node (none outside a group)."""
        if not self.group.in_group:
            return ()
        return tuple(sorted(p for p in self.group.members() if p != self.group.me))

    async def round(self, peers: tuple[str, ...]) -> None:
        """One anti-entropy round: our address advert, then a sync with each of ``peers``."""
        if not self.group.in_group:
            return
        await trio.to_thread.run_sync(self.advertise)
        await self.sync_all(list(peers))

    async def run(self) -> None:
        """Anti-entropy forever, by the scheduler core's choices (a host without a daemon)."""
        core = sched.Scheduler(sched.ScheduleConfig(repair_every=0, sync_every=self.interval),
                               now=trio.current_time(), rng=random.Random())
        event: sched.Event = sched.MembersChanged(self.others())
        while True:
            for cmd in core.handle(event, trio.current_time()):
                if isinstance(cmd, sched.SyncWith):
                    await self.round(cmd.peers)
            deadline = core.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._kick.wait()
            if self._kick.is_set():
                self._kick = trio.Event()
                if self.group.in_group:  # our advert first, also with nobody to tell yet
                    await trio.to_thread.run_sync(self.advertise)
                core.handle(sched.MembersChanged(self.others()), trio.current_time())
                event = sched.Kick("news to spread")
            else:
                event = sched.MembersChanged(self.others())

    async def sync_all(self, peers: list[str] | None = None) -> dict[str, str]:
        """Sync with ``peers`` (default: every other member) in parallel; per peer, "ok" or
        why it failed (failures are logged, never raised: the next round retries)."""
        if peers is None:
            peers = [p for p in self.group.members() if p != self.group.me]
        results: dict[str, str] = {}

        async def one(peer: str) -> None:
            try:
                await self.sync_with(peer)
                results[peer] = "ok"
            except (ProtocolError, CoreStateError) as exc:
                log.info("sync with %s failed: %s", peer[-8:], exc)
                results[peer] = str(exc)
        async with trio.open_nursery() as nursery:
            for p in peers:
                nursery.start_soon(one, p)
        return results
