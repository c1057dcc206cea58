"""How synchronous commands reach the mesh.

CLI commands (backup, restore, check ...) are synchronous code; the mesh lives in a trio
event loop in another thread. A ``MeshPort`` is the bridge: ``call`` runs an async function
of the ``Mesh`` in the loop and waits for it. In the daemon the mesh is already up; in a
CLI run without a daemon a ``TransientMeshPort`` starts, on its first ``call``, a trio loop
in a thread of its own with a transient host under the node's identity, which goes away
when the command ends. A command that never needs a peer never imports trio or libp2p.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from corestate.protocol import control as c

if TYPE_CHECKING:
    import trio
    from corestate.node.local import LocalNode
    from corestate.node.peers import AddressBook
    from corestate.node.runtime.events import EventBus
    from corestate.node.runtime.mesh import Mesh
    from corestate.protocol.streams import Host

T = TypeVar("T")
log = logging.getLogger("corestate.port")


class MeshPort:
    def __init__(self, token: trio.lowlevel.TrioToken,
                 get_mesh: Callable[[], Awaitable[Mesh]]) -> None:
        self.token = token
        self._get_mesh = get_mesh

    def call(self, fn: Callable[[Mesh], Awaitable[T]]) -> T:
        """From a worker thread: run ``fn(mesh)`` in the trio loop and return its result."""
        import trio

        async def run() -> T:
            return await fn(await self._get_mesh())
        return trio.from_thread.run(run, trio_token=self.token)


class TransientMeshPort:
    """The mesh for one command run without a daemon (see the module docstring).

    ``call`` may come from any thread but the loop's; ``close`` stops the host and the loop.
    The host listens on an ephemeral loopback port only: it dials out, nobody dials it.
    """

    def __init__(self, node_getter: Callable[[], LocalNode | None]) -> None:
        self._node_getter = node_getter
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: MeshPort | None = None
        self._stop: Any = None
        self._failure: BaseException | None = None

    def call(self, fn: Callable[[Mesh], Awaitable[T]]) -> T:
        with self._lock:
            if self._thread is None:
                node = self._node_getter()
                assert node is not None, "the mesh port is used before the node is open"
                self._thread = threading.Thread(target=self._loop, args=(node,), name="mesh", daemon=True)
                self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        assert self._port is not None
        return self._port.call(fn)

    def _loop(self, node: LocalNode) -> None:
        import trio

        async def main() -> None:
            self._stop = trio.Event()
            async with open_mesh(node, listen=["/ip4/127.0.0.1/tcp/0"]) as mesh:
                async def get() -> Mesh:
                    return mesh
                self._port = MeshPort(trio.lowlevel.current_trio_token(), get)
                self._ready.set()
                await self._stop.wait()
        try:
            trio.run(main)
        except BaseException as exc:  # reported to every caller of call()
            self._failure = exc
        finally:
            if self._port is None and self._failure is None:
                self._failure = RuntimeError("the mesh stopped before it was ready")
            self._ready.set()

    def close(self) -> None:
        """Stop the host, if one was started, and wait for its loop to end."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._ready.wait()
        if self._port is not None and thread.is_alive():
            import trio
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._port.token)
            except trio.RunFinishedError:
                pass
        thread.join(timeout=30)


