"""Which notifications a person gets: events and alerts in, notices (or reasons not to) out.

Pure: no I/O, no clock. The daemon's notification service (node/runtime/notify.py) feeds
the event bus through :func:`notice_of`, asks :class:`Policy` whether to send, and asks
:class:`OverdueWatch` whether the scheduled backups have fallen behind; all three take the
wall-clock time (seconds) as a parameter.

Kinds (the ``kind`` of the JSON a webhook or command receives; issue 19):

- ``backup.failed``: a backup ended without a snapshot (event ``backup.failed``, alert
  ``backup-failed``);
- ``backup.incomplete``: a snapshot was made but some paths were not read or some packs
  are short of shares (``backup.finished`` with a non-zero code, alert ``backup-incomplete``);
- ``backup.overdue``: scheduled backups made no snapshot for ``OVERDUE_FACTOR`` times
  ``backup_every`` (:class:`OverdueWatch`; alert ``backup-overdue``);
- ``redundancy.low``, ``holder.evicted``, ``anomaly.alert``, ``fork``: the alerts
  ``redundancy-low``, ``holder-evicted``, ``anomaly``, ``catalog-fork``.

Invariants:

- a notice's ``subject`` (a peer, a pack, a snapshot; "" for the backup kinds) with its
  kind is the deduplication key: the same key is not sent again within ``repeat_after``
  seconds, unless something resolved it in between (a complete backup resolves the
  backup kinds: :func:`resolved_by`);
- at most ``max_per_hour`` notices go out in any sliding hour, whatever their kinds;
- what is held back is counted, and the next notice that goes out says how many were
  (``details["suppressed"]``): nothing is dropped silently;
- memory is bounded: keys older than ``repeat_after`` are forgotten, at most
  ``MAX_KEYS`` kept.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from corestate.protocol import control as c

KINDS = ("backup.failed", "backup.incomplete", "backup.overdue", "redundancy.low",
         "holder.evicted", "anomaly.alert", "fork")

# Alert names (common to the helpers, see protocol/control.py Alert) -> notification kinds.
ALERT_KINDS = {
    "backup-failed": "backup.failed",
    "backup-incomplete": "backup.incomplete",
    "backup-overdue": "backup.overdue",
    "redundancy-low": "redundancy.low",
    "holder-evicted": "holder.evicted",
    "anomaly": "anomaly.alert",
    "catalog-fork": "fork",
}
# Which detail of an alert names what it concerns (the first one present wins).
SUBJECT_KEYS = ("peer", "holder", "author", "pack", "snapshot", "series", "member", "group")

# A node has one backup: these are deduplicated per kind, whatever the text or the source
# (the event and an alert about one failure are one notification).
BACKUP_KINDS = ("backup.failed", "backup.incomplete", "backup.overdue")
OVERDUE_FACTOR = 2.0
MAX_KEYS = 4096
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # one of KINDS
    severity: str  # info, warning, critical
    message: str
    subject: str  # what it concerns; with ``kind``, the deduplication key
    time_ns: int
    details: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)


def notice_of(ev: c.Message) -> Notice | None:
    """The notice an event or alert calls for, or None (most events call for none)."""
    if isinstance(ev, c.BackupFailed):
        return Notice("backup.failed", "critical", f"backup failed: {ev.message}"
                      + (f" ({ev.hint})" if ev.hint else ""), "", ev.time_ns,
                      {"scheduled": str(ev.scheduled).lower()})
    if isinstance(ev, c.BackupFinished) and ev.code != 0:
        return Notice("backup.incomplete", "warning",
                      f"backup {ev.snapshot_id[:8]} is incomplete: {ev.errors} path(s) not read"
                      " or packs short of shares (run `corestate status`)",
                      "", ev.time_ns, {"snapshot": ev.snapshot_id, "code": str(ev.code),
                                       "errors": str(ev.errors), "scheduled": str(ev.scheduled).lower()})
    if isinstance(ev, c.Alert) and ev.alert in ALERT_KINDS:
        kind = ALERT_KINDS[ev.alert]
        subject = "" if kind in BACKUP_KINDS else next((ev.details[k] for k in SUBJECT_KEYS if k in ev.details), "")
        return Notice(kind, ev.severity if ev.severity in c.SEVERITIES else "warning",
                      ev.message, subject, ev.time_ns, dict(ev.details))
    return None


def resolved_by(ev: c.Message) -> tuple[str, ...]:
    """The kinds an event puts an end to: after a complete backup, the next failure is news
    again (it is not held back as a repeat of the last one)."""
    if isinstance(ev, c.BackupFinished) and ev.code == 0:
        return BACKUP_KINDS
    return ()


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    reason: str  # why it is sent or held back, in words
    notice: Notice  # with ``details["suppressed"]`` when earlier ones were held back


class Policy:
    """Deduplication and rate limit. ``decide`` is called once per notice, in time order."""

    def __init__(self, repeat_after: float, max_per_hour: int) -> None:
        if max_per_hour < 1:
            raise ValueError("max_per_hour must be at least 1")
        self.repeat_after = repeat_after
        self.max_per_hour = max_per_hour
        self._last: dict[tuple[str, str], float] = {}
        self._sent: collections.deque[float] = collections.deque()
        self.suppressed = 0  # held back since the last one sent

    def decide(self, notice: Notice, now: float) -> Decision:
        self._forget(now)
        last = self._last.get(notice.key)
        if last is not None and now - last < self.repeat_after:
            self.suppressed += 1
            return Decision(False, f"the same {notice.kind} was sent {now - last:.0f}s ago "
                            f"(repeat_after {self.repeat_after:.0f}s)", notice)
        if len(self._sent) >= self.max_per_hour:
            self.suppressed += 1
            return Decision(False, f"{len(self._sent)} notifications in the last hour "
                            f"(max_per_hour {self.max_per_hour})", notice)
        self._last[notice.key] = now
        self._sent.append(now)
        if self.suppressed:
            notice = Notice(notice.kind, notice.severity, notice.message, notice.subject,
                            notice.time_ns, {**notice.details, "suppressed": str(self.suppressed)})
            self.suppressed = 0
        return Decision(True, "new" if last is None else "repeated after repeat_after", notice)

    def resolve(self, kinds: tuple[str, ...]) -> None:
        """Forget what was sent of ``kinds``: the next one is new, not a repeat."""
        if kinds:
            self._last = {k: t for k, t in self._last.items() if k[0] not in kinds}

    def _forget(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= HOUR:
            self._sent.popleft()
        if len(self._last) > MAX_KEYS // 2:
            self._last = {k: t for k, t in self._last.items() if now - t < self.repeat_after}
            while len(self._last) > MAX_KEYS:  # oldest first (dicts keep insertion order)
                del self._last[next(iter(self._last))]


class OverdueWatch:
    """Scheduled backups that fell behind: no snapshot for ``OVERDUE_FACTOR`` x ``every``
    seconds since the last one (or since the watch started, when there is none). One notice
    per overdue stretch; a snapshot ends the stretch."""

    def __init__(self, every: float, last_snapshot: float | None, started: float) -> None:
        self.every = every
        self.last = last_snapshot if last_snapshot is not None else started
        self.had_snapshot = last_snapshot is not None
        self._told = False

    def snapshot_made(self, at: float) -> None:
        self.last = max(self.last, at)
        self.had_snapshot = True
        self._told = False

    def deadline(self) -> float | None:
        """When the next check can find something (None: never)."""
        if self.every <= 0 or self._told:
            return None
        return self.last + OVERDUE_FACTOR * self.every

    def check(self, now: float) -> Notice | None:
        due = self.deadline()
        if due is None or now < due:
            return None
        self._told = True
        since = "the last snapshot" if self.had_snapshot else "the daemon started"
        return Notice("backup.overdue", "warning",
                      f"no scheduled backup made a snapshot for {_human(now - self.last)} since {since} "
                      f"(backups every {_human(self.every)}); see the daemon's log and `corestate status`",
                      "", int(now * 1e9), {"last_ns": str(int(self.last * 1e9)), "every_s": f"{self.every:g}"})


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


__all__ = ["ALERT_KINDS", "BACKUP_KINDS", "KINDS", "OVERDUE_FACTOR", "Decision", "Notice", "OverdueWatch",
           "Policy", "notice_of", "resolved_by"]
