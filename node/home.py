"""The node home: where a node keeps its sealed key, config, index and (by default) store.

Layout (SPEC.md, "Node home")::

    HOME/config.toml   protected paths, excludes, chunking, packing, where the store lives
    HOME/key           the root secret sealed under the passphrase (CBOR, see keystore)
    HOME/index.db      sqlite: pack index, snapshots, files cache (rebuildable from packs
                       except the files cache, which is only a speed-up)
    HOME/store/        the local pack store, unless config.toml puts it elsewhere
    HOME/lock          flock'ed by the one process that works on this home

Invariants: one process writes a home at a time (exclusive flock, non-blocking, the
holder's pid written into the lock file for the error message); the home is created 0700.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from corestate.kernel.state import write_atomic
from corestate.node.errors import ConfigError, HomeBusy, HomeExists, HomeMissing

ENV_HOME = "CORESTATE_HOME"

DEFAULT_CONFIG = """\
# CoreState node configuration. Paths may be absolute or relative to this home.

[backup]
# What `corestate backup` protects when no path is given on the command line.
paths = []
# Excludes, gitignore syntax, matched against paths below each protected path.
exclude = []

[chunking]
# FastCDC sizes in bytes; the average is what pyfastcdc aims for above min_size.
min_size = 262144
avg_size = 1048576
max_size = 4194304

[packing]
pack_size = 16777216
# zstd level; chunks that do not shrink are stored uncompressed.
compression_level = 3

[store]
# The local pack store. Put it on another disk with an absolute path.
path = "store"

[mesh]
# Multiaddrs the daemon listens on; empty: an ephemeral TCP port on all interfaces.
listen = []
# Erasure code: any k of n shares rebuild a pack. 0 = automatic: n = min(4, trusted
# peers online), k = ceil(n / 2). `corestate backup --k K --n N` overrides per backup.
k = 0
n = 0
# What each trusted peer may store on this node, and all other peers together.
quota_per_peer = "64 GiB"
global_quota = "64 MiB"
# Find peers on the LAN (they are listed, not trusted: `corestate peer add` trusts).
mdns = true
peer_timeout = 20

[network]
# The TCP port the daemon listens on when [mesh] listen is empty (all interfaces);
# 0 = an ephemeral port. Behind a NAT, fix it and forward it, or let UPnP map it.
port = 0
# Ask the router (UPnP IGD) to forward the port; false leaves the router alone.
upnp = true

[relay]
# A member that other members can reach from outside relays for them (members only).
serve = true
# Behind a NAT, reserve slots on this many relay members and advertise the circuits.
use = true
relays = 2
# Per relayed circuit through this node: bytes (both directions) and time.
circuit_bytes = "4 GiB"
circuit_duration = "2h"
# Per relayed circuit through this node, each way, per second (bulk backup traffic must
# not starve this member's uplink); 0 = no limit.
circuit_rate = "10 MiB"
# What this node sends over a relayed connection, per second; 0 = no limit.
relayed_rate = 0
# Try to turn relayed connections into direct ones (DCUtR hole punching).
hole_punch = true

[schedule]
# The daemon backs up [backup] paths this often ("30m", "6h", "1d"); 0 = never.
backup_every = 0
# The daemon audits the holders of this node's shares and rebuilds lost ones this often.
repair_every = "1d"
# Spot audits of random share blocks (and the slow whole-share cycle) this often; 0 = only
# within repair's survey.
audit_every = "1h"

[health]
# A holder unreachable this long counts as lost: its shares are rebuilt on others.
holder_lost_after = "3d"
# In a group: when a member's owner has been away this long, the other members repair its packs.
owner_away_after = "3d"
# Every share is verified whole (not just one block) once in this cycle.
whole_audit_every = "30d"
# Cap on the bytes per second repair moves ("10 MiB/s"); 0 = no cap.
repair_bandwidth = 0

[anomaly]
# Each backup re-reads a few files the files cache vouched for, to find content that changed
# under an unchanged size and mtime (silent corruption): at most this many files, and at
# most the larger of these bytes and this share of the bytes the backup read.
resample_files = 32
resample_bytes = "1 MiB"
resample_share = 0.01
# Data written this long ago and still needed is "cold" for `corestate advise tiering`.
cold_after = "90d"

