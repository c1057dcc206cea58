"""The node's timing decisions: when to back up, apply retention, repair, audit and sync.

Sans-I/O, like the other cores: ``handle(event, now) -> list[Command]`` and
``next_deadline() -> float | None``. The daemon feeds it with trio and carries the commands
out; tests feed it plain numbers; the simulator drives the same object with its own clock.
Which members to sync with is drawn from the ``random.Random`` passed in, so a seeded run
is repeatable.

Rules (each command carries its reason):

- **One job at a time.** Backup, retention, repair and audit share the node's command lock:
  the core hands out one and waits for its ``JobFinished`` before the next. A job that
  comes due meanwhile waits, in the order backup, retention, repair, audit; it is never
  queued twice.
- **Backups** every ``backup_every`` seconds, counted from the end of the previous one (a
  backup longer than the period never stacks a second one behind it). Off when the period is
  0; with no paths configured the time is skipped with a warning, and counted again.
- **Retention** right after each scheduled backup that finished with a snapshot (exit 0 or
  3), when the node has keep-rules, in the same hold of the lock (``RunJob.then``: nobody
  sees the snapshots between the backup and the forget). Never on its own: nothing new,
  nothing to forget.
- **Repair** every ``repair_every``, counted from the end of the previous; skipped while the
  node has placed no share (nothing to survey). Audits are part of the repair survey until
  an ``audit_every`` is configured; then they run on their own period, same rules.
- **Sync** (anti-entropy) every ``sync_every`` with ``sync_fanout`` members drawn at random,
  or at once with every member after a ``Kick`` (a backup or a membership change made news
  worth spreading). Sync is not a job: it runs beside the others and needs no lock.
- Whenever the next time of a job changes, a ``ScheduleNext`` says so (the daemon turns it
  into a ``schedule.next`` event; ``status`` shows it).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field


class Job(enum.Enum):
    BACKUP = "backup"
    RETENTION = "retention"
    REPAIR = "repair"
    AUDIT = "audit"

    # Members are singletons, so identity is their equality: hashing by identity keeps the
    # core's dict lookups in C (Enum's own hash is Python code, felt over the simulator's
    # millions of rounds). Nothing iterates a set of jobs, so no order depends on it.
    __hash__ = object.__hash__


_ORDER = (Job.BACKUP, Job.RETENTION, Job.REPAIR, Job.AUDIT)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    backup_every: float = 0.0  # seconds; 0 = no scheduled backups
    has_paths: bool = False  # [backup] paths is not empty
    retention: bool = False  # [retention] holds at least one rule
    repair_every: float = 86400.0  # 0 = no scheduled repair
    audit_every: float | None = None  # None: audits ride on the repair survey
    sync_every: float = 20.0  # 0 = no periodic anti-entropy
    sync_fanout: int = 3


# -- events (what happened) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; nothing else happened."""


@dataclass(frozen=True, slots=True)
class JobFinished:
    job: Job
    code: int  # the operation's exit status: 0 done, 3 done but incomplete, 1 failed


@dataclass(frozen=True, slots=True)
class Kick:
    """Something worth spreading now (a backup, a membership change): sync with everyone."""

    reason: str


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """The other members of this node's group (empty when not in a group)."""

    others: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HoldingsChanged:
    """Whether this node has placed any share on a holder (repair and audit need some)."""

    placed: bool


Event = Tick | JobFinished | Kick | MembersChanged | HoldingsChanged


