"""Metrics and notifications of a real daemon (issue 19 items 2 and 3).

Two nodes on loopback, each daemon its own process, configured the way a user would edit
``config.toml``: ``[metrics] listen`` on a free port, ``[notify] webhook`` pointing at an
HTTP server run by this test, ``[notify] command`` a shell line that saves its stdin.

- the metrics endpoint is scraped over HTTP and parsed with prometheus-client's own text
  parser: backups by result, bytes, durations, snapshots, store size, packs by redundancy
  state, peers online, vault usage of the holder;
- scheduled backups that keep failing: one ``backup.failed`` notification (deduplicated),
  then ``backup.overdue`` after 2 x backup_every; both to the webhook (POST, JSON) and to
  the command (the same JSON on stdin);
- an incomplete backup (the only holder is down) notifies ``backup.incomplete``;
- a webhook that never answers and a command that hangs cost the backup nothing: the
  backup ends in its usual time; the failures are logged and counted;
- a metrics address already in use: the daemon logs it and runs without metrics.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from corestate.node.runtime.localmesh import LocalMesh, free_port
from meshutil import edit_config, make_mesh, random_tree, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


class Hook:
    """An HTTP server that records each POST (path, headers, JSON body); ``hang`` makes it
    never answer (it sleeps until the test ends)."""

    def __init__(self, hang: bool = False) -> None:
        self.posts: list[dict[str, Any]] = []
        self.hang = hang
        self.release = threading.Event()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append({"type": self.headers["Content-Type"], "json": json.loads(body)})
                if hook.hang:
                    hook.release.wait(120)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self) -> list[str]:
        return [p["json"]["kind"] for p in self.posts]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


Metrics = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Metrics:
    """``/metrics`` parsed by prometheus-client: sample name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: Metrics = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    rows = [v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(rows) == 1, f"{name}{labels}: {m.get(name)}"
    return rows[0]


def scrape_until(port: int, pred: Callable[[Metrics], bool], what: str) -> Metrics:
    """Scrape until ``pred`` holds (the gauges are read every 15 s and after each command)."""
    got: list[Metrics] = []

    def ok() -> bool:
        got[:] = [scrape(port)]
        return pred(got[0])
    wait_for(ok, 60, what, every=0.2)
    return got[0]


def has(m: Metrics, name: str, **labels: str) -> bool:
    return any(all(lab.get(k) == x for k, x in labels.items()) for lab, _ in m.get(name, []))


def command_notes(folder: Path) -> list[dict[str, Any]]:
    """What the command saved, one file per call, in the order the events happened."""
    notes = [json.loads(p.read_text()) for p in folder.glob("n.*") if p.stat().st_size]
    return sorted(notes, key=lambda n: n["time_ns"])


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LocalMesh, Hook, Path, int]]:
    hook = Hook()
    notes = tmp_path / "notes"
    notes.mkdir()
    lm = make_mesh(tmp_path / "mesh", 2)
    port = free_port()
    home = lm.nodes[0].home
    edit_config(home, 'listen = ""', f'listen = "127.0.0.1:{port}"')
    edit_config(home, 'webhook = ""', f'webhook = "{hook.url}"')
    edit_config(home, 'command = ""', f'command = "f=$(mktemp {notes}/n.XXXXXX); cat > $f; '
                f'printf %s $CORESTATE_KIND > {notes}/k.$(basename $f)"')
    edit_config(home, "paths = []", f'paths = ["{tmp_path / "not-there"}"]')
    edit_config(home, "backup_every = 0", 'backup_every = "3s"')
    try:
        yield lm, hook, notes, port
    finally:
        lm.close()
        hook.close()


