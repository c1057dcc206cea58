"""A ``LocalMesh`` whose daemons live in separate network namespaces, for partition tests.

Importable as ``netmesh`` (pytest puts tests/ on sys.path). Layout, per mesh:

- one namespace ``<tag>-br`` holding the bridge ``br0``;
- one namespace ``<tag>-n<i>`` per node, with a veth ``eth0`` (10.77.0.<i>/24) whose other
  end ``p<i>`` is a port of ``br0``; the daemon runs there (``ip netns exec``) and listens
  on ``/ip4/10.77.0.<i>/tcp/<port>`` only.

CLI commands stay in the root namespace: they reach a running daemon through the control
socket in its home (a path, not a network address), exactly as a user's shell would.

``partition([[1, 2], [3, 4, 5]])`` (node numbers, 1-based) moves the bridge ports of each
group onto a bridge of its own; a node named in no group is detached from every bridge.
Packets between groups are then silently lost, as on a real network that broke: nothing
answers, established TCP connections stall. ``heal()`` puts every port back on ``br0``.

Names carry the test process's pid, so runs never collide; ``close()`` stops the daemons
and deletes the namespaces (their veths go with them) even after a failure, and a new mesh
first deletes the namespaces of runs whose process is gone (a killed pytest).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from corestate.node.peers import AddressBook
from corestate.node.runtime.localmesh import LocalMesh, MeshNode

SUBNET = "10.77.0"
PREFIX = "csnet"


def unavailable() -> str | None:
    """Why namespaces cannot be used here (a reason to skip), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is missing"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` exited {p.returncode}: {p.stderr.strip()}")


def _namespaces() -> list[str]:
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(prefix: str = PREFIX) -> None:
    """Delete the namespaces (named ``<prefix><pid>-...``) of earlier runs whose test process
    no longer exists."""
    for ns in _namespaces():
        m = re.fullmatch(rf"{prefix}(\d+)-\w+", ns)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class NetMesh(LocalMesh):
    """Real daemons, each in its own network namespace on one bridge (module docstring)."""

    def __init__(self, base: Path, count: int, **kw: Any) -> None:
        if count > 250:
            raise ValueError("one /24: at most 250 nodes")
        super().__init__(base, count, **kw)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge_ns = f"{self.tag}-br"
        self._made: list[str] = []  # namespaces this mesh created, for close()
        self._bridges: set[str] = set()  # partition bridges besides br0

    # -- names and addresses -------------------------------------------------------------

    def ns(self, node: MeshNode) -> str:
        return f"{self.tag}-n{node.index + 1}"

    def ip(self, node: MeshNode) -> str:
        return f"{SUBNET}.{node.index + 1}"

    def listen_addr(self, node: MeshNode) -> str:
        return f"/ip4/{self.ip(node)}/tcp/{node.port}"

    def addr(self, node: MeshNode) -> str:
        """The node's full multiaddr on the mesh network (``MeshNode.addr`` is loopback)."""
        return f"{self.listen_addr(node)}/p2p/{node.peer_id}"

    def cmd(self, node: MeshNode, *args: str) -> list[str]:
        base = super().cmd(node, *args)
        if args[:2] == ("node", "run"):
            return ["ip", "netns", "exec", self.ns(node), *base]
        return base

    # -- life cycle ----------------------------------------------------------------------

    def create(self) -> None:
        """Homes as ``LocalMesh.create`` makes them, listening on the mesh network and
        knowing each other there; then the namespaces, veths and bridge."""
        remove_stale()
        super().create()
        for n in self.nodes:
            cfg = n.home / "config.toml"
            old = f'listen = ["/ip4/127.0.0.1/tcp/{n.port}"]'
            text = cfg.read_text()
            if old not in text:
                raise RuntimeError(f"{cfg} has no `{old}` to replace")
            cfg.write_text(text.replace(old, f'listen = ["{self.listen_addr(n)}"]', 1))
            book = AddressBook(n.home / "peers.db")
            try:
                for o in self.nodes:
                    if o is not n:
                        book.remove(o.peer_id)
                        book.add(o.peer_id, [self.listen_addr(o)], trusted=True)
            finally:
                book.close()
        self._wire()

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _wire(self) -> None:
        self._add_ns(self.bridge_ns)
        self._new_bridge("br0")
        for n in self.nodes:
            ns, port = self.ns(n), f"p{n.index + 1}"
            self._add_ns(ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", port, "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip(n)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def _new_bridge(self, name: str) -> None:
        _ip("-n", self.bridge_ns, "link", "add", name, "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", name, "up")

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network into ``groups`` of node numbers (1-based); nodes in no group
        are cut off from everyone. Replaces any earlier partition."""
        seen = [i for g in groups for i in g]
        if len(seen) != len(set(seen)) or not set(seen) <= set(range(1, len(self.nodes) + 1)):
            raise ValueError(f"groups must name distinct nodes 1..{len(self.nodes)}: {groups}")
        self.heal()
        for gi, group in enumerate(groups):
            bridge = f"part{gi}"
            self._new_bridge(bridge)
            self._bridges.add(bridge)
            for i in group:
                _ip("-n", self.bridge_ns, "link", "set", f"p{i}", "master", bridge)
        for i in set(range(1, len(self.nodes) + 1)) - set(seen):
            _ip("-n", self.bridge_ns, "link", "set", f"p{i}", "nomaster")

    def heal(self) -> None:
        """One network again: every port back on ``br0``, the partition bridges gone."""
        for n in self.nodes:
            _ip("-n", self.bridge_ns, "link", "set", f"p{n.index + 1}", "master", "br0")
        for bridge in sorted(self._bridges):
            _ip("-n", self.bridge_ns, "link", "del", bridge)
        self._bridges.clear()

    def close(self) -> None:
        for n in self.nodes:  # every daemon shuts down at once; LocalMesh.close waits for each
            if n.running:
                assert n.proc is not None
                n.proc.terminate()
        try:
            super().close()
        finally:
            for ns in reversed(self._made):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self._made.clear()

    def __enter__(self) -> NetMesh:
        return self