# -- commands (what to do) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    """Run ``job``; then, in the same hold of the lock and only if it made a snapshot (exit
    0 or 3), the jobs in ``then``. Each one's ``JobFinished`` is reported, in order."""

    job: Job
    reason: str
    then: tuple[Job, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncWith:
    peers: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduleNext:
    job: Job
    at: float | None  # None: not scheduled


@dataclass(frozen=True, slots=True)
class Warn:
    message: str


Command = RunJob | SyncWith | ScheduleNext | Warn


@dataclass(slots=True)
class _Timer:
    every: float
    due: float | None  # None: off (period 0) or waiting on an event rather than a time


@dataclass(slots=True)
class Scheduler:
    """The clock-driven part of a node. ``now`` is seconds on any monotonic scale."""

    config: ScheduleConfig
    now: float
    rng: random.Random
    others: tuple[str, ...] = ()
    placed: bool = False
    running: Job | None = None
    _pending: list[tuple[Job, str]] = field(default_factory=list)
    _timers: dict[Job, _Timer] = field(default_factory=dict)
    _sync_due: float | None = None
    _announced: dict[Job, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        periods = {Job.BACKUP: cfg.backup_every, Job.REPAIR: cfg.repair_every}
        if cfg.audit_every is not None:
            periods[Job.AUDIT] = cfg.audit_every
        for job, every in periods.items():
            self._timers[job] = _Timer(every, self.now + every if every > 0 else None)
        self._sync_due = self.now + cfg.sync_every if cfg.sync_every > 0 else None

    # -- the interface -------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
        self.now = max(self.now, now)
        out: list[Command] = []
        if isinstance(event, JobFinished):
            self._finished(event, out)
        elif isinstance(event, Kick):
            if self.others:
                out.append(SyncWith(self.others, f"at once: {event.reason}"))
            if self.config.sync_every > 0:
                self._sync_due = self.now + self.config.sync_every
        elif isinstance(event, MembersChanged):
            self.others = tuple(event.others)
        elif isinstance(event, HoldingsChanged):
            self.placed = event.placed
        self._fire_timers(out)
        self._start_next(out)
        self._announce(out)
        return out

    def next_deadline(self) -> float | None:
        pending = self._pending
        times = [t.due for job, t in self._timers.items()
                 if t.due is not None and job != self.running
                 and not (pending and any(job == p for p, _ in pending))]
        if self._sync_due is not None:
            times.append(self._sync_due)
        return min(times) if times else None

    def run_idle(self, now: float, idle: Callable[[Job], bool]) -> tuple[Job, ...] | None:
        """A ``Tick`` at ``now`` in which each job that starts finds nothing to do and
        finishes at once (exit 0), as the driver knows beforehand: the state that
        ``handle(Tick(), now)`` followed by a ``JobFinished(job, 0)`` for each ``RunJob``
        leaves, without building commands that would say nothing new (the simulator runs
        millions of such rounds). ``idle(job)`` is asked, in the order the jobs would run
        and before anything changes, whether ``job`` would find nothing to do.

        Returns the jobs run (empty when a timer fired with nothing placed yet), or None,
        with the state untouched, when the round is not idle and needs ``handle``: a job
        is running or waiting, ``idle`` declined a job, a backup comes due (a finished
        backup is spread and followed by retention; without paths it warns), or a sync
        with members comes due (it draws them from the rng).
        """
        if self.running is not None or self._pending:
            return None
        now = max(self.now, now)
        fired: list[Job] = []
        for job in _ORDER:
            timer = self._timers.get(job)
            if timer is None or timer.due is None or timer.due > now:
                continue
            if job == Job.BACKUP:
                return None
            fired.append(job)
        sync = self._sync_due is not None and self._sync_due <= now
        if sync and self.others:
            return None
        ran = tuple(fired) if self.placed else ()
        for job in ran:
            if not idle(job):
                return None
        self.now = now
        for job in fired:
            timer = self._timers[job]
            timer.due = now + timer.every  # finished at once (or skipped: nothing placed)
        if sync:
            self._sync_due = now + self.config.sync_every
        for job, timer in self._timers.items():
            self._announced[job] = timer.due
        return ran

    def next_run(self, job: Job) -> float | None:
        """When ``job`` next runs on its own (None: not scheduled, or running now)."""
        timer = self._timers.get(job)
        return timer.due if timer is not None else None

    # -- rules ---------------------------------------------------------------------------

    def _finished(self, event: JobFinished, out: list[Command]) -> None:
        if event.job != self.running:
            return  # not ours (a user's command): nothing to account for
        self.running = None
        timer = self._timers.get(event.job)
        if timer is not None and timer.every > 0:
            timer.due = self.now + timer.every
        if event.job == Job.BACKUP and event.code in (0, 3):
            if self.config.retention:
                self.running = Job.RETENTION  # the driver goes on with it (RunJob.then)
            if self.others:
                out.append(SyncWith(self.others, "at once: a new snapshot"))
                if self.config.sync_every > 0:
                    self._sync_due = self.now + self.config.sync_every

    def _fire_timers(self, out: list[Command]) -> None:
        for job, timer in self._timers.items():
            if timer.due is None or timer.due > self.now or job == self.running:
                continue
            if self._pending and any(job == p for p, _ in self._pending):
                continue
            if job == Job.BACKUP and not self.config.has_paths:
                out.append(Warn("scheduled backup skipped: no [backup] paths in config.toml"))
                timer.due = self.now + timer.every
                continue
            if job in (Job.REPAIR, Job.AUDIT) and not self.placed:
                timer.due = self.now + timer.every  # nothing placed: nothing to look after
                continue
            timer.due = None  # set again when the job finishes
            self._queue(job, f"every {_duration(timer.every)}")
        if self._sync_due is not None and self._sync_due <= self.now:
            self._sync_due = self.now + self.config.sync_every
            if self.others:
                k = min(self.config.sync_fanout, len(self.others))
                chosen = tuple(self.rng.sample(sorted(self.others), k))
                out.append(SyncWith(chosen, f"anti-entropy every {_duration(self.config.sync_every)}"))

    def _queue(self, job: Job, reason: str, *, front: bool = False) -> None:
        if job == self.running or any(job == p for p, _ in self._pending):
            return
        if front:
            self._pending.insert(0, (job, reason))
        else:
            self._pending.append((job, reason))
            self._pending.sort(key=lambda p: _ORDER.index(p[0]))

    def _start_next(self, out: list[Command]) -> None:
        if self.running is not None or not self._pending:
            return
        job, reason = self._pending.pop(0)
        self.running = job
        then = (Job.RETENTION,) if job == Job.BACKUP and self.config.retention else ()
        out.append(RunJob(job, reason, then))

    def _announce(self, out: list[Command]) -> None:
        for job in self._timers:
            at = self.next_run(job)
            if self._announced.get(job, -1.0) != at:
                self._announced[job] = at
                out.append(ScheduleNext(job, at))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


__all__ = [
    "Command", "Event", "HoldingsChanged", "Job", "JobFinished", "Kick", "MembersChanged",
    "RunJob", "ScheduleConfig", "ScheduleNext", "Scheduler", "SyncWith", "Tick", "Warn",
]
