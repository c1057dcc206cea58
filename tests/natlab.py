"""A NAT lab in network namespaces (root): an "internet", a public host and two sites,
each behind a home-router-like NAT. Importable as ``natlab`` (tests/ is on sys.path).

Layout (``<tag>`` carries the test process's pid, so runs never collide):

- ``<tag>-inet``: the bridge ``br0`` of the internet, 198.51.100.0/24 (a documentation
  range, routed nowhere else);
- ``<tag>-pub``: the public host, 198.51.100.10 on the internet;
- ``<tag>-ra`` / ``<tag>-rb``: the routers of site A / B, WAN 198.51.100.1 / .2, LAN
  10.1.0.1/24 / 10.2.0.1/24; they forward, MASQUERADE what leaves the WAN (``random=True``:
  ``--random-fully``, a symmetric-like NAT; otherwise port-preserving, cone-like) and
  silently DROP every packet from the WAN that belongs to no connection (no RST, no ICMP);
- ``<tag>-a`` / ``<tag>-b``: a member at each site, 10.1.0.2 / 10.2.0.2, default route
  through its router.

``NatLab(upnp=True)`` also runs Debian's ``miniupnpd`` (nftables backend) on both routers,
a UPnP IGD that forwards ports for its LAN; then the internet is 11.17.0.0/24 instead
(miniupnpd refuses to map on a reserved WAN address; no packet leaves the namespaces).

``run(name, argv)`` starts a process inside a namespace; ``close()`` kills what it started
and deletes the namespaces, even after a failure; a new lab first deletes the namespaces
of runs whose process is gone. No packet leaves the namespaces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import netmesh

PREFIX = "csnat"
INET = "198.51.100"
PUBLIC_IP = f"{INET}.10"
SITES = {"a": ("1", "10.1.0"), "b": ("2", "10.2.0")}  # site -> (router WAN host part, LAN)


def unavailable(upnp: bool = False) -> str | None:
    """Why the lab cannot be built here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")) + (
        (("miniupnpd", "miniupnpd"), ("nft", "nftables")) if upnp else ()
    ):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian package {package}; ./run-tests installs it)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    try:
        nat = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-L"],
            capture_output=True, text=True, timeout=30,
        )
        if nat.returncode != 0:
            return f"iptables NAT does not work here: {nat.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*args: str) -> str:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def remove_stale() -> None:
    """Delete the lab namespaces of earlier runs whose test process no longer exists."""
    netmesh.remove_stale(PREFIX)


class NatLab:
    """The namespaces and links of the module docstring; a context manager."""

    def __init__(self, *, random: bool = False, upnp: bool = False) -> None:
        self.random = random
        self.upnp = upnp
        self.inet = "11.17.0" if upnp else INET
        self.public_ip = f"{self.inet}.10"
        self.tag = f"{PREFIX}{os.getpid()}"
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._dirs: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def ip(self, name: str) -> str:
        """The address a member listens on: ``pub``, ``a`` or ``b``."""
        return self.public_ip if name == "pub" else f"{SITES[name][1]}.2"

    def wan_ip(self, site: str) -> str:
        return f"{self.inet}.{SITES[site][0]}"

    def __enter__(self) -> NatLab:
        remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, name: str) -> str:
        ns = self.ns(name)
        _run("ip", "netns", "add", ns)
        self._made.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def _ns_ip(self, ns: str, *args: str) -> None:
        _run("ip", "-n", ns, *args)

    def _iptables(self, ns: str, *args: str) -> None:
        _run("ip", "netns", "exec", ns, "iptables", "-w", *args)

    def _build(self) -> None:
        inet = self._add_ns("inet")
        self._ns_ip(inet, "link", "add", "br0", "type", "bridge")
        self._ns_ip(inet, "link", "set", "br0", "up")

        def uplink(ns: str, dev: str, port: str, cidr: str) -> None:
            _run("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", port, "netns", inet)
            self._ns_ip(inet, "link", "set", port, "master", "br0")
            self._ns_ip(inet, "link", "set", port, "up")
            self._ns_ip(ns, "addr", "add", cidr, "dev", dev)
            self._ns_ip(ns, "link", "set", dev, "up")

        pub = self._add_ns("pub")
        uplink(pub, "eth0", "ppub", f"{self.public_ip}/24")
        for site, (wan_host, lan) in SITES.items():
            router = self._add_ns(f"r{site}")
            uplink(router, "wan", f"p{site}", f"{self.inet}.{wan_host}/24")
            member = self._add_ns(site)
            _run("ip", "link", "add", "eth0", "netns", member, "type", "veth", "peer", "lan", "netns", router)
            self._ns_ip(router, "addr", "add", f"{lan}.1/24", "dev", "lan")
            self._ns_ip(router, "link", "set", "lan", "up")
            self._ns_ip(member, "addr", "add", f"{lan}.2/24", "dev", "eth0")
            self._ns_ip(member, "link", "set", "eth0", "up")
            self._ns_ip(member, "route", "add", "default", "via", f"{lan}.1")
            # Another site's private addresses lead nowhere, silently (as on the internet).
            self._ns_ip(router, "route", "add", "blackhole", "10.0.0.0/8")
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
            self._iptables(router, *masq, *(["--random-fully"] if self.random else []))
            # A home router: what comes from the WAN passes only as part of a connection
            # from inside; everything else is dropped without a word.
            for chain in ("FORWARD", "INPUT"):
                self._iptables(router, "-A", chain, "-i", "wan", "-m", "conntrack",
                               "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
                if self.upnp and chain == "FORWARD":  # what the IGD forwarded passes
                    self._iptables(router, "-A", chain, "-i", "wan", "-m", "conntrack",
                                   "--ctstate", "DNAT", "-j", "ACCEPT")
                self._iptables(router, "-A", chain, "-i", "wan", "-j", "DROP")
            if self.upnp:
                self._start_igd(site, router, lan)

    def _start_igd(self, site: str, router: str, lan: str) -> None:
        import tempfile
        import time

        work = tempfile.mkdtemp(prefix=f"{self.tag}-igd-")
        self._dirs.append(work)
        rules = os.path.join(work, "rules.nft")
        with open(rules, "w") as f:  # the chains miniupnpd fills (its nftables backend)
            f.write("table inet miniupnpd {\n"
                    "  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n"
                    "  chain miniupnpd { }\n"
                    "  chain prerouting { type nat hook prerouting priority -100; policy accept;"
                    " jump prerouting_miniupnpd; }\n"
                    "  chain postrouting { type nat hook postrouting priority 100; policy accept;"
                    " jump postrouting_miniupnpd; }\n"
                    "  chain prerouting_miniupnpd { }\n  chain postrouting_miniupnpd { }\n}\n")
        _run("ip", "netns", "exec", router, "nft", "-f", rules)
        conf = os.path.join(work, "miniupnpd.conf")
        with open(conf, "w") as f:
            f.write(f"ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\nenable_upnp=yes\n"
                    f"enable_natpmp=no\nsecure_mode=yes\nsystem_uptime=yes\n"
                    f"upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n"
                    f"uuid=3e5a1b3c-0d6f-4b0a-9b1e-00000000001{SITES[site][0]}\n"
                    f"allow 1024-65535 {lan}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n")
        self.run(f"r{site}", ["miniupnpd", "-d", "-f", conf],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # it binds its SSDP and HTTP sockets

    def run(self, name: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace of ``name`` (``pub``, ``a``, ``b``, ``ra``...)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], **kw)
        self._procs.append(proc)
        return proc

    def exec(self, name: str, *argv: str) -> str:
        return _run("ip", "netns", "exec", self.ns(name), *argv)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._procs.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()


# -- the adapter on its own: relay on the public host, listener at A, dialer at B --------

_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "natpeer.py")


