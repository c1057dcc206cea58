"""Scenarios: what a TOML file describes, parsed in one place into frozen dataclasses.

Tables (README.md in this folder lists every key):

- ``[world]`` ``nodes``, ``packs`` (the total at the start), ``days``; optional
  ``pack_size`` ("64 MiB"), ``capacity`` ("4 TiB" per node), ``upload`` / ``download``
  ("10 MiB/s" per node), ``sites`` (0: every node is its own failure domain),
  ``sample_every`` (a duration; the time series' step).
- ``[code]`` ``k``, ``n``.
- ``[failures]`` ``model = "exponential" | "weibull"``, ``node_mttf_days``, ``shape``
  (Weibull), ``site_mttf_days`` (correlated: a whole site's disks lost at once).
- ``[repair]`` ``model = "exponential"`` with ``repair_at`` and ``mean_days``, or
  ``model = "none"``. Left out: the node's real policy runs (``[policy]``).
- ``[churn]`` ``model = "exponential" | "weibull"`` with ``mean_online_hours``,
  ``mean_offline_hours`` (and ``shape``), or ``model = "trace"`` with ``file`` (CSV lines
  ``node,start_hours,end_hours``: online intervals); ``step`` (default "1m"): switches
  are applied in batches at multiples of it ("0s": each switch is its own event, exact);
  the batching moves a switch by less than a step.
- ``[policy]`` (only without ``[repair]``): ``repair_every``, ``audit_every``,
  ``holder_lost_after`` (durations), ``candidates`` (how many online nodes placement ranks;
  0 = all), ``audit_block`` (bytes per audit), ``owner_away_after`` (a duration: when
  the other members repair an absent owner's packs, node/core/lease.py), ``member_repair``
  (default true).
- ``[faults]`` ``bad_nodes`` (the fraction of nodes that keep no usable copy of the
  shares they accept: hollow holders, online and answering, failing audits),
  ``kept_fraction`` (of a share's blocks a bad node keeps: a spot check of one block
  passes with that probability). Only with the real policy: owners' audits feed each
  holder's reputation (node/core/holders.py) and an evicted holder's shares are rebuilt.
- ``[backups]`` ``packs_per_day`` (new packs a day in the whole world, made by the owners'
  scheduled backups), ``backup_every`` (a duration).

A table left out means that process does not happen (no churn, no failures, no backups),
or for repair, that the real policy runs. Unknown tables or keys are refused: a typo must
not silently run a different experiment.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corestate.simulations.errors import ScenarioError

MiB = 1 << 20
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class World:
    nodes: int
    packs: int
    days: float
    pack_size: int = 64 * MiB
    capacity: int = 4 << 40
    upload: float = 10.0 * MiB  # bytes per second
    download: float = 50.0 * MiB
    sites: int = 0
    sample_every: float = 1.0  # days


@dataclass(frozen=True, slots=True)
class Code:
    k: int
    n: int


@dataclass(frozen=True, slots=True)
class Failures:
    model: str = "exponential"
    node_mttf_days: float = 0.0  # 0: no single-disk losses
    shape: float = 1.0
    site_mttf_days: float = 0.0  # 0: no site losses


@dataclass(frozen=True, slots=True)
class Repair:
    model: str  # "exponential" or "none"
    repair_at: int = 0
    mean_days: float = 0.0


@dataclass(frozen=True, slots=True)
class Churn:
    model: str = "exponential"
    mean_online_hours: float = 16.0
    mean_offline_hours: float = 8.0
    shape: float = 1.0
    file: str = ""
    step: float = 1.0 / 1440  # days; 0: every switch is its own event


@dataclass(frozen=True, slots=True)
class Policy:
    repair_every: float = 1.0  # days (the scheduler's default, 1 day)
    audit_every: float | None = None
    holder_lost_after: float = 3.0  # days
    candidates: int = 16
    audit_block: int = 64 * 1024
    holder_book: bool | None = None  # None: the health core's book when nodes <= 100
    owner_away_after: float = 3.0  # days ([health] owner_away_after)
    member_repair: bool = True  # members repair the packs of an owner away (node/core/lease.py)


@dataclass(frozen=True, slots=True)
class Backups:
    packs_per_day: float = 0.0
    backup_every: float = 1.0  # days


@dataclass(frozen=True, slots=True)
class Faults:
    bad_nodes: float = 0.0  # fraction of nodes that are hollow holders
    kept_fraction: float = 0.0  # of each share's blocks a hollow holder keeps


@dataclass(frozen=True, slots=True)
class Scenario:
    world: World
    code: Code
    failures: Failures | None = None
    repair: Repair | None = None
    churn: Churn | None = None
    policy: Policy = field(default_factory=Policy)
    backups: Backups | None = None
    name: str = "scenario"
    faults: Faults | None = None

    @property
    def real_policy(self) -> bool:
        return self.repair is None


_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_DUR = {"s": 1 / DAY, "m": 60 / DAY, "h": 3600 / DAY, "d": 1.0, "y": 365.0}


def size(where: str, v: Any) -> int:
    """Bytes from an int or a string like "64 MiB"."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _UNITS:
        raise ScenarioError(where, f"{v!r} is not a size", hint='write sizes like "64 MiB"')
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def rate(where: str, v: Any) -> float:
    """Bytes per second from a number or a string like "10 MiB/s"."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    if not s.endswith("/s"):
        raise ScenarioError(where, f"{v!r} is not a rate", hint='write rates like "10 MiB/s"')
    return float(size(where, s[:-2]))


def duration(where: str, v: Any) -> float:
    """Days from a string like "30s", "5m", "2h", "3d" (a bare number is days)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smhdy])\s*", str(v))
    if not m:
        raise ScenarioError(where, f"{v!r} is not a duration", hint='write durations like "30s", "2h", "3d"')
    return float(m.group(1)) * _DUR[m.group(2)]