[metrics]
# Serve Prometheus metrics at http://LISTEN/metrics while the daemon runs, e.g.
# "127.0.0.1:9184". Empty: no metrics endpoint.
listen = ""

[notify]
# Tell a person when something needs them (a failed, incomplete or overdue backup, low
# redundancy, an evicted holder, an anomaly, a fork): a JSON object POSTed to `webhook`
# and/or written to the stdin of `command` (run by /bin/sh). Empty: no notification.
webhook = ""
command = ""
# The same notification (kind and subject) is not repeated within `repeat_after`, and at
# most `max_per_hour` are sent in any hour; each delivery gives up after `timeout`.
repeat_after = "6h"
max_per_hour = 20
timeout = "10s"

[restore]
# Packs that live only on peers are fetched into memory as a restore needs them, never
# staged on disk; at most this much of them is held at once (at least one pack at a time).
buffer = "64 MiB"

# [retention] stays last: keep rules appended to the file land in it.
[retention]
# After each scheduled backup the daemon forgets the snapshots no rule keeps and frees
# what only they used (`corestate forget --keep-... --prune`). No rule: nothing is forgotten.
# keep_last = 10
# keep_daily = 7
# keep_weekly = 4
# keep_monthly = 12
"""


def default_home() -> Path:
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("corestate", appauthor=False))


@dataclass(slots=True)
class Config:
    paths: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    min_size: int = 256 << 10
    avg_size: int = 1 << 20
    max_size: int = 4 << 20
    pack_size: int = 16 << 20
    compression_level: int = 3
    store_path: str = "store"
    # [mesh]
    listen: list[str] = field(default_factory=list)  # empty: an ephemeral port on all interfaces
    k: int = 0  # 0: ceil(n / 2)
    n: int = 0  # 0: min(4, trusted peers online)
    quota_per_peer: int = 64 << 30  # what each trusted peer may store here
    global_quota: int = 64 << 20  # what all other peers together may store here
    mdns: bool = True
    peer_timeout: float = 20.0
    # [network], [relay]: parsed by _network (one place)
    listen_port: int = 0
    upnp: bool = True
    relay_serve: bool = True
    relay_use: bool = True
    relays: int = 2
    relay_circuit_bytes: int = 4 << 30
    relay_circuit_duration: float = 7200.0
    relay_circuit_rate: int = 10 << 20
    relayed_rate: int = 0
    hole_punch: bool = True
    # [schedule]
    backup_every: float = 0.0  # seconds; 0 = no scheduled backups
    repair_every: float = 86400.0  # seconds; 0 = no scheduled repairs
    audit_every: float = 0.0  # seconds; 0 = audits only within repair's survey
    # [health] (node/core/holders.py, node/core/lease.py)
    health: HealthConfig = field(default_factory=lambda: HealthConfig())
    # [retention]: the keep-rules applied after each scheduled backup (empty: none)
    retention: dict[str, str] = field(default_factory=dict)
    # [metrics] and [notify] (parsed in _observability)
    metrics_listen: str = ""  # "HOST:PORT"; empty: no metrics endpoint
    notify_webhook: str = ""
    notify_command: str = ""
    notify_repeat_after: float = 6 * 3600.0
    notify_max_per_hour: int = 20
    notify_timeout: float = 10.0
    # [anomaly]: the silent-corruption re-read budget per backup; the optimizer's "cold"
    anomaly_resample_files: int = 32
    anomaly_resample_bytes: int = 1 << 20
    anomaly_resample_share: float = 0.01
    anomaly_cold_after: float = 90 * 86400.0
    # [restore] (parsed in _restore)
    restore_buffer: int = 64 << 20  # bytes of remote packs held in memory at once

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "missing")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}")
        except RecursionError:  # tomllib recurses once per level of nested arrays/tables
            raise ConfigError(str(path), "not valid TOML: nested too deeply")
        cfg = cls()
        try:
            b, c, p, s = (raw.get(k, {}) for k in ("backup", "chunking", "packing", "store"))
            cfg.paths = [str(x) for x in b.get("paths", [])]
            cfg.exclude = [str(x) for x in b.get("exclude", [])]
            cfg.min_size = int(c.get("min_size", cfg.min_size))
            cfg.avg_size = int(c.get("avg_size", cfg.avg_size))
            cfg.max_size = int(c.get("max_size", cfg.max_size))
            cfg.pack_size = int(p.get("pack_size", cfg.pack_size))
            cfg.compression_level = int(p.get("compression_level", cfg.compression_level))
            cfg.store_path = str(s.get("path", cfg.store_path))
            mesh, sched = raw.get("mesh", {}), raw.get("schedule", {})
            cfg.listen = [str(x) for x in mesh.get("listen", [])]
            cfg.k = int(mesh.get("k", 0))
            cfg.n = int(mesh.get("n", 0))
            cfg.quota_per_peer = _size(mesh.get("quota_per_peer", cfg.quota_per_peer))
            cfg.global_quota = _size(mesh.get("global_quota", cfg.global_quota))
            cfg.mdns = bool(mesh.get("mdns", True))
            cfg.peer_timeout = float(mesh.get("peer_timeout", cfg.peer_timeout))
            _network(cfg, raw.get("network", {}), raw.get("relay", {}))
            cfg.backup_every = _duration(sched.get("backup_every", 0))
            cfg.repair_every = _duration(sched.get("repair_every", cfg.repair_every))
            cfg.audit_every = _duration(sched.get("audit_every", cfg.audit_every))
            cfg.health = HealthConfig.parse(raw.get("health", {}))
            ret = raw.get("retention", {})
            for key in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                        "keep_yearly"):
                if key in ret:
                    if int(ret[key]) < 0:
                        raise ValueError(f"[retention] {key} must not be negative")
                    cfg.retention[key] = str(int(ret[key]))
            if "keep_within" in ret:
                cfg.retention["keep_within"] = f"{_duration(ret['keep_within']):g}s"
            unknown = set(ret) - {"keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                                  "keep_yearly", "keep_within"}
            if unknown:
                raise ValueError(f"[retention] does not know {sorted(unknown)}")
            _observability(raw, cfg)
            _anomaly_section(cfg, raw.get("anomaly", {}))
            _restore(raw, cfg)
        # OverflowError: an integer setting given as inf (TOML has it) or as "1e400".
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise ConfigError(str(path), f"bad value: {exc}")
        if not (64 <= cfg.min_size <= cfg.avg_size <= cfg.max_size <= 16 << 20):
            raise ConfigError(str(path), "chunking needs 64 <= min_size <= avg_size <= max_size <= 16 MiB")
        if not (1 << 20 <= cfg.pack_size <= 256 << 20):
            raise ConfigError(str(path), "pack_size must be between 1 MiB and 256 MiB")
        if (cfg.n and not 1 <= cfg.n <= 255) or (cfg.k and not 1 <= cfg.k <= (cfg.n or 255)):
            raise ConfigError(str(path), "[mesh] needs 1 <= k <= n <= 255 (0 = automatic)")
        if not 1 <= cfg.peer_timeout <= 600:
            raise ConfigError(str(path), "[mesh] peer_timeout must be between 1 and 600 seconds")
        if not (-7 <= cfg.compression_level <= 22):
            raise ConfigError(str(path), "compression_level must be between -7 and 22")
        return cfg


def _observability(raw: dict[str, object], cfg: Config) -> None:
    """``[metrics]`` and ``[notify]``: where the daemon serves metrics, how it notifies."""
    m, n = raw.get("metrics", {}), raw.get("notify", {})
    if not isinstance(m, dict) or not isinstance(n, dict):
        raise ValueError("[metrics] and [notify] must be tables")
    cfg.metrics_listen = str(m.get("listen", "")).strip()
    if cfg.metrics_listen:
        host, sep, port = cfg.metrics_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"[metrics] listen must be HOST:PORT, not {cfg.metrics_listen!r}")
    unknown = set(m) - {"listen"}
    if unknown:
        raise ValueError(f"[metrics] does not know {sorted(unknown)}")
    cfg.notify_webhook = str(n.get("webhook", "")).strip()
    if cfg.notify_webhook and not cfg.notify_webhook.startswith(("http://", "https://")):
        raise ValueError(f"[notify] webhook must be an http:// or https:// URL, not {cfg.notify_webhook!r}")
    cfg.notify_command = str(n.get("command", "")).strip()
    cfg.notify_repeat_after = _duration(n.get("repeat_after", cfg.notify_repeat_after))
    cfg.notify_max_per_hour = int(n.get("max_per_hour", cfg.notify_max_per_hour))
    cfg.notify_timeout = _duration(n.get("timeout", cfg.notify_timeout))
    if cfg.notify_repeat_after < 0 or cfg.notify_max_per_hour < 1 or not 0 < cfg.notify_timeout <= 300:
        raise ValueError("[notify] needs repeat_after >= 0, max_per_hour >= 1 and 0 < timeout <= 5m")
    unknown = set(n) - {"webhook", "command", "repeat_after", "max_per_hour", "timeout"}
    if unknown:
        raise ValueError(f"[notify] does not know {sorted(unknown)}")


def _anomaly_section(cfg: Config, a: dict) -> None:
    """[anomaly] (issue 14): parsed here and nowhere else."""
    unknown = set(a) - {"resample_files", "resample_bytes", "resample_share", "cold_after"}
    if unknown:
        raise ValueError(f"[anomaly] does not know {sorted(unknown)}")
    cfg.anomaly_resample_files = int(a.get("resample_files", cfg.anomaly_resample_files))
    cfg.anomaly_resample_bytes = _size(a.get("resample_bytes", cfg.anomaly_resample_bytes))
    cfg.anomaly_resample_share = float(a.get("resample_share", cfg.anomaly_resample_share))
    cfg.anomaly_cold_after = _duration(a.get("cold_after", cfg.anomaly_cold_after))
    if not 0 <= cfg.anomaly_resample_files <= 100_000 or not 0 <= cfg.anomaly_resample_share <= 1:
        raise ValueError("[anomaly] resample_files must be 0..100000 and resample_share 0..1")


def _network(cfg: Config, net: dict[str, object], relay: dict[str, object]) -> None:
    """``[network]`` and ``[relay]`` into ``cfg`` (ValueError for a bad value)."""
    unknown = set(net) - {"port", "upnp"} | set(relay) - {
        "serve", "use", "relays", "circuit_bytes", "circuit_duration", "circuit_rate", "relayed_rate",
        "hole_punch"}
    if unknown:
        raise ValueError(f"[network]/[relay] do not know {sorted(unknown)}")
    cfg.listen_port = int(str(net.get("port", 0)))
    if not 0 <= cfg.listen_port < 65536:
        raise ValueError("[network] port must be between 0 and 65535")
    cfg.upnp = _bool(net.get("upnp", True), "[network] upnp")
    cfg.relay_serve = _bool(relay.get("serve", True), "[relay] serve")
    cfg.relay_use = _bool(relay.get("use", True), "[relay] use")
    cfg.hole_punch = _bool(relay.get("hole_punch", True), "[relay] hole_punch")
    cfg.relays = int(str(relay.get("relays", 2)))
    if not 0 <= cfg.relays <= 8:
        raise ValueError("[relay] relays must be between 0 and 8")
    cfg.relay_circuit_bytes = _size(relay.get("circuit_bytes", cfg.relay_circuit_bytes))
    cfg.relay_circuit_duration = _duration(relay.get("circuit_duration", cfg.relay_circuit_duration))
    cfg.relayed_rate = _size(relay.get("relayed_rate", 0))
    cfg.relay_circuit_rate = _size(relay.get("circuit_rate", cfg.relay_circuit_rate))
    if cfg.relay_circuit_bytes < 1 << 20 or cfg.relay_circuit_duration < 60 or min(cfg.relayed_rate,
                                                                                     cfg.relay_circuit_rate) < 0:
        raise ValueError("[relay] needs circuit_bytes >= 1 MiB, circuit_duration >= 60s, rates >= 0")


def _bool(v: object, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false")
    return v


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """``[health]``: when a holder counts as lost, when an owner counts as away (its packs
    then repaired by the other members), the whole-share audit cycle, the repair rate cap."""

    holder_lost_after: float = 3 * 86400.0  # why three days: node/core/holders.py
    owner_away_after: float = 3 * 86400.0
    whole_audit_every: float = 30 * 86400.0
    repair_bandwidth: int = 0  # bytes per second; 0 = no cap

    @classmethod
    def parse(cls, raw: object) -> HealthConfig:
        if not isinstance(raw, dict):
            raise ValueError("[health] must be a table")
        unknown = set(raw) - {"holder_lost_after", "owner_away_after", "whole_audit_every", "repair_bandwidth"}
        if unknown:
            raise ValueError(f"[health] does not know {sorted(unknown)}")
        d = cls()
        rate = raw.get("repair_bandwidth", 0)
        cfg = cls(_duration(raw.get("holder_lost_after", d.holder_lost_after)),
                  _duration(raw.get("owner_away_after", d.owner_away_after)),
                  _duration(raw.get("whole_audit_every", d.whole_audit_every)),
                  _size(str(rate).strip().removesuffix("/s")) if not isinstance(rate, int) else rate)
        for name in ("holder_lost_after", "owner_away_after", "whole_audit_every"):
            if getattr(cfg, name) <= 0:
                raise ValueError(f"[health] {name} must be a positive duration like \"3d\"")
        if cfg.repair_bandwidth < 0:
            raise ValueError("[health] repair_bandwidth must be 0 (no cap) or bytes per second like \"10 MiB/s\"")
        return cfg


def _restore(raw: dict[str, object], cfg: Config) -> None:
    """``[restore]``: how much of the remote packs a restore holds in memory at once."""
    r = raw.get("restore", {})
    if not isinstance(r, dict):
        raise ValueError("[restore] must be a table")
    cfg.restore_buffer = _size(r.get("buffer", cfg.restore_buffer))
    if not 1 << 20 <= cfg.restore_buffer <= 64 << 30:
        raise ValueError("[restore] buffer must be between 1 MiB and 64 GiB")
    unknown = set(r) - {"buffer"}
    if unknown:
        raise ValueError(f"[restore] does not know {sorted(unknown)}")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(v: object) -> int:
    """``123``, ``"64 MiB"``, ``"10G"`` -> bytes."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    s = str(v).strip().lower().replace(" ", "").removesuffix("b").removesuffix("i")
    num = s.rstrip("kmgt")
    return int(float(num) * _UNITS[s[len(num):]])


