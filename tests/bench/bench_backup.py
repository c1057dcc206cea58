#!/usr/bin/env python3
"""Side-by-side backup benchmark: CoreState against restic and borg on one generated tree.

Each run generates the same seeded tree (treegen.py), gives every tool a fresh repository,
and drives the tools in lockstep so they all see the same bytes:

  1. first backup of the fresh tree          -> MB/s of source bytes (10^6 B/s)
  2. re-backup with nothing changed           -> seconds
  3. one treegen mutation (~5% of the bytes), then a backup  -> seconds
  4. full restore of the latest snapshot     -> MB/s of the (mutated) source bytes
  store size after the three backups; peak RSS over all four phases.

Rules learned on the benchmark machine, and kept here on purpose:
- the page cache is evicted after about a minute idle, so the input tree and the tool's
  own state (repository, cache, home) are read right before each timed phase (warm cache
  for everyone), after a `sync` that keeps one phase's writeback out of the next;
- creating files soon after mass deletion is slow, so the tools' order rotates across
  runs, and trees are deleted only between runs;
- peak RSS is the tool's `ru_maxrss` (its largest single process) as GNU `/usr/bin/time`
  reports it; `wait4` on our own child would not do: a vforked child inherits the
  harness's high-water RSS at exec, so even /bin/true "uses" what the harness holds. The
  process tree's summed RSS is also sampled from /proc, because a tool may use workers.

Results are medians over `--runs`. The first run checks that each restored tree equals the
source (`diff -r --no-dereference`, plus a metadata walk) and runs each tool's own check;
a mismatch is reported loudly and the benchmark goes on.

    python tests/bench/bench_backup.py --size 1GiB --runs 5 [--json results.json]
    python tests/bench/bench_backup.py --size 64MiB --runs 1 --tools restic,borg
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
PASSPHRASE = "corestate-bench-passphrase"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1_000_000
MiB = 1 << 20
GNU_TIME = "/usr/bin/time"


def _load_treegen() -> ModuleType:
    name = "corestate_bench_treegen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "treegen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


treegen = _load_treegen()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Running one command: wall time, wait4 rusage, sampled RSS of the process tree.
# --------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One finished command. maxrss_kib from GNU time (else wait4, see module docstring);
    tree_rss_bytes: the peak of the summed RSS of its process tree, sampled from /proc."""

    cmd: list[str]
    rc: int
    seconds: float
    maxrss_kib: int
    tree_rss_bytes: int
    stdout: str
    stderr: str
    timed_out: bool = False
    maxrss_source: str = "time"

    def tail(self, n: int = 12) -> str:
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(lines[-n:])


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


