"""The chaos campaign (issue 20): real daemons in one group, concurrent backups of changing
trees, faults of every kind throughout, and at the end the proof that nothing was lost.

One command::

    sudo .venv/bin/python -m tests.chaos --profile short            # 3-5 min, what CI runs
    sudo .venv/bin/python -m tests.chaos --profile full --seed 7    # 8 daemons, 30 min soak

What one run does:

1. ``N`` homes (``netmesh.NetMesh``: each daemon in its own network namespace on a bridge,
   when root and iproute2 allow; else ``LocalMesh`` on loopback, network faults skipped),
   some on a small loop-mounted ext4 (to fill), one with its clock days ahead
   (``CORESTATE_CLOCK_OFFSET``); node 1 creates a group, the others join.
2. Rounds until the soak time is spent: every source tree is mutated (``treegen``, seeded),
   its manifest (path -> type, mode, blake3) recorded, and every node backs up at once.
   A snapshot a backup reports is recorded with the manifest of its source at that time.
3. Meanwhile a fault thread draws a fault (kind, node, hold time) from the seeded RNG every
   few seconds, injects it, and heals it after the hold (``faults.py``). A sampler reads
   VmRSS, VmHWM and open fds of every daemon every few seconds and watches for a daemon
   that died without being killed by us.
4. The end: everything healed, every daemon up, sync rounds and ``repair`` on every node,
   then every recorded snapshot of every node restored and compared with its manifest, and
   ``check --read-data`` on every node; daemon logs searched for tracebacks and alerts.
5. ``REPORT.json`` and ``REPORT.md`` (``report.py``); the exit code is non-zero when
   anything was lost, a check failed, or anything crashed.

Crashes are: a daemon that exited without our SIGKILL, a ``Traceback`` in a daemon log or
in a CLI command's stderr, a CLI exit code outside the documented ones (0, 1, 2, 3, 130)
for a command we did not kill.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
from corestate.node.runtime.localmesh import LocalMesh

from .faults import KINDS, Ctx, Fault, Skip

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
for _p in (TESTS, TESTS / "bench"):  # meshutil, netmesh, treegen: plain modules beside the tests
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import treegen  # noqa: E402
from meshutil import edit_config, last_json, restored  # noqa: E402

DOCUMENTED_EXITS = {0, 1, 2, 3, 130}
BACKUP_OK = (0, 3)  # 3: fewer peers than wanted answered; the snapshot is still made
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Profile:
    nodes: int
    soak: float  # seconds of rounds under faults
    tree: str  # treegen size of each source
    mutate: float  # percent of bytes changed between rounds
    fault_gap: tuple[float, float]  # seconds between two faults of one fault thread
    fault_threads: int
    loop_homes: int  # how many homes live on a small loop-mounted file system
    loop_size: str
    sample_every: float
    warmup: float  # seconds after a daemon's start before its memory baseline
    clock_offset: str  # the skewed node's clock offset


PROFILES = {
    "short": Profile(nodes=4, soak=120, tree="2MiB", mutate=10, fault_gap=(1.0, 3.0), fault_threads=2,
                     loop_homes=1, loop_size="256M", sample_every=2.0, warmup=20, clock_offset="3d"),
    "full": Profile(nodes=8, soak=1800, tree="24MiB", mutate=5, fault_gap=(2.0, 8.0), fault_threads=2,
                    loop_homes=2, loop_size="2G", sample_every=5.0, warmup=120, clock_offset="3d"),
}


def manifest(root: Path) -> dict[str, str]:
    """path (relative to ``root``) -> "d" | "l:<target>" | "f:<mode>:<blake3>" for the tree."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        d = Path(dirpath)
        for name in dirs + files:
            p = d / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if os.path.islink(p):
                out[rel] = "l:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "d"
            else:
                h = blake3.blake3()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                out[rel] = f"f:{st.st_mode & 0o7777:o}:{h.hexdigest()}"
        dirs[:] = [x for x in dirs if not os.path.islink(d / x)]
    return out


def manifest_bytes(m: dict[str, str], root: Path) -> int:
    return sum((root / p).lstat().st_size for p, v in m.items() if v.startswith("f:"))


