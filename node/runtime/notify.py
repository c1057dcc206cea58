"""The daemon's notifications: ``[notify] webhook`` and ``[notify] command``.

A subscriber of the event bus. Each event or alert goes through the pure core
(node/core/notify.py: which kind, deduplicated, rate-limited); what is to be sent goes to a
bounded queue that one delivery task empties, one notification at a time:

- webhook: an HTTP POST of the JSON object (``Content-Type: application/json``);
- command: ``/bin/sh -c COMMAND`` with the same JSON on its stdin and ``CORESTATE_KIND``,
  ``CORESTATE_SEVERITY``, ``CORESTATE_MESSAGE`` in its environment (exit 0 = delivered).

The JSON object: ``kind``, ``severity``, ``message``, ``node`` (this node's PeerID),
``host``, ``time`` (ISO 8601, UTC), ``time_ns`` and ``details`` (strings).

Invariants: nothing here can slow a backup down — the bus never waits for a subscriber,
the queue is bounded (``QUEUE``; what does not fit is logged and dropped), each delivery
gives up after ``[notify] timeout`` (the command is killed); a failed delivery is logged
(and counted in the metrics) and never retried in a loop. The overdue watch publishes the
alert ``backup-overdue`` on the bus, so ``status`` shows it too.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import trio
from corestate.node.core import notify as core
from corestate.node.home import Config
from corestate.node.runtime.events import EventBus, alert
from corestate.protocol import control as c

log = logging.getLogger("corestate.notify")

QUEUE = 64
# trio's keyword (the installed trio-stubs still know only its old name, ``cancellable``).
_ABANDON: dict[str, Any] = {"abandon_on_cancel": True}
OVERDUE_POLL_MAX = 3600.0  # seconds between overdue checks at most (the clock may jump)


def payload(notice: core.Notice, node: str) -> bytes:
    t = datetime.datetime.fromtimestamp(notice.time_ns / 1e9, tz=datetime.UTC)
    return json.dumps({
        "kind": notice.kind, "severity": notice.severity, "message": notice.message,
        "node": node, "host": socket.gethostname(),
        "time": t.isoformat(timespec="seconds").replace("+00:00", "Z"), "time_ns": notice.time_ns,
        "details": notice.details,
    }, sort_keys=True).encode()


class NotifyService:
    def __init__(self, cfg: Config, node_id: str, events: EventBus, *,
                 last_snapshot: float | None = None,
                 on_result: Callable[[str, str, bool], None] | None = None) -> None:
        """``on_result(channel, kind, ok)`` hears about each delivery (the metrics)."""
        self.cfg, self.node_id, self.events = cfg, node_id, events
        self.policy = core.Policy(cfg.notify_repeat_after, cfg.notify_max_per_hour)
        self.overdue = core.OverdueWatch(cfg.backup_every if cfg.paths else 0.0, last_snapshot, time.time())
        self.on_result = on_result
        self._send, self._recv = trio.open_memory_channel[core.Notice](QUEUE)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.notify_webhook or self.cfg.notify_command)

    async def run(self) -> None:
        sub = self.events.subscribe(("backup", "alert"))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver_all)
                nursery.start_soon(self._watch_overdue)
                async for ev in sub:
                    self.handle(ev)
        finally:
            sub.close()

    def handle(self, ev: c.Message) -> None:
        if isinstance(ev, c.Missed):
            log.warning("notifications: %d events missed (the daemon was too busy)", ev.count)
            return
        if isinstance(ev, c.BackupFinished):
            self.overdue.snapshot_made(ev.time_ns / 1e9)
        self.policy.resolve(core.resolved_by(ev))
        notice = core.notice_of(ev)
        if notice is None:
            return
        decision = self.policy.decide(notice, time.time())
        if not decision.send:
            log.info("notification %s not sent: %s", notice.kind, decision.reason)
            return
        try:
            self._send.send_nowait(decision.notice)
        except trio.WouldBlock:
            log.warning("notification %s dropped: %d are already waiting to be delivered", notice.kind, QUEUE)

    async def _watch_overdue(self) -> None:
        while True:
            due = self.overdue.deadline()
            wait = OVERDUE_POLL_MAX if due is None else min(OVERDUE_POLL_MAX, max(0.0, due - time.time()))
            await trio.sleep(wait + 0.01)
            notice = self.overdue.check(time.time())
            if notice is not None:
                self.events.publish(alert("backup-overdue", notice.message, severity=notice.severity,
                                          **notice.details))

    async def _deliver_all(self) -> None:
        async for notice in self._recv:
            if not self.enabled:
                continue
            body = payload(notice, self.node_id)
            if self.cfg.notify_webhook:
                ok = await self._webhook(self.cfg.notify_webhook, body, notice.kind)
                self._result("webhook", notice.kind, ok)
            if self.cfg.notify_command:
                ok = await self._command(self.cfg.notify_command, body, notice)
                self._result("command", notice.kind, ok)

    def _result(self, channel: str, kind: str, ok: bool) -> None:
        if self.on_result is not None:
            self.on_result(channel, kind, ok)

    async def _webhook(self, url: str, body: bytes, kind: str) -> bool:
        timeout = self.cfg.notify_timeout

        def post() -> int:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "corestate-notify"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status)
        try:
            with trio.fail_after(timeout + 1):
                # Abandoned on timeout: the thread ends by itself (urlopen's timeout).
                status = await trio.to_thread.run_sync(post, **_ABANDON)
        except (trio.TooSlowError, TimeoutError):
            log.warning("notification %s: the webhook did not answer within %gs", kind, timeout)
            return False
        except urllib.error.HTTPError as exc:
            log.warning("notification %s: the webhook answered HTTP %d", kind, exc.code)
            return False
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if isinstance(getattr(exc, "reason", None), TimeoutError):
                log.warning("notification %s: the webhook did not answer within %gs", kind, timeout)
                return False
            log.warning("notification %s: the webhook could not be reached: %s", kind,
                        getattr(exc, "reason", exc))
            return False
        log.info("notification %s sent to the webhook (HTTP %d)", kind, status)
        return True

    async def _command(self, command: str, body: bytes, notice: core.Notice) -> bool:
        kind = notice.kind
        # The JSON on stdin; the three fields a one-liner needs also in the environment.
        env = {**os.environ, "CORESTATE_KIND": kind, "CORESTATE_SEVERITY": notice.severity,
               "CORESTATE_MESSAGE": notice.message}
        try:
            with trio.fail_after(self.cfg.notify_timeout):
                proc = await trio.run_process(["/bin/sh", "-c", command], stdin=body, check=False,
                                              capture_stdout=True, capture_stderr=True, env=env)
        except trio.TooSlowError:
            log.warning("notification %s: the command did not finish within %gs (killed)", kind,
                        self.cfg.notify_timeout)
            return False
        except OSError as exc:
            log.warning("notification %s: the command could not start: %s", kind, exc)
            return False
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-500:]
            log.warning("notification %s: the command exited with %d%s", kind, proc.returncode,
                        f": {err}" if err else "")
            return False
        log.info("notification %s delivered to the command", kind)
        return True


__all__ = ["NotifyService", "payload"]