def _tree_rss(pid: int) -> int:
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_dir: Path | None = None,
    tag: str = "cmd",
    timeout: float | None = None,
) -> Proc:
    """Run cmd to completion; its output goes to files (no pipe can fill up and stall it)."""
    log_dir = log_dir or Path("/tmp")
    log_dir.mkdir(parents=True, exist_ok=True)
    out_p, err_p = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
    rss_p = log_dir / f"{tag}.maxrss"
    rss_p.unlink(missing_ok=True)
    has_time = os.access(GNU_TIME, os.X_OK)
    argv = [GNU_TIME, "-f", "%M", "-o", str(rss_p), *cmd] if has_time else cmd
    full_env = {**os.environ, **(env or {})}
    peak = [0]
    done = threading.Event()
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_rss(p.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = None
        timed_out = [False]
        if timeout:

            def kill() -> None:
                timed_out[0] = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        seconds = time.perf_counter() - t0
        done.set()
        if timer:
            timer.cancel()
        sampler.join()
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    maxrss, source = ru.ru_maxrss, "wait4"
    with contextlib.suppress(OSError, ValueError, IndexError):
        # GNU time writes "Command exited with non-zero status N" first when it did.
        maxrss, source = int(rss_p.read_text().split()[-1]), "time"
    return Proc(
        cmd=cmd,
        rc=p.returncode,
        seconds=seconds,
        maxrss_kib=maxrss,
        maxrss_source=source,
        tree_rss_bytes=peak[0],
        stdout=out_p.read_text(errors="replace"),
        stderr=err_p.read_text(errors="replace"),
        timed_out=timed_out[0],
    )


# --------------------------------------------------------------------------------------
# Helpers: pre-reading, sizes, verification.
# --------------------------------------------------------------------------------------


def preread(*roots: Path) -> int:
    """Read every regular file under roots (symlinks not followed) into the page cache."""
    buf = bytearray(1 << 20)
    total = 0
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    if not stat.S_ISREG(os.lstat(p).st_mode):
                        continue
                    with open(p, "rb", buffering=0) as f:
                        while n := f.readinto(buf):
                            total += n
                except OSError:
                    pass  # a tool's lock or temp file that went away
    return total


def apparent_size(root: Path) -> int:
    """Sum of st_size of the regular files under root, each inode once."""
    seen: set[int] = set()
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                s = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(s.st_mode) and s.st_ino not in seen:
                seen.add(s.st_ino)
                total += s.st_size
    return total


def rmtree(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        # Restored trees may hold read-only folders; make them writable first.
        for dirpath, dirnames, _ in os.walk(p):
            for d in dirnames:
                with contextlib.suppress(OSError):
                    full = os.path.join(dirpath, d)
                    if not os.path.islink(full):
                        os.chmod(full, 0o755)
        shutil.rmtree(p, ignore_errors=True)


def _meta(root: Path) -> dict[str, tuple[int, int, int, str]]:
    out: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            kind = stat.S_IFMT(s.st_mode)
            link = os.readlink(p) if stat.S_ISLNK(s.st_mode) else ""
            mtime = 0 if stat.S_ISLNK(s.st_mode) else s.st_mtime_ns
            out[os.path.relpath(p, root)] = (kind, s.st_mode & 0o7777, mtime, link)
    return out


def _hardlink_groups(root: Path) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            if stat.S_ISREG(s.st_mode) and s.st_nlink > 1:
                groups.setdefault(s.st_ino, set()).add(os.path.relpath(p, root))
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def verify(src: Path, restored: Path, log_dir: Path) -> dict[str, Any]:
    """diff -r the content, then compare types, modes, mtimes, link targets, hardlinks."""
    if not restored.is_dir():
        parent = restored
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        found = sorted(os.listdir(parent))[:10] if parent.is_dir() else []
        return {"ok": False, "problems": [f"no restored tree at {restored}; {parent} has {found}"]}
    d = run(
        ["diff", "-r", "--no-dereference", str(src), str(restored)],
        log_dir=log_dir,
        tag="verify-diff",
    )
    problems: list[str] = []
    if d.rc != 0:
        lines = (d.stdout + d.stderr).splitlines()
        problems.append(
            f"diff -r: {len(lines)} lines of differences, first: " + " | ".join(lines[:8])
        )
    a, b = _meta(src), _meta(restored)
    counts = {"missing": 0, "extra": 0, "type": 0, "mode": 0, "mtime": 0, "link": 0}
    examples: list[str] = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            what = "missing"
        elif rel not in a:
            what = "extra"
        elif a[rel][0] != b[rel][0]:
            what = "type"
        elif a[rel][3] != b[rel][3]:
            what = "link"
        elif a[rel][1] != b[rel][1]:
            what = "mode"
        elif a[rel][2] != b[rel][2]:
            what = "mtime"
        else:
            continue
        counts[what] += 1
        if len(examples) < 6:
            examples.append(f"{what}: {rel}")
    for what, n in counts.items():
        if n:
            problems.append(f"{n} entries differ in {what}")
    if examples:
        problems.append("e.g. " + "; ".join(examples))
    ga, gb = _hardlink_groups(src), _hardlink_groups(restored)
    if ga != gb:
        problems.append(
            f"hardlinks: {len(ga)} groups in source, {len(gb)} restored, {len(ga ^ gb)} differ"
        )
    return {"ok": not problems, "problems": problems, "meta_counts": counts}


# --------------------------------------------------------------------------------------
# The tools. Each gets a workspace folder per run; commands are built here, run by run().
# --------------------------------------------------------------------------------------


class ToolError(Exception):
    """A tool command failed; the message says which and why."""


@dataclass
class Workspace:
    """A tool's folders for one run; logs live apart so they outlive the run's cleanup."""

    root: Path
    logs: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def state(self) -> Path:
        return self.root / "state"  # caches, homes: everything the tool keeps locally

    @property
    def restore(self) -> Path:
        return self.root / "restore"


class Tool:
    name = "tool"
    label = "tool"
    ok_codes: tuple[int, ...] = (0,)
    warn_codes: tuple[int, ...] = ()

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout

    def unavailable(self) -> str | None:
        """Why the tool cannot run here, or None."""
        return None

    def version(self) -> str:
        return ""

    def env(self, ws: Workspace) -> dict[str, str]:
        return {}

    def _run(self, ws: Workspace, cmd: list[str], tag: str, cwd: Path | None = None) -> Proc:
        p = run(cmd, env=self.env(ws), cwd=cwd, log_dir=ws.logs, tag=tag, timeout=self.timeout)
        if p.timed_out:
            raise ToolError(f"{self.name} {tag}: timed out after {self.timeout:.0f} s")
        if p.rc not in self.ok_codes + self.warn_codes:
            raise ToolError(f"{self.name} {tag}: exit {p.rc}: {' '.join(cmd)}\n{p.tail()}")
        return p

    def init(self, ws: Workspace) -> None:
        raise NotImplementedError

    def backup(self, ws: Workspace, src: Path, tag: str) -> Proc:
        raise NotImplementedError

    def restore(self, ws: Workspace, tag: str) -> Proc:
        raise NotImplementedError

    def restored_root(self, ws: Workspace, src: Path) -> Path:
        """Where the restored copy of src lands: its full original path under the target."""
        return ws.restore / str(src.resolve()).lstrip("/")

    def store_bytes(self, ws: Workspace) -> tuple[int, str]:
        return apparent_size(ws.repo), f"apparent size of {ws.repo.name}/"

    def check(self, ws: Workspace) -> Proc:
        raise NotImplementedError

    def backup_info(self, p: Proc) -> dict[str, Any]:
        return {}


class Restic(Tool):
    name = label = "restic"
    warn_codes = (3,)  # snapshot made, some files unreadable

    def unavailable(self) -> str | None:
        return None if shutil.which("restic") else "restic is not installed"

    def version(self) -> str:
        return subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()

    def env(self, ws: Workspace) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSPHRASE, "RESTIC_CACHE_DIR": str(ws.state / "cache")}

    def init(self, ws: Workspace) -> None:
        self._run(ws, ["restic", "-r", str(ws.repo), "init"], "init")

    def backup(self, ws: Workspace, src: Path, tag: str) -> Proc:
        return self._run(ws, ["restic", "-r", str(ws.repo), "backup", str(src)], tag)

    def restore(self, ws: Workspace, tag: str) -> Proc:
        cmd = ["restic", "-r", str(ws.repo), "restore", "latest", "--target", str(ws.restore)]
        return self._run(ws, cmd, tag)

    def check(self, ws: Workspace) -> Proc:
        return self._run(ws, ["restic", "-r", str(ws.repo), "check"], "check")


class Borg(Tool):
    name = "borg"
    warn_codes = (1,)  # borg 1.2: warning (e.g. a file changed while read)

    def __init__(self, timeout: float | None, compression: str) -> None:
        super().__init__(timeout)
        self.compression = compression
        self.label = f"borg ({compression})"
        self.archives = 0

    def unavailable(self) -> str | None:
        return None if shutil.which("borg") else "borg is not installed"

    def version(self) -> str:
        return subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip()

    def env(self, ws: Workspace) -> dict[str, str]:
        return {
            "BORG_PASSPHRASE": PASSPHRASE,
            "BORG_BASE_DIR": str(ws.state),  # cache, config, security: per workspace
            "BORG_DISPLAY_PASSPHRASE": "no",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self, ws: Workspace) -> None:
        self.archives = 0
        self._run(ws, ["borg", "init", "-e", "repokey", str(ws.repo)], "init")

    def backup(self, ws: Workspace, src: Path, tag: str) -> Proc:
        self.archives += 1
        archive = f"{ws.repo}::a{self.archives}"
        return self._run(
            ws, ["borg", "create", "--compression", self.compression, archive, str(src)], tag
        )

    def restore(self, ws: Workspace, tag: str) -> Proc:
        # borg extracts into the current folder, paths without the leading slash.
        cmd = ["borg", "extract", f"{ws.repo}::a{self.archives}"]
        return self._run(ws, cmd, tag, cwd=ws.restore)

    def check(self, ws: Workspace) -> Proc:
        return self._run(ws, ["borg", "check", str(ws.repo)], "check")


class CoreState(Tool):
    """Against the CLI contract: `--home H`, JSON on the last stdout line, exit 3 partial."""

    name = label = "corestate"
    warn_codes = (3,)  # done, but incomplete

    def unavailable(self) -> str | None:
        exe = shutil.which("corestate")
        if not exe:
            return "corestate is not installed (pip install -e .)"
        p = subprocess.run([exe, "backup", "--help"], capture_output=True, text=True)
        if p.returncode != 0 or "--json" not in p.stdout + p.stderr:
            return "`corestate backup --help` does not describe a backup command with --json yet"
        return None

    def version(self) -> str:
        p = subprocess.run(["corestate", "--version"], capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 else "?"

    def env(self, ws: Workspace) -> dict[str, str]:
        return {"CORESTATE_PASSPHRASE": PASSPHRASE}

    def home(self, ws: Workspace) -> Path:
        return ws.repo  # the store lives inside the home

    def _cs(self, ws: Workspace, *args: str) -> list[str]:
        return ["corestate", "--home", str(self.home(ws)), *args]

    @staticmethod
    def last_json(p: Proc) -> dict[str, Any]:
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        if not lines:
            raise ToolError(f"corestate printed nothing on stdout\n{p.tail()}")
        try:
            obj = json.loads(lines[-1])
        except json.JSONDecodeError as e:
            raise ToolError(f"corestate: last stdout line is not JSON ({e}): {lines[-1][:200]}")
        if not isinstance(obj, dict):
            raise ToolError(f"corestate: last stdout line is not a JSON object: {lines[-1][:200]}")
        return obj

    def init(self, ws: Workspace) -> None:
        ws.root.mkdir(parents=True, exist_ok=True)
        pw = ws.root / "passphrase"
        pw.write_text(PASSPHRASE + "\n")
        pw.chmod(0o600)
        p = self._run(ws, self._cs(ws, "init", "--passphrase-file", str(pw), "--json"), "init")
        obj = self.last_json(p)
        if "peer_id" not in obj:
            raise ToolError(f"corestate init: no peer_id in {sorted(obj)}")

    def backup(self, ws: Workspace, src: Path, tag: str) -> Proc:
        p = self._run(ws, self._cs(ws, "backup", str(src), "--json"), tag)
        obj = self.last_json(p)
        missing = {"snapshot_id", "files", "bytes_read", "bytes_added"} - set(obj)
        if missing:
            raise ToolError(f"corestate backup: final JSON lacks {sorted(missing)}")
        return p

    def backup_info(self, p: Proc) -> dict[str, Any]:
        obj = self.last_json(p)
        keys = ("snapshot_id", "files", "bytes_read", "bytes_added")
        return {k: obj.get(k) for k in keys} | {"rc": p.rc}

    def restore(self, ws: Workspace, tag: str) -> Proc:
        return self._run(ws, self._cs(ws, "restore", "latest", "--target", str(ws.restore)), tag)

    def store_bytes(self, ws: Workspace) -> tuple[int, str]:
        with contextlib.suppress(ToolError, KeyError, TypeError, ValueError):
            obj = self.last_json(self._run(ws, self._cs(ws, "stats", "--json"), "stats"))
            return int(obj["store_bytes"]), "stats --json store_bytes"
        return apparent_size(self.home(ws)), "apparent size of the home"

    def check(self, ws: Workspace) -> Proc:
        return self._run(ws, self._cs(ws, "check"), "check")


def ensure_installed(names: list[str]) -> None:
    """apt-get install restic/borgbackup when missing (we run as root on the bench box)."""
    pkgs = {"restic": "restic", "borg": "borgbackup"}
    missing = [pkgs[n] for n in names if n in pkgs and not shutil.which(n)]
    if not os.access(GNU_TIME, os.X_OK):
        missing.append("time")  # GNU time, for an honest peak RSS
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(missing)} with apt-get")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(cmd, env=env, capture_output=True)


# --------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------

PHASES = ("first", "again", "mutated", "restore")


@dataclass
class ToolRun:
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_bytes: int | None = None
    store_source: str = ""
    store_bytes_after_first: int | None = None
    verify: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    error: str | None = None


def timed_phase(
    tool: Tool, ws: Workspace, phase: str, src: Path, src_bytes: int, tr: ToolRun
) -> None:
    os.sync()  # the previous phase's writeback stays out of this one
    if phase == "restore":
        ws.restore.mkdir(parents=True, exist_ok=True)
        preread(ws.repo, ws.state)
        p = tool.restore(ws, phase)
    else:
        preread(src, ws.repo, ws.state)
        p = tool.backup(ws, src, phase)
    rec: dict[str, Any] = {
        "seconds": p.seconds,
        "rc": p.rc,
        "maxrss_mib": p.maxrss_kib / 1024,
        "maxrss_source": p.maxrss_source,
        "tree_rss_mib": p.tree_rss_bytes / MiB,
        "mb_per_s": src_bytes / MB / p.seconds,
    }
    if phase != "restore":
        rec |= tool.backup_info(p)
    if p.rc != 0:
        log(f"WARNING: {tool.name} {phase} exited {p.rc} (accepted as a warning): {p.tail(3)}")
    tr.phases[phase] = rec
    log(
        f"  {tool.name:10} {phase:8} {p.seconds:8.2f} s {rec['mb_per_s']:8.1f} MB/s "
        f"rss {rec['maxrss_mib']:6.0f} MiB tree {rec['tree_rss_mib']:6.0f} MiB"
    )


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir).resolve()
    tree = work / "tree"
    size = treegen.parse_size(args.size)
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    ensure_installed(names)
    all_tools: dict[str, Tool] = {
        "corestate": CoreState(args.timeout),
        "restic": Restic(args.timeout),
        "borg": Borg(args.timeout, args.borg_compression),
    }
    unknown = set(names) - set(all_tools)
    if unknown:
        raise SystemExit(f"unknown tools: {sorted(unknown)} (choose from {sorted(all_tools)})")
    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    for n in names:
        why = all_tools[n].unavailable()
        if why:
            skipped[n] = why
            log(f"SKIPPING {n}: {why}")
        else:
            tools.append(all_tools[n])
    result: dict[str, Any] = {
        "config": {
            "size": size,
            "seed": args.seed,
            "runs": args.runs,
            "tools": names,
            "borg_compression": args.borg_compression,
            "mutate_percent": args.mutate_percent,
            "mutate_seed": args.mutate_seed,
            "workdir": str(work),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / (1 << 30), 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "versions": {t.name: t.version() for t in tools},
        "skipped": skipped,
        "runs": [],
    }
    rmtree(work / "logs")  # the last benchmark's logs stay until the next one starts
    for r in range(args.runs):
        k = r % max(1, len(tools))
        order = tools[k:] + tools[:k]  # rotate: each tool goes first in turn
        result["runs"].append(one_run(args, r, order, work))
    if not args.keep:
        rmtree(work / "runs")
        rmtree(tree)
    result["median"] = medians(result, [t.name for t in tools])
    result["targets"] = targets(result["median"])
    return result


def one_run(args: argparse.Namespace, r: int, order: list[Tool], work: Path) -> dict[str, Any]:
    """One run: a fresh tree, fresh repositories, the four phases for every tool."""
    tree = work / "tree"
    size = treegen.parse_size(args.size)
    log(f"run {r + 1}/{args.runs}: order {', '.join(t.name for t in order)}")
    run_dir = work / "runs"
    rmtree(run_dir)
    rmtree(tree)
    rep = treegen.generate(tree, size, args.seed)
    st = rep.stats
    log(
        f"tree: {st.bytes / MiB:.0f} MiB in {st.files} files, {st.dirs} dirs, "
        f"{st.symlinks} symlinks, generated in {rep.seconds:.1f} s"
    )
    src_bytes = st.bytes
    rr: dict[str, Any] = {
        "run": r + 1,
        "order": [t.name for t in order],
        "tree": asdict(st),
        "src_bytes": src_bytes,
        "tools": {},
    }
    trs = {t.name: ToolRun() for t in order}
    wss = {
        t.name: Workspace(run_dir / t.name, work / "logs" / f"run{r + 1}" / t.name) for t in order
    }

    def each(step: str, fn: Any) -> None:
        for t in order:
            tr = trs[t.name]
            if tr.error:
                continue
            try:
                fn(t, wss[t.name], tr)
            except ToolError as e:
                tr.error = f"{step}: {e}"
                log(f"FAILED {t.name} {step}: {e}")

    def init(t: Tool, ws: Workspace, tr: ToolRun) -> None:
        for d in (ws.root, ws.state, ws.logs):
            d.mkdir(parents=True, exist_ok=True)
        t.init(ws)

    each("init", init)
    each("first", lambda t, ws, tr: timed_phase(t, ws, "first", tree, src_bytes, tr))

    def after_first(t: Tool, ws: Workspace, tr: ToolRun) -> None:
        tr.store_bytes_after_first = t.store_bytes(ws)[0]

    each("store", after_first)
    each("again", lambda t, ws, tr: timed_phase(t, ws, "again", tree, src_bytes, tr))
    mrep = treegen.mutate(tree, args.mutate_percent, args.mutate_seed)
    mut_bytes = treegen.scan(tree).bytes
    rr["mutation"] = asdict(mrep)
    rr["src_bytes_mutated"] = mut_bytes
    log(
        f"mutated: {mrep.changed_bytes / MiB:.1f} MiB changed "
        f"({100 * mrep.changed_bytes / mrep.total_bytes_before:.1f}%), "
        f"{mrep.new_files} new, {mrep.deleted_files} deleted, {mrep.renamed_files} renamed"
    )
    each("mutated", lambda t, ws, tr: timed_phase(t, ws, "mutated", tree, mut_bytes, tr))

    def store(t: Tool, ws: Workspace, tr: ToolRun) -> None:
        tr.store_bytes, tr.store_source = t.store_bytes(ws)

    each("store", store)
    each("restore", lambda t, ws, tr: timed_phase(t, ws, "restore", tree, mut_bytes, tr))
    if r == 0 and args.verify:

        def check_restore(t: Tool, ws: Workspace, tr: ToolRun) -> None:
            v = verify(tree, t.restored_root(ws, tree), ws.logs)
            tr.verify = v
            if v["ok"]:
                log(f"  {t.name:10} restored tree equals the source")
            else:
                bar = "!" * 72
                log(
                    f"{bar}\nRESTORE MISMATCH for {t.name}:\n  "
                    + "\n  ".join(v["problems"])
                    + f"\n{bar}"
                )

        each("verify", check_restore)
    if r == 0 and args.check:

        def tool_check(t: Tool, ws: Workspace, tr: ToolRun) -> None:
            try:
                p = t.check(ws)
                tr.check = {"ok": True, "rc": p.rc, "seconds": p.seconds}
            except ToolError as e:
                tr.check = {"ok": False, "error": str(e)}
                log(f"CHECK FAILED for {t.name}: {e}")

        each("check", tool_check)
    for t in order:
        rr["tools"][t.name] = asdict(trs[t.name])
    if not args.keep:
        rmtree(run_dir)  # drop repositories and restored trees between runs
    return rr


def medians(result: dict[str, Any], names: list[str]) -> dict[str, dict[str, float | None]]:
    def med(vals: list[float]) -> float | None:
        return statistics.median(vals) if vals else None

    out: dict[str, dict[str, float | None]] = {}
    for n in names:
        rows = [r["tools"][n] for r in result["runs"] if n in r["tools"]]

        def col(phase: str, key: str, rows: list[dict[str, Any]] = rows) -> list[float]:
            return [x["phases"][phase][key] for x in rows if phase in x["phases"]]

        rss = [max(p["maxrss_mib"] for p in x["phases"].values()) for x in rows if x["phases"]]
        trss = [max(p["tree_rss_mib"] for p in x["phases"].values()) for x in rows if x["phases"]]
        store = [x["store_bytes"] / MiB for x in rows if x["store_bytes"] is not None]
        out[n] = {
            "first_mb_per_s": med(col("first", "mb_per_s")),
            "first_s": med(col("first", "seconds")),
            "again_s": med(col("again", "seconds")),
            "mutated_s": med(col("mutated", "seconds")),
            "restore_mb_per_s": med(col("restore", "mb_per_s")),
            "restore_s": med(col("restore", "seconds")),
            "store_mib": med(store),
            "peak_rss_mib": med(rss),
            "tree_rss_mib": med(trss),
            "ok_runs": sum(1 for x in rows if not x["error"]),
        }
    return out


# (label, metric, goal, higher is better): corestate's value against goal x restic's.
TARGETS = (
    ("first backup MB/s >= 2x restic", "first_mb_per_s", 2.0, True),
    ("no-change re-backup s <= 0.3x restic", "again_s", 0.3, False),
    ("restore MB/s >= 2x restic", "restore_mb_per_s", 2.0, True),
    ("store size <= restic", "store_mib", 1.0, False),
)


def targets(med: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    out = []
    for label, key, goal, higher in TARGETS:
        cs = med.get("corestate", {}).get(key)
        rs = med.get("restic", {}).get(key)
        if cs is None or rs is None or rs == 0:
            out.append({"target": label, "status": "n/a", "ratio": None})
            continue
        ratio = cs / rs
        ok = ratio >= goal if higher else ratio <= goal
        out.append({"target": label, "status": "PASS" if ok else "SHORT", "ratio": ratio})
    return out


ROWS = (
    ("first backup", "MB/s", "first_mb_per_s", 1),
    ("no-change re-backup", "s", "again_s", 2),
    ("backup after mutation", "s", "mutated_s", 2),
    ("full restore", "MB/s", "restore_mb_per_s", 1),
    ("store size", "MiB", "store_mib", 1),
    ("peak RSS (ru_maxrss)", "MiB", "peak_rss_mib", 0),
    ("tree RSS (sampled sum)", "MiB", "tree_rss_mib", 0),
)


def render(result: dict[str, Any], labels: dict[str, str]) -> str:
    cfg = result["config"]
    med = result["median"]
    names = list(med)
    first = result["runs"][0] if result["runs"] else {}
    tree = first.get("tree", {})
    lines = [
        f"CoreState backup benchmark: {tree.get('bytes', 0) / MiB:.0f} MiB tree "
        f"({tree.get('files', 0)} files, seed {cfg['seed']}), {cfg['runs']} run(s), medians; "
        f"mutation {cfg['mutate_percent']}%; MB = 10^6 B; {result['machine']['cpus']} CPUs",
        "",
    ]
    w = max([14, *(len(labels.get(n, n)) + 2 for n in names)])
    head = f"{'':24}{'unit':>6}" + "".join(f"{labels.get(n, n):>{w}}" for n in names)
    lines += [head, "-" * len(head)]
    for label, unit, key, digits in ROWS:
        cells = []
        for n in names:
            v = med[n].get(key)
            cells.append(f"{'-' if v is None else f'{v:.{digits}f}':>{w}}")
        lines.append(f"{label:24}{unit:>6}" + "".join(cells))
    for n in names:
        bad = [r for r in result["runs"] if r["tools"].get(n, {}).get("error")]
        for r in bad:
            lines.append(f"  ! {n} run {r['run']}: {r['tools'][n]['error'].splitlines()[0]}")
        for r in result["runs"]:
            v = r["tools"].get(n, {}).get("verify")
            if v and not v["ok"]:
                lines.append(f"  ! {n}: RESTORE MISMATCH: {'; '.join(v['problems'])[:300]}")
            c = r["tools"].get(n, {}).get("check")
            if c and not c["ok"]:
                lines.append(f"  ! {n}: check failed: {c['error'].splitlines()[0]}")
    for n, why in result["skipped"].items():
        lines.append(f"  - {n} skipped: {why}")
    lines += ["", "Targets (corestate against restic):"]
    for t in result["targets"]:
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        lines.append(f"  {t['target']:40} {ratio:>8}  {t['status']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_backup.py",
        description="CoreState vs restic vs borg: backup, re-backup, mutated backup, restore.",
    )
    ap.add_argument("--size", default="1GiB", help="tree size (default 1GiB)")
    ap.add_argument("--seed", type=int, default=1, help="tree seed (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="runs, medians reported (default 3)")
    ap.add_argument("--tools", default="corestate,restic,borg", help="comma-separated")
    ap.add_argument(
        "--borg-compression",
        default="lz4",
        help="borg --compression (default lz4, borg's default; try zstd,3)",
    )
    ap.add_argument("--mutate-percent", type=float, default=5.0)
    ap.add_argument("--mutate-seed", type=int, default=2)
    ap.add_argument(
        "--workdir",
        default=str(HERE / ".work"),
        help="where trees, repositories and restores go (default tests/bench/.work)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the tree and the last run's repos")
    ap.add_argument("--no-verify", dest="verify", action="store_false", help="skip the diff")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip tools' check")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per command, seconds")
    args = ap.parse_args(argv)
    result = bench(args)
    labels = {"borg": f"borg ({args.borg_compression})"}
    print(render(result, labels))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
