"""The fault injectors of the chaos campaign: each a small class with a ``kind``, an
``inject()`` that breaks something real and a ``heal()`` that undoes what can be undone.

Every injector works on real things only: daemons are real processes (SIGKILL, SIGSTOP),
the network is the namespaces and bridge of ``netmesh`` (partitions, ``tc netem``), disks
are the homes' files (bit flips, truncation) and small loop-mounted file systems (a full
disk). ``Ctx`` is what they share with the campaign: the mesh, the seeded RNG, the per-node
locks (one fault per node at a time), and the record of what we killed on purpose, so a
daemon that died on its own is told apart and counted as a crash.

Invariants:
- All randomness comes from the campaign's seeded ``random.Random``; the same seed draws
  the same faults in the same order (their timing on a loaded machine varies).
- ``inject()`` returns a short description (logged) or raises ``Skip`` with the reason
  when there is nothing to act on now (no share file yet, no command running); a skipped
  draw is not counted as a fault.
- ``heal()`` is idempotent and never raises for a thing already healed; the campaign
  calls it after the hold time and again at the end for every injector (``heal_all``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Skip(Exception):
    """Nothing to inject now (the reason is the message)."""


@dataclass
class Ctx:
    """What the injectors share with the campaign."""

    mesh: Any  # LocalMesh or NetMesh
    rng: random.Random
    base: Path
    log: Callable[[str], None]
    netns: bool
    loop_homes: set[int] = field(default_factory=set)  # node indexes whose home is a small loop fs
    node_locks: list[threading.Lock] = field(default_factory=list)
    procs: threading.RLock = field(default_factory=threading.RLock)  # start/stop vs. the crash watch
    killed_pids: set[int] = field(default_factory=set)  # daemons we SIGKILLed on purpose
    cli: dict[int, subprocess.Popen[str]] = field(default_factory=dict)  # running backups by node
    cli_killed: set[int] = field(default_factory=set)  # pids of CLI commands we killed
    side: list[tuple[str, subprocess.Popen[str], Path | None]] = field(default_factory=list)
    hostile: list[str] = field(default_factory=list)  # what each hostile stranger saw (JSON lines)

    def __post_init__(self) -> None:
        self.node_locks = [threading.Lock() for _ in self.mesh.nodes]

    def cmd(self, i: int, *args: str) -> list[str]:
        """argv of a CLI command on node ``i`` with the passphrase file."""
        node = self.mesh.nodes[i]
        return [*self.mesh.cmd(node, args[0]), "--passphrase-file", str(self.mesh.pw), *args[1:]]

    def kill_daemon(self, i: int) -> None:
        with self.procs:
            n = self.mesh.nodes[i]
            if n.proc is not None:
                self.killed_pids.add(n.proc.pid)
                try:
                    os.kill(n.proc.pid, signal.SIGCONT)  # a stopped process dies as well, but wake it
                except ProcessLookupError:
                    pass
            self.mesh.kill(i)

    def start_daemon(self, i: int, patience: float = 300.0) -> None:
        """Start node ``i``'s daemon again. While it was down a CLI command may have begun
        in place and hold the home (the product refuses two processes on one home, by
        design): such a start is retried until ``patience`` runs out, and its exit is ours,
        not a crash."""
        deadline = time.monotonic() + patience
        while True:
            with self.procs:
                n = self.mesh.nodes[i]
                if n.running:
                    return
                mark = n.home.joinpath("daemon.log").stat().st_size if n.home.joinpath("daemon.log").exists() else 0
                try:
                    self.mesh.start(i, timeout=120)
                    return
                except Exception:
                    if n.proc is not None:
                        self.killed_pids.add(n.proc.pid)
                        self.mesh.stop(i)
                    with open(n.home / "daemon.log", "rb") as f:
                        f.seek(mark)
                        said = f.read().decode(errors="replace")
                    if "another corestate process" not in said or time.monotonic() > deadline:
                        raise
            time.sleep(1.0)


class Fault:
    """One kind of fault. ``hold`` is (min, max) seconds between inject and heal."""

    kind = "?"
    hold: tuple[float, float] = (0.0, 0.0)
    needs_netns = False
    nodes_locked = True  # holds the lock of the node it acts on

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.node: int | None = None

    def unavailable(self) -> str | None:
        """Why this kind cannot run here at all (counted as skipped in the report)."""
        if self.needs_netns and not self.ctx.netns:
            return "needs network namespaces (root and iproute2)"
        return None

    def candidates(self) -> list[int]:
        """The nodes this kind can act on."""
        return list(range(len(self.ctx.mesh.nodes)))

    def inject(self, node: int) -> str:
        raise NotImplementedError

    def heal(self) -> None:
        pass


# -- processes -------------------------------------------------------------------------------


class KillDaemon(Fault):
    """SIGKILL a daemon (whatever it was doing: serving shares, a backup it ran for the CLI,
    a sync round), then start it again after the hold."""

    kind = "kill-daemon"
    hold = (1.0, 6.0)

    def inject(self, node: int) -> str:
        if not self.ctx.mesh.nodes[node].running:
            raise Skip("daemon not running")
        self.node = node
        self.ctx.kill_daemon(node)
        return f"SIGKILL daemon {node + 1}"

    def heal(self) -> None:
        if self.node is not None:
            self.ctx.start_daemon(self.node)
            self.node = None


class StallDaemon(Fault):
    """SIGSTOP a daemon: a peer that stalls mid-stream (its sockets stay open, nothing
    answers), then SIGCONT."""

    kind = "stall-daemon"
    hold = (2.0, 12.0)

    def inject(self, node: int) -> str:
        n = self.ctx.mesh.nodes[node]
        if not n.running:
            raise Skip("daemon not running")
        self.pid = n.proc.pid
        os.kill(self.pid, signal.SIGSTOP)
        self.node = node
        return f"SIGSTOP daemon {node + 1}"

    def heal(self) -> None:
        if self.node is not None:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.node = None


class KillBackup(Fault):
    """SIGKILL a running ``backup`` command (the CLI process) mid-way."""

    kind = "kill-cli-backup"
    nodes_locked = False

    def inject(self, node: int) -> str:
        p = self.ctx.cli.get(node)
        if p is None or p.poll() is not None:
            raise Skip("no backup running on that node")
        self.ctx.cli_killed.add(p.pid)
        p.kill()
        return f"SIGKILL backup CLI of node {node + 1}"


class KillCommand(Fault):
    """Start a maintenance command (restore, repair, prune, group sync, check) and SIGKILL it
    at a random moment; what it left behind must not hurt anything."""

    kind = "kill-cli-command"
    hold = (0.3, 4.0)
    commands = ("restore", "repair", "prune", "sync", "check")

    def inject(self, node: int) -> str:
        what = self.ctx.rng.choice(self.commands)
        scratch: Path | None = None
        if what == "restore":
            scratch = self.ctx.base / "scratch" / f"killed-restore-{node}-{time.monotonic_ns()}"
            argv = self.ctx.cmd(node, "restore", "latest", "--target", str(scratch))
        elif what == "sync":
            argv = self.ctx.mesh.cmd(self.ctx.mesh.nodes[node], "group", "sync")
        elif what == "check":
            argv = self.ctx.cmd(node, "check", "--read-data")
        else:
            argv = self.ctx.mesh.cmd(self.ctx.mesh.nodes[node], what)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.ctx.mesh.env, stdin=subprocess.DEVNULL)
        self.what, self.scratch = what, scratch
        self.node = node
        return f"{what} on node {node + 1}, to be killed"

    def heal(self) -> None:
        if self.node is None:
            return
        self.node = None
        if self.proc.poll() is None:
            self.ctx.cli_killed.add(self.proc.pid)
            self.proc.kill()
        self.ctx.side.append((self.what, self.proc, self.scratch))


# -- network ---------------------------------------------------------------------------------


def _ns_run(ctx: Ctx, node: int, *argv: str) -> subprocess.CompletedProcess[str]:
    ns = ctx.mesh.ns(ctx.mesh.nodes[node])
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30)


class Partition(Fault):
    """Cut the bridge into two random halves (or isolate one node), heal after the hold."""

    kind = "partition"
    hold = (3.0, 15.0)
    needs_netns = True
    nodes_locked = False
    lock = threading.Lock()

    def inject(self, node: int) -> str:
        if not Partition.lock.acquire(blocking=False):
            raise Skip("a partition is already on")
        count = len(self.ctx.mesh.nodes)
        order = list(range(1, count + 1))
        self.ctx.rng.shuffle(order)
        cut = self.ctx.rng.randint(1, count // 2)
        groups = [sorted(order[:cut]), sorted(order[cut:])]
        try:
            self.ctx.mesh.partition(groups)
        except Exception:
            Partition.lock.release()
            raise
        self.on = True
        return f"partition {groups}"

    def heal(self) -> None:
        if getattr(self, "on", False):
            self.on = False
            try:
                self.ctx.mesh.heal()
            finally:
                Partition.lock.release()


class Netem(Fault):
    """Degrade one node's link for the hold time: ``tc netem`` (loss, delay with jitter,
    reordering, duplication, a rate cap; one to three of them, drawn) where the kernel has
    the netem qdisc. Kernels without it (this CI's) get what they do have: random loss from
    an nftables ``numgen`` rule (kind ``net-loss``) or a rate cap from the ``tbf`` qdisc
    (kind ``net-rate``); delay, reordering and duplication then do not run (the report
    says so)."""

    kind = "netem"
    hold = (3.0, 15.0)
    needs_netns = True
    has_netem: bool | None = None  # probed on the first use

    def inject(self, node: int) -> str:
        rng = self.ctx.rng
        if Netem.has_netem is None:
            p = _ns_run(self.ctx, node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "1ms")
            Netem.has_netem = p.returncode == 0
            _ns_run(self.ctx, node, "tc", "qdisc", "del", "dev", "eth0", "root")
            if not Netem.has_netem:
                self.ctx.log(f"no netem qdisc in this kernel ({p.stderr.strip()}): loss via nftables, "
                             "rate caps via tbf; no delay, reordering or duplication")
        self.node = node
        if not Netem.has_netem:
            return self._fallback(node)
        opts: list[str] = []
        picks = rng.sample(["loss", "delay", "reorder", "duplicate", "rate"], rng.randint(1, 3))
        if "delay" in picks or "reorder" in picks:
            opts += ["delay", f"{rng.choice([20, 50, 150, 400])}ms", f"{rng.choice([5, 20, 50])}ms"]
        if "reorder" in picks:
            opts += ["reorder", f"{rng.choice([5, 25, 50])}%", "50%"]
        if "loss" in picks:
            opts += ["loss", f"{rng.choice([1, 5, 20, 50])}%"]
        if "duplicate" in picks:
            opts += ["duplicate", f"{rng.choice([1, 5, 20])}%"]
        if "rate" in picks:
            opts += ["rate", rng.choice(["256kbit", "1mbit", "8mbit"])]
        p = _ns_run(self.ctx, node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", *opts)
        if p.returncode != 0:
            self.node = None
            raise RuntimeError(f"tc netem failed: {p.stderr.strip()}")
        return f"netem on node {node + 1}: {' '.join(opts)}"

    def _fallback(self, node: int) -> str:
        rng = self.ctx.rng
        if rng.random() < 0.5:
            self.kind = "net-loss"
            pct = rng.choice([1, 5, 20, 50])
            for argv in (["add", "table", "inet", "chaos"],
                         ["add", "chain", "inet", "chaos", "out", "{ type filter hook output priority 0; }"],
                         ["add", "chain", "inet", "chaos", "in", "{ type filter hook input priority 0; }"],
                         ["add", "rule", "inet", "chaos", "out", "numgen", "random", "mod", "100", "<", str(pct), "drop"],
                         ["add", "rule", "inet", "chaos", "in", "numgen", "random", "mod", "100", "<", str(pct), "drop"]):
                p = _ns_run(self.ctx, node, "nft", *argv)
                if p.returncode != 0:
                    self.heal()
                    raise RuntimeError(f"nft {' '.join(argv)} failed: {p.stderr.strip()}")
            return f"loss {pct}% both ways on node {node + 1} (nftables)"
        self.kind = "net-rate"
        rate = rng.choice(["256kbit", "1mbit", "8mbit"])
        p = _ns_run(self.ctx, node, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                    "burst", "32kbit", "latency", "400ms")
        if p.returncode != 0:
            self.heal()
            raise RuntimeError(f"tc tbf failed: {p.stderr.strip()}")
        return f"rate cap {rate} out of node {node + 1} (tbf)"

    def heal(self) -> None:
        if self.node is not None:
            _ns_run(self.ctx, self.node, "tc", "qdisc", "del", "dev", "eth0", "root")
            _ns_run(self.ctx, self.node, "nft", "delete", "table", "inet", "chaos")
            self.node = None


# -- disks -----------------------------------------------------------------------------------


def share_files(home: Path) -> list[Path]:
    root = home / "shares"
    if not root.is_dir():
        return []
    return [p for sub in root.iterdir() if sub.is_dir() and len(sub.name) == 2
            for p in sub.iterdir() if len(p.name) == 64 and not p.name.startswith(".")]


def pack_files(home: Path) -> list[Path]:
    return [p for p in (home / "store" / "packs").glob("*/*") if len(p.name) == 64]


def flip(path: Path, rng: random.Random) -> int:
    """Invert one byte at a random offset, in place (no rewrite of the rest)."""
    size = path.stat().st_size
    if size == 0:
        raise Skip(f"{path.name} is empty")
    at = rng.randrange(size)
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ (1 << rng.randrange(8))]))
    return at


class FlipShare(Fault):
    """Flip one bit of a share a holder keeps for a peer (silent corruption on its disk)."""

    kind = "bitflip-share"
    nodes_locked = False

    def inject(self, node: int) -> str:
        files = sorted(share_files(self.ctx.mesh.nodes[node].home))
        if not files:
            raise Skip("holder keeps no share yet")
        path = self.ctx.rng.choice(files)
        at = flip(path, self.ctx.rng)
        return f"bit flip in share {path.name[:12]} on node {node + 1} at {at}"


class FlipPack(Fault):
    """Flip one bit of a pack in an owner's local store."""

    kind = "bitflip-pack"
    nodes_locked = False

    def inject(self, node: int) -> str:
        files = sorted(pack_files(self.ctx.mesh.nodes[node].home))
        if not files:
            raise Skip("no pack in the local store yet")
        path = self.ctx.rng.choice(files)
        at = flip(path, self.ctx.rng)
        return f"bit flip in pack {path.name[:12]} on node {node + 1} at {at}"


class CrashTruncate(Fault):
    """SIGKILL a holder's daemon and cut one of its share files short, as a crash between
    a write and its flush leaves it; restart after the hold."""

    kind = "crash-truncate"
    hold = (0.5, 3.0)

    def inject(self, node: int) -> str:
        files = sorted(share_files(self.ctx.mesh.nodes[node].home))
        if not files or not self.ctx.mesh.nodes[node].running:
            raise Skip("no share file or daemon down")
        self.node = node
        self.ctx.kill_daemon(node)
        path = self.ctx.rng.choice(files)
        size = path.stat().st_size
        keep = self.ctx.rng.randrange(size) if size else 0
        os.truncate(path, keep)
        return f"crash of node {node + 1}, share {path.name[:12]} cut to {keep}/{size}"

    def heal(self) -> None:
        if self.node is not None:
            self.ctx.start_daemon(self.node)
            self.node = None


class DiskFull(Fault):
    """Fill the small loop-mounted file system a node's home lives on (its store as an
    owner and its share vault as a holder), free it after the hold."""

    kind = "disk-full"
    hold = (3.0, 15.0)

    def unavailable(self) -> str | None:
        return None if self.ctx.loop_homes else "no home on a loop device (needs root, losetup, mkfs.ext4)"

    def candidates(self) -> list[int]:
        return sorted(self.ctx.loop_homes)

    def inject(self, node: int) -> str:
        home = self.ctx.mesh.nodes[node].home
        self.filler = home / "chaos-filler"
        free = os.statvfs(home).f_bavail * os.statvfs(home).f_frsize
        # fallocate takes the free blocks at once; writing until ENOSPC takes what it left.
        subprocess.run(["fallocate", "-l", str(max(free, 4096)), str(self.filler)], capture_output=True)
        try:
            with open(self.filler, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * 65536)
        except OSError:
            pass
        self.node = node
        left = os.statvfs(home).f_bavail * os.statvfs(home).f_frsize
        return f"disk of node {node + 1} full ({left} bytes left)"

    def heal(self) -> None:
        if self.node is not None:
            try:
                self.filler.unlink(missing_ok=True)
            except OSError:
                pass
            self.node = None


# -- hostile strangers ------------------------------------------------------------------------


class Hostile(Fault):
    """A stranger (``hostile.py``, a process of its own in another node's namespace) that
    floods a daemon with PUTs (one identity, or a new identity for each), opens many streams,
    or lies about the bytes it sends, for the hold time. The daemon must live on, keep its
    quotas and log no traceback; what the stranger saw is kept in the side record."""

    kind = "hostile"
    hold = (3.0, 10.0)
    needs_netns = True
    nodes_locked = False
    flavours = ("put-flood", "many-identities", "many-streams", "lying-put")

    def inject(self, node: int) -> str:
        mesh = self.ctx.mesh
        victim = mesh.nodes[node]
        if not victim.running:
            raise Skip("daemon not running")
        flavour = self.ctx.rng.choice(self.flavours)
        self.kind = f"hostile-{flavour}"
        host = mesh.nodes[(node + 1) % len(mesh.nodes)]  # the stranger's network: another node's
        secs = self.ctx.rng.uniform(*self.hold)
        here = Path(__file__).resolve().parent
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", mesh.ns(host), sys.executable, "-P", str(here / "hostile.py"), flavour,
             victim.peer_id, mesh.addr(victim), f"{secs:.1f}", str(self.ctx.rng.randrange(1 << 30))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mesh.env, stdin=subprocess.DEVNULL)
        self.node = node
        return f"{flavour} against node {node + 1} for {secs:.0f} s"

    def heal(self) -> None:
        if self.node is None:
            return
        self.node = None
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        last = out.strip().splitlines()[-1] if out.strip() else ""
        self.ctx.hostile.append(last or f"no summary (exit {self.proc.returncode}): {err.strip()[-300:]}")


KINDS: tuple[type[Fault], ...] = (KillDaemon, StallDaemon, KillBackup, KillCommand, Partition, Netem,
                                  FlipShare, FlipPack, CrashTruncate, DiskFull, Hostile)
