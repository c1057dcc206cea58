"""The campaign's report: ``REPORT.json`` (for machines; keys at least ``seconds``,
``faults``, ``snapshots_verified``, ``lost``, ``crashes``) and ``REPORT.md`` (for people).

Memory and fd growth are measured per daemon process (a daemon we restart starts afresh):
the baseline is its first sample at least ``warmup`` seconds after it started, the growth
its largest later sample over that baseline. Only processes that lived at least twice the
warm-up count; the report says how many did.

``lost`` and ``crashes`` are counts; their details are lists beside them. ``fuzz`` is left
for the fuzzing runner (tests/fuzz) to fill in: null here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def growth(samples: list[tuple[float, int, int, int, int, int]], started: dict[int, float],
           warmup: float) -> dict[str, Any]:
    by_pid: dict[int, list[tuple[float, int, int, int, int, int]]] = {}
    for s in samples:
        by_pid.setdefault(s[2], []).append(s)
    per: list[dict[str, Any]] = []
    for pid, ss in by_pid.items():
        t0 = started.get(pid, ss[0][0])
        after = [s for s in ss if s[0] - t0 >= warmup]
        if len(after) < 2 or ss[-1][0] - t0 < 2 * warmup:
            continue
        base = after[0]
        rss = max(s[3] for s in after) / max(1, base[3])
        fds = max(s[5] for s in after) / max(1, base[5])
        per.append({"node": base[1] + 1, "pid": pid, "lived_s": round(ss[-1][0] - t0, 1),
                    "rss_base_kib": base[3], "rss_max_kib": max(s[3] for s in after),
                    "hwm_kib": max(s[4] for s in ss), "rss_growth": round(rss, 3),
                    "fds_base": base[5], "fds_max": max(s[5] for s in after), "fd_growth": round(fds, 3)})
    return {
        "processes_measured": len(per),
        "largest_memory_growth": max((p["rss_growth"] for p in per), default=None),
        "largest_fd_growth": max((p["fd_growth"] for p in per), default=None),
        "largest_rss_kib": max((s[3] for s in samples), default=None),
        "per_process": sorted(per, key=lambda p: -p["rss_growth"]),
    }


def write(campaign: Any, out: Path) -> dict[str, Any]:
    st = campaign.state
    prof = campaign.prof
    mem = growth(st.samples, st.started_at, prof.warmup)
    checks_failed = sorted(k for k, v in st.checks.items() if v != 0)
    rep: dict[str, Any] = {
        "seed": st.seed,
        "profile": st.profile,
        "nodes": prof.nodes,
        "soak_s": prof.soak,
        "seconds": round(time.monotonic() - st.started, 1),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": st.rounds,
        "faults": dict(sorted(st.faults.items())),
        "faults_total": sum(st.faults.values()),
        "faults_not_run": st.faults_skipped,
        "fault_errors": st.fault_errors,
        "backups": st.backups,
        "backup_failures": st.backup_failures[:50],
        "snapshots_recorded": len(st.snaps),
        "snapshots_verified": st.verified,
        "bytes_verified": st.bytes_verified,
        "lost": len(st.lost),
        "lost_detail": st.lost,
        "check_read_data": st.checks,
        "checks_failed": checks_failed,
        "repair_exit": st.repairs,
        "crashes": len(st.crashes),
        "crash_detail": [c[:3000] for c in st.crashes],
        "largest_memory_growth": mem["largest_memory_growth"],
        "largest_fd_growth": mem["largest_fd_growth"],
        "memory": mem,
        "alerts": dict(sorted(st.alerts.items())),
        "clock_skew": st.clock,
        "hostile_seen": campaign.ctx.hostile if hasattr(campaign, "ctx") else [],
        "environment": st.environment,
        "fuzz": None,
    }
    # The bound (under 1.5x after warm-up) for memory and open files. It decides
    # the verdict of the full profile only: in the short one daemons live a minute or two
    # between kills, too short for a baseline after warm-up to mean much.
    growth_ok = all(g is None or g < 1.5 for g in (mem["largest_memory_growth"], mem["largest_fd_growth"]))
    rep["growth_ok"] = growth_ok
    rep["growth_decides"] = st.profile == "full"
    # The skewed member's entries must have been clamped and alerted somewhere, its own
    # snapshots restored like everyone's.
    clock_ok = bool(st.clock.get("clock_ahead_alert_on")) and st.clock.get("alert_names_the_skewed_node", False)
    rep["clock_ok"] = clock_ok
    rep["ok"] = (not st.lost and not st.crashes and not checks_failed and st.verified > 0
                 and st.verified == len(st.snaps) and clock_ok
                 and (growth_ok or st.profile != "full"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "REPORT.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "REPORT.md").write_text(markdown(rep))
    return rep


def markdown(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["ok"] else "FAIL"
    lines = [
        f"# Chaos campaign report: {verdict}",
        "",
        f"Profile `{r['profile']}`, seed `{r['seed']}` (re-run: `python -m tests.chaos --profile "
        f"{r['profile']} --seed {r['seed']}`), {r['nodes']} daemons, finished {r['finished_utc']}.",
        "",
        "| | |",
        "|---|---|",
        f"| time | {r['seconds']} s ({r['soak_s']:g} s of rounds under faults) |",
        f"| rounds | {r['rounds']} |",
        f"| faults injected | {r['faults_total']} |",
        f"| backups | {r['backups']} |",
        f"| snapshots verified byte-identical | {r['snapshots_verified']} of {r['snapshots_recorded']} "
        f"({r['bytes_verified']} bytes) |",
        f"| **lost** | **{r['lost']}** |",
        f"| `check --read-data` exit per node | {r['check_read_data']} |",
        f"| **crashes** | **{r['crashes']}** |",
        f"| largest memory growth after warm-up | {r['largest_memory_growth']} "
        f"({r['memory']['processes_measured']} daemon processes measured; must stay < 1.5) |",
        f"| largest open-fd growth | {r['largest_fd_growth']} (growth decides the verdict: "
        f"{'yes' if r['growth_decides'] else 'no, short profile'}) |",
        f"| largest RSS | {r['memory']['largest_rss_kib']} KiB |",
        "",
        "## Faults by kind",
        "",
        "| kind | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in r["faults"].items()],
        "",
    ]
    if r["faults_not_run"]:
        lines += ["Not run here: " + "; ".join(f"`{k}` ({v})" for k, v in r["faults_not_run"].items()), ""]
    lines += ["## Environment", "", *[f"- {k}: {v}" for k, v in r["environment"].items()], "",
              "## Clock skew", "", f"```\n{json.dumps(r['clock_skew'], indent=2)}\n```", "",
              "## Hostile strangers: what they saw", "",
              *[f"- `{x[:400]}`" for x in r["hostile_seen"]], "",
              "## Alerts raised (from the daemon logs)", "",
              *[f"- `{k}`: {v}" for k, v in r["alerts"].items()], ""]
    for title, key in (("Lost", "lost_detail"), ("Crashes", "crash_detail"),
                       ("Backups that failed under faults (expected; not losses)", "backup_failures"),
                       ("Injector errors", "fault_errors")):
        if r[key]:
            lines += [f"## {title}", "", *[f"- ```{x[:1500]}```".replace("\n", " ") for x in r[key]], ""]
    lines += ["## Fuzzing", "", "Filled in by the fuzzing runner (tests/fuzz)." if r["fuzz"] is None
              else f"```\n{json.dumps(r['fuzz'], indent=2)}\n```", ""]
    return "\n".join(lines)
