"""The metric families fed by events (node/runtime/metrics.py), without a daemon: every
alert family the health and anomaly work will raise, parsed by prometheus-client's own
text parser; and the mount's chunk cache past its byte limit."""

from __future__ import annotations

from corestate.node.runtime.events import alert
from corestate.node.runtime.metrics import Metrics, NodeGauges
from corestate.protocol import control as c
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_alerts_and_events_fill_their_families() -> None:
    m = Metrics("12D3KooWtest")
    for ev in (
        alert("failed-audit", "a holder failed an audit", peer="A"),
        alert("corrupt-share", "bad share", peer="B"),
        alert("corrupt-share", "bad share", peer="B"),
        alert("holder-evicted", "evicted", peer="C"),
        alert("holder-lost", "lost", peer="D"),
        alert("anomaly", "many files changed", severity="critical", snapshot="ab", series="x",
              score="9.1", reasons="entropy"),
        alert("anomaly-suspect", "a few files changed", severity="info"),
        c.RepairFinished(time_ns=1, scheduled=True, code=0),
        c.RepairFinished(time_ns=2, scheduled=False, code=3),
        c.CheckFinished(time_ns=3, code=1),
        c.RetentionFinished(time_ns=4, scheduled=True, code=0),
        c.RestoreFailed(time_ns=5, message="x", hint=""),
        c.Missed(count=7),
    ):
        m.observe(ev)
    s = samples(m)
    assert s[("corestate_audit_failures_total", (("result", "failed"),))] == 1
    assert s[("corestate_audit_failures_total", (("result", "corrupt"),))] == 2
    assert s[("corestate_holder_events_total", (("event", "evicted"),))] == 1
    assert s[("corestate_holder_events_total", (("event", "lost"),))] == 1
    assert s[("corestate_anomaly_verdicts_total", (("verdict", "alert"),))] == 1
    assert s[("corestate_anomaly_verdicts_total", (("verdict", "suspect"),))] == 1
    assert s[("corestate_alerts_total", (("alert", "anomaly"), ("severity", "critical")))] == 1
    assert s[("corestate_repairs_total", (("result", "success"), ("scheduled", "true")))] == 1
    assert s[("corestate_repairs_total", (("result", "incomplete"), ("scheduled", "false")))] == 1
    assert s[("corestate_checks_total", (("result", "failed"),))] == 1
    assert s[("corestate_retention_runs_total", (("result", "success"),))] == 1
    assert s[("corestate_restores_total", (("result", "failed"),))] == 1
    assert s[("corestate_metrics_events_missed_total", ())] == 7


def test_gauges_take_what_was_read() -> None:
    m = Metrics()
    m.refresh(NodeGauges(packs={"full": 5, "degraded": 2, "at_risk": 1, "local": 0},
                         holders={"online": 2, "offline": 1}, peers_online=2, peers_trusted=3,
                         snapshots=4, last_snapshot=1.7e9, store_bytes=10 << 20, store_packs=3,
                         vault_bytes=1 << 30, vault_shares=100, vault_senders=2))
    s = samples(m)
    assert s[("corestate_packs", (("state", "degraded"),))] == 2
    assert s[("corestate_holders", (("state", "offline"),))] == 1
    assert s[("corestate_vault_bytes", ())] == 1 << 30
    assert s[("corestate_last_snapshot_timestamp_seconds", ())] == 1.7e9


def test_the_mount_chunk_cache_stays_under_its_byte_limit() -> None:
    import pytest
    mountfs = pytest.importorskip("corestate.node.runtime.mountfs")
    cache = mountfs._Chunks(64 << 20)
    chunks = [bytes([i]) * (1 << 20) for i in range(100)]  # 100 MiB of 1 MiB chunks
    for i, data in enumerate(chunks):
        cache.put(i.to_bytes(32, "big"), data)
        assert cache.size <= 64 << 20
    assert len(cache.items) == 64
    assert cache.get((0).to_bytes(32, "big")) is None  # the oldest went first
    assert cache.get((99).to_bytes(32, "big")) == chunks[99]


def test_every_series_the_grafana_dashboard_asks_for_exists() -> None:
    import json
    import re
    from pathlib import Path
    dash = json.loads((Path(__file__).parents[2] / "contrib" / "grafana" / "corestate.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs.append(dash["templating"]["list"][0]["query"]["query"])
    wanted = {n for e in exprs for n in re.findall(r"corestate_[a-z_]+", e)}
    # Every family, also those with no series yet (labelled by what happens): HELP lines.
    text = generate_latest(Metrics("x").registry).decode()
    have = set(re.findall(r"^# HELP (corestate_[a-z_]+) ", text, re.M)) | {n for n, _ in samples(Metrics("x"))}
    assert wanted and wanted <= have, sorted(wanted - have)