def diff_manifests(want: dict[str, str], got: dict[str, str], limit: int = 8) -> list[str]:
    out = [f"missing {p}" for p in sorted(set(want) - set(got))]
    out += [f"extra {p}" for p in sorted(set(got) - set(want))]
    out += [f"differs {p}: {want[p][:40]} != {got[p][:40]}" for p in sorted(set(want) & set(got))
            if want[p] != got[p]]
    return out[:limit]


def _mesh_class(netns: bool) -> type[LocalMesh]:
    if netns:
        from netmesh import NetMesh
        return NetMesh
    return LocalMesh


def make_mesh(base: Path, prof: Profile, netns: bool, skewed: int) -> LocalMesh:
    """A mesh whose node ``skewed`` runs its daemon with ``CORESTATE_CLOCK_OFFSET``."""
    cls = _mesh_class(netns)

    class ChaosMesh(cls):  # type: ignore[valid-type, misc]
        def cmd(self, node: Any, *args: str) -> list[str]:
            argv = super().cmd(node, *args)
            if node.index == skewed and args[:2] == ("node", "run"):
                k = argv.index(sys.executable)
                argv = [*argv[:k], "env", f"CORESTATE_CLOCK_OFFSET={prof.clock_offset}", *argv[k:]]
            return argv

    return ChaosMesh(base, prof.nodes)


@dataclass
class Snap:
    node: int
    round: int
    snapshot: str
    manifest: dict[str, str]
    bytes: int