_KEYS: dict[str, set[str]] = {
    "world": {"nodes", "packs", "days", "pack_size", "capacity", "upload", "download", "sites",
              "sample_every"},
    "code": {"k", "n"},
    "failures": {"model", "node_mttf_days", "shape", "site_mttf_days"},
    "repair": {"model", "repair_at", "mean_days"},
    "churn": {"model", "mean_online_hours", "mean_offline_hours", "shape", "file", "step"},
    "policy": {"repair_every", "audit_every", "holder_lost_after", "candidates", "audit_block",
               "holder_book", "owner_away_after", "member_repair"},
    "backups": {"packs_per_day", "backup_every"},
    "faults": {"bad_nodes", "kept_fraction"},
    "scenario": {"name"},
}


def _num(where: str, v: Any, *, lo: float = 0.0, integer: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
        raise ScenarioError(where, f"{v!r} is not {'an integer' if integer else 'a number'}")
    if v < lo:
        raise ScenarioError(where, f"{v} is below {lo:g}")
    return v


def _flag(where: str, v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise ScenarioError(where, f"{v!r} is not true or false")


def parse(doc: Mapping[str, Any], *, name: str = "scenario", base: Path | None = None) -> Scenario:
    """A :class:`Scenario` from a parsed TOML document (``base``: where relative trace
    files are found)."""
    for table, body in doc.items():
        if table not in _KEYS:
            raise ScenarioError(f"[{table}]", "unknown table")
        if not isinstance(body, Mapping):
            raise ScenarioError(f"[{table}]", "is not a table")
        for key in body:
            if key not in _KEYS[table]:
                raise ScenarioError(f"[{table}] {key}", "unknown key")
    if "world" not in doc or "code" not in doc:
        raise ScenarioError("scenario", "needs a [world] and a [code] table")
    w = doc["world"]
    for key in ("nodes", "packs", "days"):
        if key not in w:
            raise ScenarioError(f"[world] {key}", "missing")
    world = World(
        nodes=_num("[world] nodes", w["nodes"], lo=1, integer=True),
        packs=_num("[world] packs", w["packs"], integer=True),
        days=float(_num("[world] days", w["days"])),
        pack_size=size("[world] pack_size", w.get("pack_size", 64 * MiB)),
        capacity=size("[world] capacity", w.get("capacity", 4 << 40)),
        upload=rate("[world] upload", w.get("upload", 10.0 * MiB)),
        download=rate("[world] download", w.get("download", 50.0 * MiB)),
        sites=_num("[world] sites", w.get("sites", 0), integer=True),
        sample_every=duration("[world] sample_every", w.get("sample_every", "1d")),
    )
    c = doc["code"]
    code = Code(k=_num("[code] k", c.get("k", 0), lo=1, integer=True),
                n=_num("[code] n", c.get("n", 0), lo=1, integer=True))
    if code.k > code.n or code.n > 255:
        raise ScenarioError("[code]", f"k={code.k} n={code.n} is not possible", hint="use 1 <= k <= n <= 255")
    if code.n > world.nodes:
        raise ScenarioError("[code] n", f"{code.n} shares need at least {code.n} nodes, the world has {world.nodes}")
    if "repair" not in doc and code.n > world.nodes - 1:
        raise ScenarioError("[code] n", f"the real policy places shares on other nodes than the owner: "
                            f"n={code.n} needs at least {code.n + 1} nodes")
    failures = None
    if "failures" in doc:
        f = doc["failures"]
        model = f.get("model", "exponential")
        if model not in ("exponential", "weibull"):
            raise ScenarioError("[failures] model", f"{model!r}: use exponential or weibull")
        failures = Failures(model, float(_num("[failures] node_mttf_days", f.get("node_mttf_days", 0.0))),
                            float(_num("[failures] shape", f.get("shape", 1.0), lo=0.05)),
                            float(_num("[failures] site_mttf_days", f.get("site_mttf_days", 0.0))))
    repair = None
    if "repair" in doc:
        r = doc["repair"]
        model = r.get("model", "")
        if model == "none":
            repair = Repair("none")
        elif model == "exponential":
            for key in ("repair_at", "mean_days"):
                if key not in r:
                    raise ScenarioError(f"[repair] {key}", "missing (needed by model = \"exponential\")")
            repair = Repair("exponential", _num("[repair] repair_at", r["repair_at"], integer=True),
                            float(_num("[repair] mean_days", r["mean_days"])))
            if not code.k <= repair.repair_at < code.n:
                raise ScenarioError("[repair] repair_at", f"{repair.repair_at} must be in [k, n-1] = [{code.k}, {code.n - 1}]")
        else:
            raise ScenarioError("[repair] model", f"{model!r}: use exponential or none (or leave the table "
                                "out for the node's real policy)")
    churn = None
    if "churn" in doc:
        ch = doc["churn"]
        model = ch.get("model", "exponential")
        if model not in ("exponential", "weibull", "trace"):
            raise ScenarioError("[churn] model", f"{model!r}: use exponential, weibull or trace")
        file = str(ch.get("file", ""))
        if model == "trace":
            if not file:
                raise ScenarioError("[churn] file", "missing (needed by model = \"trace\")")
            if base is not None and not Path(file).is_absolute():
                file = str(base / file)
        churn = Churn(model, float(_num("[churn] mean_online_hours", ch.get("mean_online_hours", 16.0), lo=1e-6)),
                      float(_num("[churn] mean_offline_hours", ch.get("mean_offline_hours", 8.0), lo=1e-6)),
                      float(_num("[churn] shape", ch.get("shape", 1.0), lo=0.05)), file,
                      duration("[churn] step", ch.get("step", "1m")))
    p = doc.get("policy", {})
    if p and repair is not None:
        raise ScenarioError("[policy]", "only applies to the real policy: remove the [repair] table or this one")
    audit = p.get("audit_every")
    policy = Policy(
        repair_every=duration("[policy] repair_every", p.get("repair_every", "1d")),
        audit_every=None if audit is None else duration("[policy] audit_every", audit),
        holder_lost_after=duration("[policy] holder_lost_after", p.get("holder_lost_after", "3d")),
        candidates=_num("[policy] candidates", p.get("candidates", 16), integer=True),
        audit_block=size("[policy] audit_block", p.get("audit_block", 64 * 1024)),
        holder_book=_flag("[policy] holder_book", p.get("holder_book")),
        owner_away_after=duration("[policy] owner_away_after", p.get("owner_away_after", "3d")),
        member_repair=_flag("[policy] member_repair", p.get("member_repair", True)) is not False,
    )
    backups = None
    if "backups" in doc:
        b = doc["backups"]
        backups = Backups(float(_num("[backups] packs_per_day", b.get("packs_per_day", 0.0))),
                          duration("[backups] backup_every", b.get("backup_every", "1d")))
    if backups is not None and repair is not None:
        raise ScenarioError("[backups]", "backups are run by the owners' schedulers, i.e. the real policy: "
                            "remove the [repair] table or this one")
    faults = None
    if "faults" in doc:
        ft = doc["faults"]
        faults = Faults(float(_num("[faults] bad_nodes", ft.get("bad_nodes", 0.0), lo=0.0)),
                        float(_num("[faults] kept_fraction", ft.get("kept_fraction", 0.0), lo=0.0)))
        if faults.bad_nodes > 1 or faults.kept_fraction >= 1:
            raise ScenarioError("[faults]", "bad_nodes is a fraction (0 to 1), kept_fraction below 1")
        if repair is not None:
            raise ScenarioError("[faults]", "hollow holders are found by the real policy's audits: "
                                "remove the [repair] table or this one")
    name = str(doc.get("scenario", {}).get("name", name))
    return Scenario(world, code, failures, repair, churn, policy, backups, name, faults)


def load(path: str | Path) -> Scenario:
    """Read and parse a scenario file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), f"not TOML: {exc}") from None
    return parse(doc, name=path.stem, base=path.parent)


def with_values(doc: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a scenario document with dotted keys set ("code.k" = 4); a value of
    ``false`` for a table name removes the table (e.g. "repair" = false)."""
    out: dict[str, Any] = {t: dict(b) for t, b in doc.items()}
    for dotted, v in values.items():
        if "." not in dotted:
            if v is False:
                out.pop(dotted, None)
                continue
            raise ScenarioError(f"grid key {dotted!r}", "write table.key, e.g. code.k")
        table, key = dotted.split(".", 1)
        out.setdefault(table, {})[key] = v
    return out


__all__ = ["Backups", "Churn", "Code", "Failures", "Policy", "Repair", "Scenario", "World",
           "duration", "load", "parse", "rate", "replace", "size", "with_values"]