def _peer_id(n: int) -> str:
    from corestate.protocol.keys import NodeKeys
    from corestate.protocol.p2p import _key_pair
    from libp2p.peer.id import ID

    return str(ID.from_pubkey(_key_pair(NodeKeys.from_root(bytes([n]) * 32).identity_seed).public_key))


def relay_and_punch(lab: NatLab, python: str, *, size: int, wait: float) -> dict[str, Any]:
    """Start the relay (public host, members A and B), A (reserves, serves the sink) and B
    (dials A through its circuit); return B's measurements (``natpeer.py``)."""
    import json

    def start(name: str, role: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
        return lab.run(name, [python, _PEER, role, json.dumps(cfg)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def first_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        import select

        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            raise RuntimeError(f"natpeer gave no answer within {timeout:g} s: {proc.stderr.read()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    members = [_peer_id(2), _peer_id(3)]
    relay = start("pub", "relay", {"seed": 1, "listen": f"/ip4/{lab.public_ip}/tcp/4001", "members": members})
    rinfo = first_line(relay, 60)
    a = start("a", "listen", {"seed": 2, "listen": f"/ip4/{lab.ip('a')}/tcp/4001",
                              "relay": rinfo["peer_id"], "relay_addrs": rinfo["addrs"]})
    ainfo = first_line(a, 60)
    b = start("b", "dial", {"seed": 3, "listen": f"/ip4/{lab.ip('b')}/tcp/4001",
                            "target": ainfo["peer_id"], "target_addrs": ainfo["addrs"] + ainfo["circuits"],
                            "size": size, "wait": wait})
    out = first_line(b, 120 + wait)
    out["circuits"] = ainfo["circuits"]
    return out


# -- real daemons in the lab ------------------------------------------------------------------

MESH_PORT = 4101
PLACES = ("pub", "a", "b")  # node 1, 2, 3


def nat_mesh(lab: NatLab, base: Any, *, config: str = "") -> Any:
    """A created (not started) ``LocalMesh`` of three homes whose daemons run in the lab:
    node 1 on the public host, node 2 at site A, node 3 at site B, each listening on its
    lab address only. Their address books are empty: they meet through invites."""
    from corestate.node.peers import AddressBook
    from corestate.node.runtime.localmesh import LocalMesh, MeshNode

    class NatMesh(LocalMesh):
        def cmd(self, node: MeshNode, *args: str) -> list[str]:
            base_cmd = super().cmd(node, *args)
            if args[:2] == ("node", "run"):
                return ["ip", "netns", "exec", lab.ns(PLACES[node.index]), *base_cmd]
            return base_cmd

    mesh = NatMesh(base, 3, config=config)
    mesh.create()
    for n in mesh.nodes:
        n.port = MESH_PORT
        cfg = n.home / "config.toml"
        text = cfg.read_text()
        old = next(line for line in text.splitlines() if line.startswith("listen = ["))
        cfg.write_text(text.replace(old, f'listen = ["/ip4/{lab.ip(PLACES[n.index])}/tcp/{MESH_PORT}"]', 1))
        book = AddressBook(n.home / "peers.db")
        try:
            for e in book.all():
                book.remove(e.peer)
        finally:
            book.close()
    return mesh
