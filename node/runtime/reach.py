"""Reachability and relays for a daemon's libp2p host: the runtime side of
``node/core/reach.py``.

Every ``interval`` seconds (``fast`` while the node is not public and holds no relay):

1. ask up to ``PROBES`` members we are directly connected to for a dial-back; the core
   judges public / private / unknown; the addresses members reached become part of our
   advertised addresses;
2. a public node relays for members (``[relay] serve``); a node that is not public does
   not (its relay would reach only its own network);
3. a private node (``[relay] use``) holds reservations on up to ``[relay] relays`` members,
   refreshed at half their lifetime, and advertises its circuits through them;
0. with ``[network] upnp``, ask the router to forward our listen port (node/runtime/upnp.py);
   the dial-back then tells whether it does;
4. when what we advertise changed, ``on_addrs`` runs (the group service writes our
   address advert and spreads it at once).

Invariants: only members are asked, admitted as relay clients and served dial-backs;
every wait on a peer is bounded (the adapter's timeouts); a failing round is logged and
the next one retries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from corestate.node.core import reach as core
from corestate.protocol.errors import ProtocolError

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.reach")
PROBES = 3
FAST = 5.0
SLOW = 120.0
RESERVE_TIMEOUT = 15.0
RETRY_RELAY = 15.0  # a member that refused a slot (not public yet, perhaps) is asked again after this


class ReachService:
    def __init__(self, host: Any, group: Any, book: Any, *, serve: bool, use: bool, want: int,
                 reservation_seconds: float, on_addrs: Callable[[], None] | None = None,
                 upnp: bool = False) -> None:
        self.host, self.group, self.book = host, group, book
        self.upnp = upnp
        self.mapping: Any = None  # a upnp.PortMapping while the router forwards our port
        self.serve, self.use, self.want = serve, use, want
        self.reservation_seconds = reservation_seconds
        self.on_addrs = on_addrs
        self.state = "unknown"
        self.reason = "not probed yet"
        self._reserved_at: dict[str, float] = {}
        self._mapped_at = -math.inf
        self._failed: dict[str, float] = {}
        host.serve_dial_back(self._is_other_member)
        host.set_relay_policy(self._may_relay)

    def _is_other_member(self, peer: str) -> bool:
        return peer != self.group.me and self.group.in_group and self.group.is_member(peer)

    def _may_relay(self, peer: str) -> bool:
        return self.serve and self.state == "public" and self._is_other_member(peer)

    def _members(self) -> list[str]:
        if not self.group.in_group:
            return []
        return sorted(p for p in self.group.members() if p != self.group.me)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._keep_mapping()
                    await self.step()
                except (ProtocolError, CoreStateError, OSError) as exc:
                    log.info("reachability round failed: %s", exc)
                except Exception:  # a bug here must not stop the daemon: the next round retries
                    log.warning("reachability round failed", exc_info=True)
                pause = FAST if self.state != "public" and not self.host.relays() else SLOW
                await trio.sleep(pause)
        finally:
            if self.mapping is not None:
                from corestate.node.runtime import upnp
                port = self.mapping.port
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                    await trio.to_thread.run_sync(upnp.unmap_port, port)

    async def _keep_mapping(self) -> None:
        """UPnP (``[network] upnp``): the router forwards our listen port, renewed at half
        its lease; tried again every ``SLOW`` seconds while it fails."""
        if not self.upnp:
            return
        now = trio.current_time()
        if self.mapping is not None and now - self._mapped_at < self.mapping.lease / 2:
            return
        if self.mapping is None and now - self._mapped_at < SLOW:
            return
        from corestate.node.runtime import upnp
        ports = sorted({int(a.split("/tcp/")[1].split("/")[0]) for a in self.host.listen_addrs()
                        if "/tcp/" in a and not a.startswith(("/ip4/127.", "/ip6/::1/"))})
        self._mapped_at = now
        if ports:
            self.mapping = await trio.to_thread.run_sync(upnp.map_port, ports[0])

    async def step(self) -> None:
        before = self.host.addrs()
        members = self._members()
        direct = [p for p in members if self.host.connection(p) == "direct"][:PROBES]
        probes: dict[str, list[str] | None] = {}
        for peer in direct:
            probes[peer] = await self.host.dial_back(peer)
        verdict = core.judge(probes)
        if verdict.state != "unknown" or self.state == "unknown":
            if verdict.state != self.state:
                log.info("reachability: %s (%s)", verdict.state, verdict.reason)
            self.state, self.reason = verdict.state, verdict.reason
            self.host.set_public_addrs(list(verdict.public_addrs))
        if self.state == "private" and self.use:
            await self._keep_relays(members)
        elif self.state == "public":
            for relay in self.host.relays():
                self.host.drop_reservation(relay)
            self._reserved_at.clear()
        if self.host.addrs() != before and self.on_addrs is not None:
            self.on_addrs()

    async def _keep_relays(self, members: list[str]) -> None:
        now = trio.current_time()
        for relay in self.host.relays():
            if relay not in members:
                self.host.drop_reservation(relay)
                self._reserved_at.pop(relay, None)
            elif now - self._reserved_at.get(relay, now) >= self.reservation_seconds / 2:
                await self._reserve(relay, now)  # a refresh
        for relay in core.relays_to_try(members, self.group.me, self.host.relays(), self._failed, now, self.want,
                                        retry_after=RETRY_RELAY):
            if len(self.host.relays()) >= self.want:
                break
            await self._reserve(relay, now)

    async def _reserve(self, relay: str, now: float) -> None:
        entry = self.book.get(relay)
        addrs = [a for a in (entry.addrs if entry else []) if "/p2p-circuit" not in a]
        try:
            circuits = await self.host.reserve(relay, addrs, timeout=RESERVE_TIMEOUT)
        except (ProtocolError, CoreStateError, ValueError) as exc:
            log.debug("no reservation on %s: %s", relay[-8:], exc)
            self._failed[relay] = now
            self.host.drop_reservation(relay)
            self._reserved_at.pop(relay, None)
            return
        log.info("relay %s holds a slot for us: %s", relay[-8:], " ".join(circuits))
        self._reserved_at[relay] = now
        self._failed.pop(relay, None)


__all__ = ["ReachService"]
