"""A mesh of real daemons on this machine, on loopback: for the demo, tests and benchmarks.

Each node is its own home and its own ``corestate node run`` process, exactly as a user
runs it; nothing is faked. Homes are created with ``corestate init`` in parallel, each
gets a fixed loopback port in its config and the others as trusted peers in its address
book before its daemon starts, so the mesh is wired without a round of ``peer add``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from corestate.errors import CoreStateError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class MeshNode:
    index: int
    home: Path
    port: int
    peer_id: str = ""
    phrase: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    addrs: list[str] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalMesh:
    def __init__(self, base: Path, count: int, *, passphrase: str = "corestate demo",
                 config: str = "", env: dict[str, str] | None = None) -> None:
        self.base = base
        self.pw = base / "passphrase"
        self.passphrase = passphrase
        self.config_extra = config
        self.env = {**os.environ, **(env or {})}
        self.env.pop("CORESTATE_HOME", None)
        self.nodes = [MeshNode(i, base / f"node{i + 1}", free_port()) for i in range(count)]

    def cmd(self, node: MeshNode, *args: str) -> list[str]:
        # -P: never import from the working folder (a checkout has a corestate/ folder too).
        return [sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(node.home), *args]

    def run(self, node: MeshNode, *args: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A CLI command on ``node`` (routed to its daemon when that runs)."""
        argv = list(args)
        p = subprocess.run(self.cmd(node, *argv[:1]) + self._key_args(argv) + argv[1:],
                           capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and p.returncode not in (0,):
            raise CoreStateError(f"`corestate {' '.join(argv)}` on node {node.index + 1} exited "
                                 f"{p.returncode}: {p.stderr.strip()[-2000:]}")
        return p

    def _key_args(self, argv: list[str]) -> list[str]:
        needs = {"init", "backup", "snapshots", "ls", "restore", "diff", "check", "stats", "status"}
        return ["--passphrase-file", str(self.pw)] if argv and argv[0] in needs else []

    def create(self) -> None:
        """Create every home (in parallel), then wire them: ports and trusted peers."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.pw.write_text(self.passphrase + "\n")
        os.chmod(self.pw, 0o600)
        procs = [subprocess.Popen(self.cmd(n, "init", "--json", "--passphrase-file", str(self.pw)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
                 for n in self.nodes]
        for n, p in zip(self.nodes, procs, strict=True):
            out, err = p.communicate(timeout=120)
            if p.returncode != 0:
                raise CoreStateError(f"init of node {n.index + 1} failed: {err.decode()[-2000:]}")
            made = json.loads(out.decode().strip().splitlines()[-1])
            n.peer_id, n.phrase = made["peer_id"], made["phrase"]
        from corestate.node.peers import AddressBook
        for n in self.nodes:
            cfg = n.home / "config.toml"
            text = cfg.read_text().replace(
                'listen = []', f'listen = ["/ip4/127.0.0.1/tcp/{n.port}"]').replace(
                'mdns = true', 'mdns = false').replace('peer_timeout = 20', 'peer_timeout = 10')
            cfg.write_text(text + self.config_extra)
            book = AddressBook(n.home / "peers.db")
            try:
                for o in self.nodes:
                    if o is not n:
                        book.add(o.peer_id, [f"/ip4/127.0.0.1/tcp/{o.port}"], trusted=True)
            finally:
                book.close()

    def start(self, *which: int, timeout: float = 60) -> None:
        """Start the daemons ``which`` (indexes; all by default) and wait until ready."""
        wanted = [self.nodes[i] for i in which] if which else list(self.nodes)
        todo = [n for n in wanted if not n.running]  # wait only for the ones started now
        for n in todo:
            n.log = n.home / "daemon.log"
            with open(n.log, "ab") as logf:
                n.proc = subprocess.Popen(self.cmd(n, "node", "run", "--passphrase-file", str(self.pw)),
                                          stdout=subprocess.PIPE, stderr=logf, env=self.env,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        for n in todo:
            assert n.proc is not None and n.proc.stdout is not None
            line = b""
            while not line.startswith(b"ready "):
                if time.monotonic() > deadline or n.proc.poll() is not None:
                    log = n.log.read_text()[-3000:] if n.log else ""
                    raise CoreStateError(f"daemon of node {n.index + 1} did not start: {log}")
                line = n.proc.stdout.readline()
            parts = line.decode().split()
            n.addrs = parts[2:]

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        n = self.nodes[i]
        if n.proc is None:
            return None
        if n.proc.poll() is None:
            n.proc.send_signal(sig)
        try:
            return n.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            return n.proc.wait()
        finally:
            if n.proc.stdout:
                n.proc.stdout.close()
            n.proc = None

    def kill(self, i: int) -> None:
        self.stop(i, signal.SIGKILL)

    def close(self) -> None:
        for i, n in enumerate(self.nodes):
            if n.proc is not None:
                self.stop(i)

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