def _duration(v: object) -> float:
    """``3600``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"`` -> seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(s[-1:])
    return float(s[:-1]) * mult if mult else float(s)


def parse_duration(v: str) -> float:
    return _duration(v)


class Home:
    """A node home folder. Opening one does not take the lock; ``lock()`` does."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self._lock_fd: int | None = None

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def key_path(self) -> Path:
        return self.path / "key"

    @property
    def db_path(self) -> Path:
        return self.path / "index.db"

    def exists(self) -> bool:
        return self.key_path.exists()

    def require(self) -> None:
        if not self.exists():
            raise HomeMissing(str(self.path))

    def create(self) -> None:
        """Make an empty home folder (0700) for init; refuse one that holds a node."""
        if self.exists():
            raise HomeExists(str(self.path))
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        if not self.config_path.exists():
            write_atomic(self.config_path, DEFAULT_CONFIG.encode(), mode=0o600)

    def config(self) -> Config:
        return Config.load(self.config_path)

    def store_dir(self, cfg: Config) -> Path:
        p = Path(cfg.store_path).expanduser()
        return p if p.is_absolute() else self.path / p

    def lock(self) -> None:
        """Take the home's exclusive lock or raise HomeBusy naming the holder."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            raise HomeBusy(str(self.path), f"pid {holder}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