@dataclass
class State:
    """Everything the report is made of."""

    seed: int
    profile: str
    started: float = field(default_factory=time.monotonic)
    rounds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faults_skipped: dict[str, str] = field(default_factory=dict)
    fault_errors: list[str] = field(default_factory=list)
    snaps: list[Snap] = field(default_factory=list)
    backups: dict[str, int] = field(default_factory=lambda: {"ok": 0, "incomplete": 0, "failed": 0,
                                                              "killed": 0})
    backup_failures: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    verified: int = 0
    bytes_verified: int = 0
    checks: dict[str, int] = field(default_factory=dict)
    repairs: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)  # t, node, pid, rss, hwm, fds
    started_at: dict[int, float] = field(default_factory=dict)  # pid -> monotonic start
    alerts: dict[str, int] = field(default_factory=dict)
    clock: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, base: Path, profile: str, seed: int, *, soak: float | None = None,
                 out: Path | None = None) -> None:
        self.base = base
        self.prof = PROFILES[profile]
        if soak is not None:
            self.prof = Profile(**{**self.prof.__dict__, "soak": soak})
        self.rng = random.Random(seed)
        self.state = State(seed, profile)
        self.out = out or HERE
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.loops: list[tuple[Path, str]] = []  # (mount point, loop device)
        self.skewed = 1 if self.prof.nodes > 1 else 0

    # -- logging -------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.state.started:7.1f}s] {msg}"
        print(line, flush=True)
        with self.lock:
            self.state.log_lines.append(line)

    # -- set-up --------------------------------------------------------------------------

    def _netns(self) -> str | None:
        from netmesh import unavailable
        return unavailable()

    def _loop_home(self, home: Path) -> str | None:
        """Mount a fresh small ext4 (no reserved blocks) at ``home``; None on success, else why not."""
        if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
            return "needs root, losetup and mkfs.ext4"
        img = self.base / f"{home.name}.img"
        subprocess.run(["truncate", "-s", self.prof.loop_size, str(img)], check=True)
        mk = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], capture_output=True, text=True)
        if mk.returncode != 0:
            return f"mkfs.ext4 failed: {mk.stderr.strip()}"
        dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
        if dev.returncode != 0:
            return f"losetup failed: {dev.stderr.strip()}"
        home.mkdir(parents=True, exist_ok=True)
        m = subprocess.run(["mount", dev.stdout.strip(), str(home)], capture_output=True, text=True)
        if m.returncode != 0:
            subprocess.run(["losetup", "-d", dev.stdout.strip()], capture_output=True)
            return f"mount failed: {m.stderr.strip()}"
        self.loops.append((home, dev.stdout.strip()))
        os.chmod(home, 0o700)
        return None

    def setup(self) -> None:
        why = self._netns()
        self.netns = why is None
        self.state.environment["netns"] = why or "yes"
        self.mesh = make_mesh(self.base / "mesh", self.prof, self.netns, self.skewed)
        loop_homes: set[int] = set()
        # The last nodes get the small disks (node 1 is the admin; node 2 the skewed clock).
        for i in range(self.prof.nodes - 1, self.prof.nodes - 1 - self.prof.loop_homes, -1):
            why = self._loop_home(self.mesh.nodes[i].home)
            if why:
                self.state.environment["loop_homes"] = why
                break
            loop_homes.add(i)
        if loop_homes:
            self.state.environment["loop_homes"] = f"nodes {sorted(j + 1 for j in loop_homes)}, {self.prof.loop_size} ext4"
        self.state.environment["clock_skew"] = f"node {self.skewed + 1}: {self.prof.clock_offset} ahead"
        self.log(f"seed {self.state.seed}, profile {self.state.profile}, {self.prof.nodes} nodes, "
                 f"netns: {self.state.environment['netns']}, loop homes: {self.state.environment.get('loop_homes')}")
        self.mesh.create()
        for n in self.mesh.nodes:
            edit_config(n.home, "pack_size = 16777216", "pack_size = 1048576")
            edit_config(n.home, "peer_timeout = 10", "peer_timeout = 3")
        # A daemon on a full disk cannot write its log there either: the logs of the loop
        # homes live beside them (daemon.log a symlink), so the cause of a failure is kept.
        (self.base / "logs").mkdir(exist_ok=True)
        for i in loop_homes:
            (self.mesh.nodes[i].home / "daemon.log").symlink_to(self.base / "logs" / f"node{i + 1}.live.log")
        self.ctx = Ctx(self.mesh, self.rng, self.base, self.log, self.netns, loop_homes)
        self.ctx.procs.acquire()
        try:
            self.mesh.start(timeout=180)
        finally:
            self.ctx.procs.release()
        self._form_group()
        self.sources = []
        for n in self.mesh.nodes:
            src = self.base / "src" / f"node{n.index + 1}"
            treegen.generate(src, self.prof.tree, seed=self.state.seed * 100 + n.index)
            self.sources.append(src)

    def _form_group(self) -> None:
        admin = self.mesh.nodes[0]
        self.mesh.run(admin, "group", "create", "chaos")
        for n in self.mesh.nodes[1:]:
            token = self.mesh.run(admin, "group", "invite").stdout.strip().splitlines()[-1]
            self.mesh.run(n, "group", "join", token, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            ok = True
            for n in self.mesh.nodes:
                p = self.mesh.run(n, "group", "sync", "--json", check=False, timeout=120)
                peers = last_json(p)["peers"] if p.stdout.strip() else {}
                ok = ok and len(peers) == len(self.mesh.nodes) - 1 and all(r == "ok" for r in peers.values())
            if ok:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the group did not form: not every member syncs with every other")
            time.sleep(1)
        self.log("group formed")

    # -- the sampler and crash watch -----------------------------------------------------

    def _sample(self) -> None:
        while not self.stop.wait(self.prof.sample_every):
            self.sample_once()

    def sample_once(self) -> None:
        now = time.monotonic()
        with self.ctx.procs:
            for n in self.mesh.nodes:
                if n.proc is None:
                    continue
                pid = n.proc.pid
                self.state.started_at.setdefault(pid, now)
                rc = n.proc.poll()
                if rc is not None:
                    if pid not in self.ctx.killed_pids:
                        tail = n.log.read_text(errors="replace")[-1500:] if n.log else ""
                        self.crash(f"daemon {n.index + 1} (pid {pid}) exited {rc} on its own: {tail}")
                        self.ctx.killed_pids.add(pid)  # counted once
                        threading.Thread(target=self._restart_crashed, args=(n.index,), daemon=True).start()
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                except OSError:
                    continue
                vals = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in status.splitlines()
                                                          if ln.startswith(("VmRSS", "VmHWM")))}
                self.state.samples.append((now, n.index, pid, vals.get("VmRSS", 0), vals.get("VmHWM", 0), fds))

    def _restart_crashed(self, i: int) -> None:
        with self.ctx.node_locks[i]:
            try:
                with self.ctx.procs:
                    self.mesh.stop(i)
                self.ctx.start_daemon(i)
            except Exception as exc:
                self.log(f"restart of crashed daemon {i + 1} failed: {exc}")

    def crash(self, what: str) -> None:
        self.log(f"CRASH: {what[:300]}")
        with self.lock:
            self.state.crashes.append(what)

    # -- faults --------------------------------------------------------------------------

    def _faults(self, rng: random.Random) -> None:
        kinds: list[type[Fault]] = []
        for k in KINDS:
            why = k(self.ctx).unavailable()
            if why:
                self.state.faults_skipped[k.kind] = why
            else:
                kinds.append(k)
        while not self.stop.wait(rng.uniform(*self.prof.fault_gap)):
            fault = rng.choice(kinds)(self.ctx)
            cands = fault.candidates()
            if not cands:
                continue
            node = rng.choice(cands)
            lock = self.ctx.node_locks[node] if fault.nodes_locked else None
            if lock is not None and not lock.acquire(blocking=False):
                continue
            try:
                try:
                    what = fault.inject(node)
                except Skip:
                    continue
                except Exception as exc:
                    self.log(f"fault {fault.kind} failed to inject: {exc!r}")
                    self.state.fault_errors.append(f"{fault.kind}: {exc!r}"[:300])
                    fault.heal()
                    continue
                with self.lock:
                    self.state.faults[fault.kind] = self.state.faults.get(fault.kind, 0) + 1
                self.log(f"fault: {what}")
                hold = rng.uniform(*fault.hold)
                if hold:
                    self.stop.wait(hold)
                try:
                    fault.heal()
                except Exception as exc:
                    self.log(f"heal of {fault.kind} failed: {exc!r}")
                    self.state.fault_errors.append(f"heal {fault.kind}: {exc!r}"[:300])
            finally:
                if lock is not None:
                    lock.release()

    # -- rounds --------------------------------------------------------------------------

    def round(self, r: int) -> None:
        if r > 0:
            for i, src in enumerate(self.sources):
                treegen.mutate(src, self.prof.mutate, seed=self.state.seed * 10_000 + r * 100 + i)
        mans = [manifest(s) for s in self.sources]
        procs: dict[int, subprocess.Popen[str]] = {}
        for i, src in enumerate(self.sources):
            procs[i] = subprocess.Popen(self.ctx.cmd(i, "backup", str(src), "--json"), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=self.mesh.env,
                                        stdin=subprocess.DEVNULL)
            self.ctx.cli[i] = procs[i]
        for i, p in procs.items():
            try:
                out, err = p.communicate(timeout=900)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                self.crash(f"backup on node {i + 1} round {r} hung for 15 minutes")
                continue
            finally:
                self.ctx.cli.pop(i, None)
            self._judge_cli(f"backup node {i + 1} round {r}", p, err)
            if p.pid in self.ctx.cli_killed:
                self.state.backups["killed"] += 1
            elif p.returncode in BACKUP_OK and out.strip():
                snap = last_json(out)["snapshot_id"]
                self.state.snaps.append(Snap(i, r, snap, mans[i], manifest_bytes(mans[i], self.sources[i])))
                self.state.backups["ok" if p.returncode == 0 else "incomplete"] += 1
            else:
                self.state.backups["failed"] += 1
                self.state.backup_failures.append(f"node {i + 1} round {r}: exit {p.returncode}: "
                                                  f"{err.strip()[-300:]}")
        self.log(f"round {r} done: {sum(1 for s in self.state.snaps if s.round == r)}/{len(procs)} snapshots")

    def _judge_cli(self, what: str, p: subprocess.Popen[str] | subprocess.CompletedProcess[str],
                   err: str) -> None:
        killed = isinstance(p, subprocess.Popen) and p.pid in self.ctx.cli_killed
        if TRACEBACK in (err or ""):
            self.crash(f"{what}: traceback in stderr: {err[-1500:]}")
        elif not killed and p.returncode not in DOCUMENTED_EXITS:
            self.crash(f"{what}: exit {p.returncode} (undocumented): {err[-600:]}")

    # -- the end -------------------------------------------------------------------------

    def settle(self) -> None:
        """Everything healed and up; sync and repair everywhere, so the mesh is whole."""
        if self.netns:
            self.mesh.heal()
            for n in self.mesh.nodes:
                subprocess.run(["ip", "netns", "exec", self.mesh.ns(n), "tc", "qdisc", "del", "dev", "eth0",
                                "root"], capture_output=True)
                subprocess.run(["ip", "netns", "exec", self.mesh.ns(n), "nft", "delete", "table", "inet",
                                "chaos"], capture_output=True)
        for n in self.mesh.nodes:
            if n.proc is not None:
                try:
                    os.kill(n.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for i in self.ctx.loop_homes:
            (self.mesh.nodes[i].home / "chaos-filler").unlink(missing_ok=True)
        for i in range(len(self.mesh.nodes)):
            self.ctx.start_daemon(i)
        for what, p, _ in self.ctx.side:  # the killed maintenance commands
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            self._judge_cli(f"killed {what}", p, err)
        for _ in range(2):
            for n in self.mesh.nodes:
                p = self.mesh.run(n, "group", "sync", "--json", check=False, timeout=300)
                self._judge_cli(f"group sync node {n.index + 1}", p, p.stderr)
        for n in self.mesh.nodes:
            p = self.mesh.run(n, "repair", "--json", check=False, timeout=900)
            self._judge_cli(f"repair node {n.index + 1}", p, p.stderr)
            self.state.repairs[str(n.index + 1)] = p.returncode
        self.log(f"settled; repair exit codes {self.state.repairs}")

    def verify(self) -> None:
        """Every recorded snapshot restored and compared with its manifest; one thread per
        node (each node's restores one after another, in its own daemon)."""
        by_node: dict[int, list[Snap]] = {}
        for s in self.state.snaps:
            by_node.setdefault(s.node, []).append(s)
        threads = [threading.Thread(target=self._verify_node, args=(snaps,)) for snaps in by_node.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.log(f"verified {self.state.verified}/{len(self.state.snaps)} snapshots, "
                 f"{self.state.bytes_verified} bytes")
        for n in self.mesh.nodes:
            p = self.mesh.run(n, "check", "--read-data", "--json", check=False, timeout=900)
            self._judge_cli(f"check node {n.index + 1}", p, p.stderr)
            self.state.checks[str(n.index + 1)] = p.returncode
            if p.returncode != 0:
                self.log(f"check --read-data on node {n.index + 1} exited {p.returncode}: "
                         f"{(p.stdout + p.stderr).strip()[-600:]}")

    def _verify_node(self, snaps: list[Snap]) -> None:
        for s in snaps:
            target = self.base / "restore" / f"n{s.node + 1}-{s.snapshot[:12]}"
            p = self.mesh.run(self.mesh.nodes[s.node], "restore", s.snapshot, "--target", str(target),
                              "--json", check=False, timeout=900)
            self._judge_cli(f"restore {s.snapshot[:12]} node {s.node + 1}", p, p.stderr)
            where = restored(target, self.sources[s.node])
            if p.returncode != 0:
                self.lost(s, f"restore exited {p.returncode}: {p.stderr.strip()[-400:]}")
            elif not where.is_dir():
                self.lost(s, "restore made no tree")
            else:
                diff = diff_manifests(s.manifest, manifest(where))
                if diff:
                    self.lost(s, "; ".join(diff))
                else:
                    with self.lock:
                        self.state.verified += 1
                        self.state.bytes_verified += s.bytes
            shutil.rmtree(target, ignore_errors=True)

    def lost(self, s: Snap, why: str) -> None:
        self.log(f"LOST: snapshot {s.snapshot[:12]} of node {s.node + 1} (round {s.round}): {why[:400]}")
        self.state.lost.append(f"node {s.node + 1} snapshot {s.snapshot} round {s.round}: {why[:1000]}")

    def scan_logs(self) -> None:
        skewed_id = self.mesh.nodes[self.skewed].peer_id
        seen_by = []
        for n in self.mesh.nodes:
            text = n.log.read_text(errors="replace") if n.log else ""
            at = 0
            while (at := text.find(TRACEBACK, at)) >= 0:
                # The whole block (to the next log record), so the leaf exception is kept.
                end = text.find("\n20", at)
                block = text[max(0, text.rfind("\n", 0, at - 1) + 1):end if end > 0 else len(text)]
                if len(block) > 3000:
                    block = block[:800] + "\n  [...]\n" + block[-2000:]
                self.crash(f"traceback in daemon log of node {n.index + 1}: {block}")
                at += 1
            for line in text.splitlines():
                if " alert " in line:
                    name = line.split(" alert ", 1)[1].split()[0]
                    self.state.alerts[name] = self.state.alerts.get(name, 0) + 1
                    if name == "clock-ahead":
                        seen_by.append((n.index + 1, skewed_id in line))
        self.state.clock = {"node": self.skewed + 1, "offset": self.prof.clock_offset,
                            "clock_ahead_alert_on": sorted({i for i, _ in seen_by}),
                            "alert_names_the_skewed_node": any(named for _, named in seen_by),
                            "own_snapshots_verified": sum(1 for s in self.state.snaps if s.node == self.skewed
                                                          and not any(s.snapshot in x for x in self.state.lost))}

    # -- the whole run -------------------------------------------------------------------

    def run(self) -> int:
        from .report import write
        try:
            self.setup()
            sampler = threading.Thread(target=self._sample, daemon=True)
            sampler.start()
            threads = [threading.Thread(target=self._faults, args=(random.Random(self.rng.random()),),
                                        daemon=True) for _ in range(self.prof.fault_threads)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            r = 0
            while r == 0 or time.monotonic() - t0 < self.prof.soak:
                self.round(r)
                r += 1
                self.state.rounds = r
            self.stop.set()
            for t in threads:
                t.join(timeout=120)
            sampler.join(timeout=30)
            self.log("faults stopped")
            self.settle()
            self.sample_once()
            self.verify()
            self.scan_logs()
        except Exception as exc:
            import traceback
            self.crash(f"the campaign itself failed: {traceback.format_exc()[-3000:]}")
            self.log(f"campaign aborted: {exc!r}")
        finally:
            self.stop.set()
            self.teardown()
        rep = write(self, self.out)
        self.log(f"report: {self.out / 'REPORT.md'}")
        return 0 if rep["ok"] else 1

    def teardown(self) -> None:
        mesh = getattr(self, "mesh", None)
        if mesh is not None:
            for n in mesh.nodes:
                if n.proc is not None:
                    try:
                        os.kill(n.proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            try:
                mesh.close()
            except Exception as exc:
                self.log(f"closing the mesh: {exc!r}")
            logs = self.base / "logs"  # out of the homes: the loop-mounted ones go away below
            logs.mkdir(exist_ok=True)
            for n in mesh.nodes:
                if n.log is not None and n.log.exists():
                    shutil.copy(n.log, logs / f"node{n.index + 1}.log")  # follows the symlink
        for home, dev in reversed(self.loops):
            subprocess.run(["umount", "-l", str(home)], capture_output=True)
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.loops.clear()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    ap.add_argument("--soak", type=float, default=None, help="seconds of rounds (overrides the profile)")
    ap.add_argument("--out", type=Path, default=HERE, help="where REPORT.md/REPORT.json go")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (homes, logs)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    print(f"chaos: seed {seed} (re-run with --seed {seed})", flush=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="corestate-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return Campaign(work, a.profile, seed, soak=a.soak, out=a.out).run()
    finally:
        if a.keep:
            print(f"chaos: work folder kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["PROFILES", "Campaign", "diff_manifests", "main", "manifest"]