@asynccontextmanager
async def open_mesh(node: LocalNode, *, listen: list[str] | None = None, mdns: bool = False,
                    events: EventBus | None = None, host: Host | None = None,
                    reach: bool = False) -> AsyncIterator[Mesh]:
    """The node's libp2p host, share vault and mesh service, for as long as the block runs.

    ``reach`` (a daemon): also run the reachability and relay service
    (``node/runtime/reach.py``) on the libp2p host, as ``[relay]`` says.

    ``host``: a running host to serve on instead of a libp2p host of our own (the
    in-process test kit, ``node.runtime.testkit``, passes a ``MemoryHost``); its owner
    starts and stops it, ``listen`` and ``mdns`` are then unused."""
    import trio
    from corestate.node.runtime.events import EventBus
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.vault import ShareVault

    # libp2p logs through a logger of its own that bypasses the root handlers (straight to
    # stderr); route it through ours, and keep only what a user can act on.
    _quiet_libp2p()
    cfg = node.cfg
    vault = ShareVault(node.home.path / "shares", global_quota=cfg.global_quota)
    bus = events or EventBus()
    granted: list[frozenset[str]] = []
    quota_lock = threading.Lock()  # called from the loop and from worker threads

    def apply_quotas() -> None:
        """Quotas follow trust at once: every trusted peer (added by the user, or a member
        of the group as it is evaluated now) has its own quota, nobody else has one. Run
        at start and whenever the membership changes, whichever way the change came."""
        with quota_lock:
            want = frozenset(node.trusted_peers())
            if granted and granted[0] == want:
                return
            for peer in want:
                vault.set_quota(peer, cfg.quota_per_peer)
            for peer in set(vault.quota_senders()) - want:
                vault.set_quota(peer, None)
            granted[:] = [want]
    try:
        apply_quotas()
        addrs = listen if listen is not None else (cfg.listen or [f"/ip4/0.0.0.0/tcp/{cfg.listen_port}"])
        own_host = host is None
        if host is None:
            from corestate.protocol.p2p import RelayOptions, open_host
            relay = RelayOptions(hop=cfg.relay_serve, circuit_rate=cfg.relay_circuit_rate,
                                 circuit_bytes=cfg.relay_circuit_bytes,
                                 circuit_seconds=int(cfg.relay_circuit_duration),
                                 relayed_rate=cfg.relayed_rate, hole_punch=cfg.hole_punch)
            hosting: AbstractAsyncContextManager[Host] = open_host(node.keys.identity_seed, addrs, mdns=mdns,
                                                                   relay=relay)
        else:
            hosting = nullcontext(host)
        async with hosting as host:
            mesh = Mesh(host, node.keys, vault, node.book, node.ledger, bus, timeout=cfg.peer_timeout,
                        authorized=node.authorized, in_group=lambda: node.group.in_group,
                        trusted=node.trusted_peers, targets=node.targets)
            from corestate.node.app.health import shunned
            mesh.shunned = lambda: shunned(node)  # evicted and lost holders get no new shares
            mesh.is_member = node.group.is_member
            from corestate.node.runtime.groupsvc import GroupService

            def changed() -> None:
                apply_quotas()

            def members_changed() -> None:
                # In the thread that changed the membership: quotas now; then a sync round
                # with every member, so an admission or a removal spreads at once.
                apply_quotas()
                if mesh.groups is not None:
                    mesh.groups.kick()
            mesh.groups = GroupService(host, node.group, node.book, timeout=cfg.peer_timeout,
                                       on_change=changed, events=bus)
            node.group.on_members.append(members_changed)

            host.on_peer_discovered(lambda peer, paddrs: discovered(node.book, bus, host.peer_id, peer, paddrs))
            _quiet_libp2p()  # its submodules made loggers of their own while starting
            async with trio.open_nursery() as services:
                if reach and own_host:
                    from corestate.node.runtime.reach import ReachService
                    groups = mesh.groups
                    mesh.reach = ReachService(host, node.group, node.book, serve=cfg.relay_serve,
                                              use=cfg.relay_use, want=cfg.relays,
                                              reservation_seconds=3600, on_addrs=groups.kick,
                                              upnp=cfg.upnp)
                    services.start_soon(mesh.reach.run)
                try:
                    yield mesh
                finally:
                    node.group.on_members.remove(members_changed)
                    services.cancel_scope.cancel()
                    mesh.close_targets()
    finally:
        vault.close()


def discovered(book: AddressBook, bus: EventBus, me: str, peer: str, addrs: list[str]) -> None:
    """A peer mDNS found: listed, never trusted; its addresses only noted as found
    (the address book bounds them and keeps the pinned ones first)."""
    if peer == me:
        return
    known = book.get(peer)
    book.add(peer, list(addrs), trusted=False, source="mdns")
    if known is None:
        bus.publish(c.PeerDiscovered(time_ns=time.time_ns(), peer_id=peer,
                                     addrs=tuple(a[:256] for a in addrs[:8])))


def _quiet_libp2p() -> None:
    for name in ["libp2p", *[n for n in logging.root.manager.loggerDict if n.startswith("libp2p.")]]:
        lp = logging.getLogger(name)
        lp.handlers.clear()
        lp.propagate = True
        lp.setLevel(logging.ERROR)