def test_metrics_and_notifications_of_a_real_daemon(mesh: tuple[LocalMesh, Hook, Path, int],
                                                     tmp_path: Path) -> None:
    lm, hook, notes, port = mesh
    started = time.monotonic()
    lm.start()
    owner = lm.nodes[0]

    # Scheduled backups of a path that is not there fail every 3 s: one backup.failed
    # (the same failure is not repeated), then backup.overdue once 2 x 3 s passed with no
    # snapshot. The webhook and the command get the same JSON.
    wait_for(lambda: "backup.overdue" in hook.kinds(), 90, "a backup.overdue notification")
    assert time.monotonic() - started >= 6
    m = scrape_until(port, lambda m: value(m, "corestate_backups_total", result="failed",
                                           scheduled="true") >= 2, "a second scheduled failure")
    assert hook.kinds().count("backup.failed") == 1, hook.kinds()
    first = hook.posts[0]
    assert first["type"] == "application/json"
    note = first["json"]
    assert note["kind"] == "backup.failed" and note["severity"] == "critical"
    assert note["node"] == owner.peer_id and note["time"].endswith("Z")
    assert "not-there" in note["message"] and note["details"]["scheduled"] == "true"
    wait_for(lambda: len(command_notes(notes)) >= 2, 30, "the command's notifications")
    assert [n["kind"] for n in command_notes(notes)][:2] == hook.kinds()[:2]
    assert command_notes(notes)[0] == note
    wait_for(lambda: len([p for p in notes.glob("k.*") if p.stat().st_size]) >= 2, 30, "the kinds")
    kinds = sorted(p.read_text() for p in notes.glob("k.*"))
    assert kinds[:2] == ["backup.failed", "backup.overdue"]  # also in the environment
    assert value(m, "corestate_notifications_total", channel="webhook", kind="backup.failed",
                 result="sent") == 1
    assert value(m, "corestate_alerts_total", alert="backup-overdue", severity="warning") == 1

    # A backup with both nodes up: complete and safe, counted with its bytes.
    src = random_tree(tmp_path / "src", 3, seed=19)
    lm.run(owner, "backup", str(src))
    m = scrape_until(port, lambda m: value(m, "corestate_snapshots") == 1, "the gauges after the backup")
    assert value(m, "corestate_backups_total", result="success", scheduled="false") == 1
    assert value(m, "corestate_backup_read_bytes_total") >= 3 << 20
    assert value(m, "corestate_backup_added_bytes_total") >= 3 << 20
    assert value(m, "corestate_backup_duration_seconds_count") == 1
    assert value(m, "corestate_last_backup_success_timestamp_seconds") > time.time() - 600
    assert value(m, "corestate_peers_online") == 1 and value(m, "corestate_peers_trusted") == 1
    assert value(m, "corestate_holders", state="online") == 1
    packs = {s: value(m, "corestate_packs", state=s) for s in ("full", "degraded", "at_risk", "local")}
    assert packs["full"] >= 3 and packs["degraded"] == packs["at_risk"] == 0, packs
    assert value(m, "corestate_store_bytes") > 0 and value(m, "corestate_store_packs") >= 1
    assert value(m, "corestate_vault_bytes") == 0  # nobody stores on the owner
    assert value(m, "corestate_node_info", peer_id=owner.peer_id) == 1

    # The holder goes down: the next backup is incomplete (its data only here): notified.
    lm.stop(1)
    (src / "more.bin").write_bytes(b"x" * (2 << 20))
    p = lm.run(owner, "backup", str(src), check=False)
    assert p.returncode == 3, p.stderr
    wait_for(lambda: "backup.incomplete" in hook.kinds(), 30, "a backup.incomplete notification")
    inc = next(p["json"] for p in hook.posts if p["json"]["kind"] == "backup.incomplete")
    assert inc["severity"] == "warning" and inc["details"]["code"] == "3"
    m = scrape(port)
    assert value(m, "corestate_backups_total", result="incomplete", scheduled="false") == 1
    m = scrape_until(port, lambda m: value(m, "corestate_peers_online") == 0, "the holder counted offline")
    assert value(m, "corestate_holders", state="offline") == 1


def test_a_hanging_webhook_and_command_never_hold_a_backup_back(tmp_path: Path) -> None:
    hook = Hook(hang=True)
    lm = make_mesh(tmp_path / "mesh", 2)
    port = free_port()
    home = lm.nodes[0].home
    edit_config(home, 'listen = ""', f'listen = "127.0.0.1:{port}"')
    edit_config(home, 'webhook = ""', f'webhook = "{hook.url}"')
    edit_config(home, 'command = ""', 'command = "sleep 600"')
    edit_config(home, 'timeout = "10s"', 'timeout = "2s"')
    try:
        lm.start(0)  # the holder stays down: every backup is incomplete, so notifies
        owner = lm.nodes[0]
        src = random_tree(tmp_path / "src", 2, seed=7)
        times = []
        for i in range(3):
            (src / f"new{i}").write_bytes(bytes([i]) * 100_000)
            t0 = time.monotonic()
            p = lm.run(owner, "backup", str(src), check=False)
            times.append(time.monotonic() - t0)
            assert p.returncode == 3, p.stderr
        # Three notifications were due (the first sent, the next two repeats of the same
        # kind held back); none of it was waited for: the backups took their usual time.
        assert max(times) < 30, times
        scrape_until(port, lambda m: has(m, "corestate_notifications_total", channel="command",
                                         kind="backup.incomplete", result="failed"), "the command given up")
        m = scrape(port)
        assert value(m, "corestate_notifications_total", channel="webhook", kind="backup.incomplete",
                     result="failed") == 1
        assert value(m, "corestate_backups_total", result="incomplete", scheduled="false") == 3
        log = (home / "daemon.log").read_text()
        assert "the webhook did not answer within 2s" in log
        assert "the command did not finish within 2s (killed)" in log
        assert "not sent: the same backup.incomplete was sent" in log

        # A metrics address already taken: the daemon says so and runs without metrics.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            edit_config(lm.nodes[1].home, 'listen = ""', f'listen = "127.0.0.1:{busy}"')
            lm.start(1)
            assert lm.run(lm.nodes[1], "node", "info", "--json").returncode == 0
            log = (lm.nodes[1].home / "daemon.log").read_text()
            assert f"metrics: cannot listen on 127.0.0.1:{busy}" in log
    finally:
        lm.close()
        hook.close()
