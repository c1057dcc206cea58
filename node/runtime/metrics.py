"""The daemon's Prometheus metrics: ``[metrics] listen = "HOST:PORT"`` serves ``/metrics``.

Two sources:

- the event bus: a subscriber counts what happens (backups by result, bytes read and
  added, durations, restores, checks, repairs, retention runs, alerts by name, peers
  coming and going, notifications delivered) — :meth:`Metrics.observe`, one event at a time;
- node state: gauges read every ``REFRESH`` seconds and after each command, in a worker
  thread (packs by redundancy state, holders by state, peers online, snapshots, store and
  vault usage) — :meth:`Metrics.refresh`.

Families fed by alerts whose producers are being built (health and anomaly work): audits
(``failed-audit``, ``corrupt-share``), holder events (``holder-evicted``, ``holder-lost``),
anomaly verdicts (``anomaly``, ``anomaly-suspect``), repairs. They exist from the start (at
zero) so dashboards and alert rules can name them.

The HTTP server is prometheus-client's own, in a daemon thread of its own: a scrape never
waits for the trio loop, and reads only the registry (values set under its locks).

Invariants: every family lives in this object's registry (never the global one: two
daemons in one test process stay apart); label values come from small closed sets (a
result, a state, an alert name cut to 64 characters) — never a path or a PeerID — so the
series count stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corestate.protocol import control as c
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

if TYPE_CHECKING:
    from corestate.node.local import LocalNode

log = logging.getLogger("corestate.metrics")

REFRESH = 15.0  # seconds between reads of node state
# Backup durations run from a second (nothing changed) to hours (a first backup).
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, float("inf"))

# Audit alerts: the name -> the ``result`` label of corestate_audits_total.
AUDIT_ALERTS = {"failed-audit": "failed", "corrupt-share": "corrupt"}
HOLDER_ALERTS = {"holder-evicted": "evicted", "holder-lost": "lost"}
ANOMALY_ALERTS = {"anomaly": "alert", "anomaly-suspect": "suspect"}
REDUNDANCY_STATES = ("full", "degraded", "at_risk", "local")


def _result(code: int) -> str:
    return "success" if code == 0 else "incomplete" if code == 3 else "failed"


@dataclass(frozen=True, slots=True)
class NodeGauges:
    """What :func:`read_gauges` read from node state (plain numbers, for ``refresh``)."""

    packs: dict[str, int]
    holders: dict[str, int]
    peers_online: int
    peers_trusted: int
    snapshots: int
    last_snapshot: float | None
    store_bytes: int
    store_packs: int
    vault_bytes: int
    vault_shares: int
    vault_senders: int


class Metrics:
    def __init__(self, peer_id: str = "") -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ns = "corestate"
        self.info = Info("node", "This node", namespace=ns, registry=r)
        self.info.info({"peer_id": peer_id})
        self.backups = Counter("backups", "Backups ended, by result (success, incomplete, failed) "
                               "and whether the schedule started them", ["result", "scheduled"],
                               namespace=ns, registry=r)
        self.backup_bytes_read = Counter("backup_read_bytes", "Bytes read from files not in the caches",
                                         namespace=ns, registry=r)
        self.backup_bytes_added = Counter("backup_added_bytes", "New bytes added to the repository "
                                          "(after dedup and compression)", namespace=ns, registry=r)
        self.backup_files = Counter("backup_files", "Files seen by backups", namespace=ns, registry=r)
        self.backup_duration = Histogram("backup_duration_seconds", "Wall time of backups that made "
                                         "a snapshot", namespace=ns, registry=r, buckets=DURATION_BUCKETS)
        self.last_success = Gauge("last_backup_success_timestamp_seconds", "When the last backup "
                                  "that ended complete and safe finished (Unix time)", namespace=ns, registry=r)
        self.last_snapshot = Gauge("last_snapshot_timestamp_seconds", "Time of this node's newest "
                                   "snapshot (Unix time; 0: none)", namespace=ns, registry=r)
        self.backup_running = Gauge("backup_running", "1 while a backup runs", namespace=ns, registry=r)
        self.restores = Counter("restores", "Restores ended, by result", ["result"], namespace=ns, registry=r)
        self.checks = Counter("checks", "Checks ended, by result (success: sound; incomplete: "
                              "redundancy below full; failed: damage)", ["result"], namespace=ns, registry=r)
        self.repairs = Counter("repairs", "Repair runs ended, by result (success: every pack full "
                               "again)", ["result", "scheduled"], namespace=ns, registry=r)
        self.retention = Counter("retention_runs", "Retention runs ended, by result", ["result"],
                                 namespace=ns, registry=r)
        self.audits = Counter("audit_failures", "Audits of holders that failed, by what was wrong "
                              "(failed: no valid proof; corrupt: a share did not match)", ["result"],
                              namespace=ns, registry=r)
        self.holder_events = Counter("holder_events", "Holders evicted or declared lost", ["event"],
                                     namespace=ns, registry=r)
        self.anomaly = Counter("anomaly_verdicts", "Verdicts of the anomaly model that raised an "
                               "alert (alert) or a suspicion (suspect)", ["verdict"], namespace=ns, registry=r)
        self.alerts = Counter("alerts", "Alerts raised, by name and severity", ["alert", "severity"],
                              namespace=ns, registry=r)
        self.notifications = Counter("notifications", "Notifications delivered or failed, by channel "
                                     "and kind", ["channel", "kind", "result"], namespace=ns, registry=r)
        self.events_missed = Counter("metrics_events_missed", "Events the metrics subscriber missed "
                                     "(the counters above are low by as many)", namespace=ns, registry=r)
        self.packs = Gauge("packs", "This node's data packs by redundancy state (what the share "
                           "ledger last knew)", ["state"], namespace=ns, registry=r)
        self.holders = Gauge("holders", "Peers holding this node's shares, by state (online, offline)",
                             ["state"], namespace=ns, registry=r)
        self.peers_online = Gauge("peers_online", "Trusted peers and group members connected now",
                                  namespace=ns, registry=r)
        self.peers_trusted = Gauge("peers_trusted", "Trusted peers and group members", namespace=ns, registry=r)
        self.snapshots = Gauge("snapshots", "Snapshots in the repository", namespace=ns, registry=r)
        self.store_bytes = Gauge("store_bytes", "Bytes of packs in the local pack store", namespace=ns, registry=r)
        self.store_packs = Gauge("store_packs", "Packs in the local pack store", namespace=ns, registry=r)
        self.vault_bytes = Gauge("vault_bytes", "Bytes of shares held for other nodes", namespace=ns, registry=r)
        self.vault_shares = Gauge("vault_shares", "Shares held for other nodes", namespace=ns, registry=r)
        self.vault_senders = Gauge("vault_senders", "Nodes whose shares this node holds", namespace=ns, registry=r)
        self.refreshed = Gauge("metrics_refresh_timestamp_seconds", "When the node-state gauges were "
                               "last read (Unix time)", namespace=ns, registry=r)
        # Series that exist at zero from the start (a rate() needs the first sample).
        for res in ("success", "incomplete", "failed"):
            for sch in ("true", "false"):
                self.backups.labels(res, sch)
                self.repairs.labels(res, sch)
            self.restores.labels(res)
            self.checks.labels(res)
            self.retention.labels(res)
        for v in AUDIT_ALERTS.values():
            self.audits.labels(v)
        for v in HOLDER_ALERTS.values():
            self.holder_events.labels(v)
        for v in ANOMALY_ALERTS.values():
            self.anomaly.labels(v)
        for s in REDUNDANCY_STATES:
            self.packs.labels(s)
        for s in ("online", "offline"):
            self.holders.labels(s)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- events ----------------------------------------------------------------------------

    def observe(self, ev: c.Message) -> None:
        """Count one event of the bus."""
        if isinstance(ev, c.Missed):
            self.events_missed.inc(ev.count)
        elif isinstance(ev, c.BackupStarted):
            self.backup_running.set(1)
        elif isinstance(ev, c.BackupFinished):
            self.backup_running.set(0)
            sch = str(ev.scheduled).lower()
            self.backups.labels(_result(ev.code), sch).inc()
            self.backup_bytes_read.inc(ev.bytes_read)
            self.backup_bytes_added.inc(ev.bytes_added)
            self.backup_files.inc(ev.files)
            try:
                self.backup_duration.observe(float(ev.seconds))
            except ValueError:
                pass
            if ev.code == 0:
                self.last_success.set(ev.time_ns / 1e9)
            self.last_snapshot.set(ev.time_ns / 1e9)
        elif isinstance(ev, c.BackupFailed):
            self.backup_running.set(0)
            self.backups.labels("failed", str(ev.scheduled).lower()).inc()
        elif isinstance(ev, c.RestoreFinished):
            self.restores.labels(_result(ev.code)).inc()
        elif isinstance(ev, c.RestoreFailed):
            self.restores.labels("failed").inc()
        elif isinstance(ev, c.CheckFinished):
            self.checks.labels(_result(ev.code)).inc()
        elif isinstance(ev, c.RepairFinished):
            self.repairs.labels("success" if ev.code == 0 else "incomplete" if ev.code == 3 else "failed",
                                str(ev.scheduled).lower()).inc()
        elif isinstance(ev, c.RetentionFinished):
            self.retention.labels(_result(ev.code)).inc()
        elif isinstance(ev, c.Alert):
            self.alerts.labels(ev.alert[:64], ev.severity if ev.severity in c.SEVERITIES else "warning").inc()
            if ev.alert in AUDIT_ALERTS:
                self.audits.labels(AUDIT_ALERTS[ev.alert]).inc()
            if ev.alert in HOLDER_ALERTS:
                self.holder_events.labels(HOLDER_ALERTS[ev.alert]).inc()
            if ev.alert in ANOMALY_ALERTS:
                self.anomaly.labels(ANOMALY_ALERTS[ev.alert]).inc()

    def notified(self, channel: str, kind: str, ok: bool) -> None:
        self.notifications.labels(channel, kind, "sent" if ok else "failed").inc()

    # -- node state ------------------------------------------------------------------------

    def refresh(self, g: NodeGauges) -> None:
        for state in REDUNDANCY_STATES:
            self.packs.labels(state).set(g.packs.get(state, 0))
        for state, n in g.holders.items():
            self.holders.labels(state).set(n)
        self.peers_online.set(g.peers_online)
        self.peers_trusted.set(g.peers_trusted)
        self.snapshots.set(g.snapshots)
        self.last_snapshot.set(g.last_snapshot or 0)
        self.store_bytes.set(g.store_bytes)
        self.store_packs.set(g.store_packs)
        self.vault_bytes.set(g.vault_bytes)
        self.vault_shares.set(g.vault_shares)
        self.vault_senders.set(g.vault_senders)
        self.refreshed.set(time.time())

    # -- the HTTP endpoint -----------------------------------------------------------------

    def serve(self, listen: str) -> tuple[str, int]:
        """Start the HTTP server on ``HOST:PORT`` (port 0: any free one); returns where it
        listens. Raises OSError when the address is taken."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        self._server, self._thread = start_http_server(int(port), addr=host, registry=self.registry)
        addr = self._server.server_address
        return str(addr[0]), int(addr[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def read_gauges(node: LocalNode, connected: frozenset[str], vault_stats: dict[str, int]) -> NodeGauges:
    """Node state for the gauges (a worker thread: sqlite and the store's folder)."""
    from corestate.node.app.status import redundancy
    red = redundancy(node)
    mine = set(node.trusted_peers())
    holders = set(node.ledger.peers())
    targets = {h for h in holders if h.startswith("target:")}
    if targets:
        # A storage target has no connection to be seen on: it counts online unless the
        # holder book counts it lost or evicted (its audits say whether it answers).
        from corestate.node.app.health import shunned
        connected = connected | (targets - shunned(node))
    store = node.repo.store
    local = store.local_ids() if hasattr(store, "local_ids") else set(store.list())
    size = 0
    for pid in local:
        try:
            size += store.size(pid)
        except Exception:  # a pack pruned meanwhile
            continue
    snaps = node.repo.snapshots()
    return NodeGauges(
        packs={"full": red.full, "degraded": red.degraded, "at_risk": red.at_risk, "local": red.local},
        holders={"online": len(holders & connected), "offline": len(holders - connected)},
        peers_online=len(mine & connected), peers_trusted=len(mine), snapshots=len(snaps),
        last_snapshot=snaps[-1].record.time_ns / 1e9 if snaps else None,
        store_bytes=size, store_packs=len(local),
        vault_bytes=vault_stats.get("bytes", 0), vault_shares=vault_stats.get("shares", 0),
        vault_senders=vault_stats.get("senders", 0))


__all__ = ["Metrics", "NodeGauges", "read_gauges"]
