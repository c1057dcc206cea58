"""The running daemon as the application layer sees it (``node.app.Running``).

An operation that needs what only a live daemon has — its host's addresses and
connections, the share vault it serves, its uptime, its group service — asks its context's
``live()``; this adapter answers from the daemon. Every method may be called from an
operation's worker thread (the calls it makes are the ones the CLI made from the daemon's
worker threads before operations were typed: the host's address and connection lists, the
vault's counters under its own lock, the group service's ``kick``, which never waits for
the loop).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corestate.node.runtime.daemon import Daemon


class DaemonLive:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def uptime_ms(self) -> int:
        return max(0, int((time.time() - self._daemon.started) * 1000))

    def addrs(self) -> list[str]:
        return list(self._daemon.mesh.host.addrs())

    def connected(self) -> list[str]:
        return list(self._daemon.mesh.host.connected_peers())

    def reachability(self) -> str:
        reach = self._daemon.mesh.reach
        return "unknown" if reach is None else str(reach.state)

    def connection(self, peer: str) -> str:
        how = getattr(self._daemon.mesh.host, "connection", None)
        if how is None:  # a host without relays (the test kit's memory host)
            return "direct" if peer in self.connected() else "none"
        return str(how(peer))

    def vault_stats(self) -> dict[str, int]:
        return self._daemon.mesh.vault.stats()

    def held_for(self, peer: str) -> int:
        return self._daemon.mesh.vault.used(peer)

    def set_quota(self, peer: str, quota: int | None) -> None:
        self._daemon.mesh.vault.set_quota(peer, quota)

    def kick_sync(self) -> bool:
        groups = self._daemon.mesh.groups
        if groups is None:
            return False
        groups.kick()
        return True


__all__ = ["DaemonLive"]
