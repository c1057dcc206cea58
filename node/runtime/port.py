"""How synchronous commands reach the mesh.

CLI commands (backup, restore, check ...) are synchronous code that runs in a worker
thread; the mesh lives in a trio event loop. A ``MeshPort`` is the bridge: ``call`` runs an
async function of the ``Mesh`` in the loop and waits for it. In the daemon the mesh is
already up; in a CLI run without a daemon the first ``call`` starts a transient host with
the node's identity, which goes away when the command ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from corestate.node.runtime.events import EventBus

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.mesh import Mesh

T = TypeVar("T")
log = logging.getLogger("corestate.port")


class MeshPort:
    def __init__(self, token: trio.lowlevel.TrioToken,
                 get_mesh: Callable[[], Awaitable[Mesh]]) -> None:
        self.token = token
        self._get_mesh = get_mesh

    def call(self, fn: Callable[[Mesh], Awaitable[T]]) -> T:
        """From a worker thread: run ``fn(mesh)`` in the trio loop and return its result."""
        async def run() -> T:
            return await fn(await self._get_mesh())
        return trio.from_thread.run(run, trio_token=self.token)


@asynccontextmanager
async def open_mesh(node: LocalNode, *, listen: list[str] | None = None, mdns: bool = False,
                    events: EventBus | None = None) -> AsyncIterator[Mesh]:
    """The node's libp2p host, share vault and mesh service, for as long as the block runs."""
    from corestate.node.runtime.mesh import Mesh
    from corestate.node.runtime.vault import ShareVault
    from corestate.protocol.p2p import open_host

    # libp2p logs through a logger of its own that bypasses the root handlers (straight to
    # stderr); route it through ours, and keep only what a user can act on.
    _quiet_libp2p()
    cfg = node.cfg
    vault = ShareVault(node.home.path / "shares", global_quota=cfg.global_quota)
    bus = events or EventBus()
    try:
        for peer in node.trusted_peers():
            vault.set_quota(peer, cfg.quota_per_peer)
        addrs = listen if listen is not None else (cfg.listen or ["/ip4/0.0.0.0/tcp/0"])
        async with open_host(node.keys.identity_seed, addrs, mdns=mdns) as host:
            mesh = Mesh(host, node.keys, vault, node.book, node.ledger, bus, timeout=cfg.peer_timeout,
                        authorized=node.authorized, in_group=lambda: node.group.in_group,
                        trusted=node.trusted_peers)
            from corestate.node.runtime.groupsvc import GroupService

            def changed() -> None:
                for peer in node.trusted_peers():
                    vault.set_quota(peer, cfg.quota_per_peer)
                for peer in node.group.removed():
                    vault.set_quota(peer, None)
            mesh.groups = GroupService(host, node.group, node.book, timeout=cfg.peer_timeout,
                                       on_change=changed, events=bus)

            def discovered(peer: str, paddrs: list[str]) -> None:
                if peer == host.peer_id:
                    return
                known = node.book.get(peer)
                node.book.add(peer, list(paddrs), trusted=False, source="mdns")
                if known is None:
                    bus.publish("peer-discovered", peer=peer, addrs=" ".join(paddrs))
            host.on_peer_discovered(discovered)
            _quiet_libp2p()  # its submodules made loggers of their own while starting
            yield mesh
    finally:
        vault.close()


def _quiet_libp2p() -> None:
    for name in ["libp2p", *[n for n in logging.root.manager.loggerDict if n.startswith("libp2p.")]]:
        lp = logging.getLogger(name)
        lp.handlers.clear()
        lp.propagate = True
        lp.setLevel(logging.ERROR)


async def run_with_transient_mesh(node_getter: Callable[[], LocalNode | None],
                                  work: Callable[[MeshPort], Any]) -> Any:
    """Run the synchronous ``work(port)`` in a thread; the port starts a transient host on
    first use (outgoing connections; it listens on an ephemeral loopback port only)."""
    mesh_box: list[Mesh] = []
    ready = trio.Event()
    stop = trio.Event()
    failure: list[BaseException] = []
    lock = trio.Lock()

    async with trio.open_nursery() as nursery:
        async def host_task() -> None:
            node = node_getter()
            assert node is not None, "the mesh port is used before the node is open"
            try:
                async with open_mesh(node, listen=["/ip4/127.0.0.1/tcp/0"]) as mesh:
                    mesh_box.append(mesh)
                    ready.set()
                    await stop.wait()
            except BaseException as exc:  # reported to the caller of get_mesh
                failure.append(exc)
                ready.set()
                if not isinstance(exc, Exception):
                    raise

        async def get_mesh() -> Mesh:
            async with lock:
                if not mesh_box and not failure and not ready.is_set():
                    nursery.start_soon(host_task)
                await ready.wait()
            if failure:
                raise failure[0]
            return mesh_box[0]

        port = MeshPort(trio.lowlevel.current_trio_token(), get_mesh)
        try:
            return await trio.to_thread.run_sync(work, port)
        finally:
            stop.set()
