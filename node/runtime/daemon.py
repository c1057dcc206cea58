"""The node daemon: ``corestate node run``.

Role: holds the home (its lock, keys, repository) for as long as it runs, serves the share
and group protocols to peers, does what the scheduler core (node/core/scheduler.py) hands
out — backups, retention, repair, anti-entropy rounds — and answers the typed calls of
control clients (SPEC 8.6) by running the application layer's operations
(node/app/registry.py); operations that write run one at a time, under the command lock,
so two writers never touch one home. It never runs a command line: it does not import the
CLI (an import-linter contract).

Control socket (``<home>/control.sock``): a Unix socket, mode 0600, in a folder only the
owner can enter. It is bound under a temporary name and renamed into place only when the
daemon is ready to serve, so a client that finds it can use it. A socket left by a crashed
daemon is stale: nobody answers on it, and the next daemon (holding the home lock, which
proves no other daemon lives) replaces it.

Shutdown: SIGTERM or SIGINT cancels everything; a running command sees the cancellation
at its next checkpoint, the engine's packs already durable are kept (resumable), and the
socket is removed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from corestate.kernel.journal import Journal
from corestate.node.app import Operation, check_stop
from corestate.node.app.registry import OPERATIONS
from corestate.node.core import scheduler as sched
from corestate.node.errors import Cancelled
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.node.runtime.client import socket_path
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.live import DaemonLive
from corestate.node.runtime.mesh import Mesh
from corestate.node.runtime.port import MeshPort, open_mesh
from corestate.protocol import control as c
from corestate.protocol.errors import PeerTimeout, ProtocolError
from corestate.protocol.messages import Message, Record
from corestate.protocol.streams import Channel, TrioStream

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.daemon")

MAX_CLIENTS = 64  # control connections at once (subscribers included)
HANDSHAKE_TIMEOUT = 10.0  # seconds a new control client has to say Hello and ask
WAIT_NOTICE_AFTER = 0.5  # a call that waits longer for the command lock is told it waits
PEER_POLL = 2.0  # seconds between looks at which trusted peers are connected



class Daemon:
    def __init__(self, node: LocalNode, mesh: Mesh, events: EventBus) -> None:
        self.node, self.mesh, self.events = node, mesh, events
        self.command_lock = trio.Lock()
        self.started = time.time()
        self.token = trio.lowlevel.current_trio_token()
        self.journal: Journal | None = None
        self._clients = trio.CapacityLimiter(MAX_CLIENTS)
        self._sched_send, self._sched_recv = trio.open_memory_channel[sched.Event](256)
        self._sync_wanted: set[str] = set()
        self._syncing = False
        self.schedule_next: dict[str, float | None] = {}  # job -> wall-clock time (s)

    def port(self) -> MeshPort:
        async def get() -> Mesh:
            return self.mesh
        return MeshPort(self.token, get)

    # -- control socket ----------------------------------------------------------------

    async def serve_control(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        path = socket_path(self.node.home.path)
        tmp = path.with_name(f".control-{os.getpid()}.sock")
        tmp.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        # We hold the home lock: a socket already there belongs to a dead daemon.
        os.replace(tmp, path)
        ours = os.stat(path).st_ino
        task_status.started(path)
        try:
            await trio.serve_listeners(self._client, [listener])
        finally:
            # Remove the socket only if it is still ours (not one a later daemon made).
            try:
                if os.stat(path).st_ino == ours:
                    path.unlink()
            except OSError:
                pass

    async def _client(self, stream: trio.SocketStream) -> None:
        # SPEC §8.6: the limit holds the largest Run; a longer frame is refused (and the
        # connection closed) as soon as its length is read.
        ch = Channel(TrioStream(stream), timeout=3600.0, max_frame=c.CONTROL_MAX_FRAME, decode=c.decode)
        try:
            if self._clients.available_tokens == 0:
                log.warning("control socket: %d clients already connected; refusing one more", MAX_CLIENTS)
                with trio.move_on_after(1):
                    await ch.send(c.Failure(kind="busy", message=f"the daemon already serves {MAX_CLIENTS} "
                                            "control clients", hint="try again in a few seconds",
                                            retryable=True))
                return
            async with self._clients:
                msg = await self._handshake(ch)
                if msg is None:
                    return
                if isinstance(msg, c.Subscribe):
                    await self._subscribe(ch, msg)
                elif isinstance(msg, c.StatusCall):
                    await ch.send(await self._status())
                elif type(msg) in OPERATIONS:
                    await self._call(ch, msg, OPERATIONS[type(msg)])
                else:
                    await ch.send(c.Failure(kind="bad-request", message=f"{msg.TYPE} is not a request",
                                            hint="", retryable=False))
        except ProtocolError as exc:
            log.info("control client went away: %s", exc)
        except Exception:  # one bad client must not take the daemon down
            log.exception("control client failed")
        finally:
            with trio.move_on_after(1):
                await ch.aclose()

    async def _handshake(self, ch: Channel) -> c.Message | None:
        """Hello, Welcome, then the request (None: the client left or spoke another version).
        A client gets ``HANDSHAKE_TIMEOUT`` seconds for both: a silent one holds no slot."""
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            hello = await ch.receive_or_eof()
            if hello is None:
                return None
            if not isinstance(hello, c.Hello) or hello.version != c.CONTROL_VERSION:
                got = f"version {hello.version}" if isinstance(hello, c.Hello) else f"a {hello.TYPE} message"
                await ch.send(c.Failure(
                    kind="version", message=f"this daemon speaks control protocol version "
                    f"{c.CONTROL_VERSION} (a Hello first); the client sent {got}",
                    hint="use the corestate CLI (or TUI) from the same installation as the daemon",
                    retryable=False))
                return None
            await ch.send(c.Welcome(version=c.CONTROL_VERSION, peer_id=self.node.keys.peer_id,
                                    home=str(self.node.home.path)))
            return await ch.receive_or_eof()
        log.info("control client said nothing for %ss: dropped", HANDSHAKE_TIMEOUT)
        return None

    async def _subscribe(self, ch: Channel, msg: c.Subscribe) -> None:
        sub = self.events.subscribe(tuple(msg.topics))
        log.info("event subscriber joined (topics: %s)", ", ".join(msg.topics) or "all")
        try:
            await ch.send(c.Ok())
            async with trio.open_nursery() as nursery:
                async def watch_client() -> None:
                    # Nothing more is expected from a subscriber: its EOF (or anything it
                    # sends) ends the subscription at once, not at the next event. Silence
                    # is what a subscriber does: hours of it end nothing.
                    with contextlib.suppress(ProtocolError):
                        while True:
                            try:
                                await ch.receive_or_eof()
                                break
                            except PeerTimeout:
                                continue
                    nursery.cancel_scope.cancel()
                nursery.start_soon(watch_client)
                async for ev in sub:
                    await ch.send(ev)
        finally:
            sub.close()
            log.info("event subscriber left")

    async def _call(self, ch: Channel, msg: Message, op: Operation) -> None:
        """A typed call: the operation runs in a worker thread (under the command lock when
        it must), its events go to the subscribers and to this client, its answer — a
        result, or pages of records then ``Done`` — to this client; errors become a
        ``Failure`` with what to do."""
        token = self.token
        gone = trio.Event()
        stop = threading.Event()  # the client asked to stop: the operation's ctx.check() raises

        def send(m: Message) -> None:
            if gone.is_set():
                raise _ClientGone()
            try:
                trio.from_thread.run(ch.send, m, trio_token=token)
            except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                trio.from_thread.run_sync(gone.set, trio_token=token)
                raise _ClientGone() from None

        def emit(ev: Message) -> None:
            self.events.publish(ev)
            with contextlib.suppress(_ClientGone):
                send(ev)

        def work() -> None:
            ctx = _DaemonContext(emit, self, stop=stop)
            try:
                answer = op.run(self.node, msg, ctx)
                if isinstance(answer, Message):
                    send(answer)
                    return
                page: list[Record] = []
                size = n = 0
                for item in answer:
                    page.append(item)
                    n += 1
                    size += _approx_size(item)
                    if size >= c.PAGE_BYTES or len(page) >= 4096:
                        send(op.page_of(tuple(page)))
                        page, size = [], 0
                if page:
                    send(op.page_of(tuple(page)))
                send(c.Done(items=n))
            except _ClientGone:
                log.info("control client left during %s", msg.TYPE)
            except (CoreStateError, OSError) as exc:
                hint = getattr(exc, "hint", "") if isinstance(exc, CoreStateError) else ""
                text = str(exc) if isinstance(exc, CoreStateError) else f"{exc.strerror or exc}: {exc.filename or ''}"
                kind = type(exc).__name__[:64]
                if isinstance(exc, Cancelled):
                    kind = "cancelled"
                    log.info("%s cancelled by its client; what landed is kept", msg.TYPE)
                with contextlib.suppress(_ClientGone):
                    send(c.Failure(kind=kind, message=text[:4000], hint=hint[:1000],
                                   retryable=bool(getattr(exc, "retryable", False))))
            except Exception as exc:  # a bug in one operation must not end the connection wordlessly
                log.exception("%s failed", msg.TYPE)
                with contextlib.suppress(_ClientGone):
                    send(c.Failure(kind="internal", message=f"internal error in the daemon: "
                                   f"{type(exc).__name__}: {exc}"[:4000],
                                   hint="the daemon's log has the details; please report it", retryable=False))

        waiting = trio.CancelScope()  # the wait for the command lock, ended by a Cancel

        async def watch_client() -> None:
            # While the call runs the client may say only Cancel; its EOF (or garbage) is
            # a cancel too: nobody is left to read the answer.
            try:
                while True:
                    try:
                        m = await ch.receive_or_eof()
                    except PeerTimeout:
                        continue  # a long call, a quiet client: nothing half-read, keep waiting
                    if m is None or isinstance(m, c.Cancel):
                        break
                    log.info("control client sent %s during %s: ignored", m.TYPE, msg.TYPE)
            except ProtocolError:
                pass
            stop.set()
            waiting.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client)
            await self._run_call(ch, msg, op, work, waiting, stop)
            nursery.cancel_scope.cancel()

    async def _run_call(self, ch: Channel, msg: Message, op: Operation, work: Callable[[], None],
                        waiting: trio.CancelScope, stop: threading.Event) -> None:
        """``work`` in a worker thread, under the command lock when ``op`` needs it; a call
        cancelled while it waits for the lock never starts."""
        if not op.lock:
            await trio.to_thread.run_sync(work)
            return
        with waiting:
            # The one before may be finishing (its answer sent, the lock not yet free): say
            # that this call waits only when the wait is a real one.
            with trio.move_on_after(WAIT_NOTICE_AFTER):
                await self.command_lock.acquire()
            if self.command_lock.statistics().owner is not trio.lowlevel.current_task():
                with contextlib.suppress(ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                    await ch.send(c.Notice(kind="waiting", message="waiting for the command already "
                                           "running in the daemon..."))
                await self.command_lock.acquire()
        if self.command_lock.statistics().owner is not trio.lowlevel.current_task() or stop.is_set():
            if self.command_lock.statistics().owner is trio.lowlevel.current_task():
                self.command_lock.release()
            log.info("%s cancelled by its client before it started", msg.TYPE)
            exc = Cancelled()
            with contextlib.suppress(ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                await ch.send(c.Failure(kind="cancelled", message=str(exc), hint=exc.hint, retryable=True))
            return
        try:
            log.info("running: %s", msg.TYPE.replace("-", " "))  # never a field: they may be secrets
            await trio.to_thread.run_sync(work)
        finally:
            self.command_lock.release()
        self.notify(sched.HoldingsChanged(await trio.to_thread.run_sync(self._placed)))

    async def _status(self) -> c.StatusResult:
        from corestate.node.app.status import Live, status
        at = self.schedule_next.get("backup")
        live = Live(connected=frozenset(self.mesh.host.connected_peers()),
                    next_backup=None if at is None else int(at * 1e9),
                    alerts=tuple(self.events.recent_alerts))
        return await trio.to_thread.run_sync(status, self.node, live)

    def _scheduled_backup(self) -> int:
        """The ``[backup]`` paths, as the schedule asks (the caller holds the command lock;
        a worker thread): the app operation, its events to the subscribers; the exit code."""
        from corestate.node.app.backup import backup
        call = c.BackupCall(paths=(), exclude=(), k=0, n=0, estimate=False, skipped=False)
        try:
            items = list(backup(self.node, call, _DaemonContext(self.events.publish, self, scheduled=True)))
        except (CoreStateError, OSError) as exc:
            log.warning("scheduled backup failed: %s", exc)
            return 1
        except Exception:
            log.exception("scheduled backup failed")
            return 1
        summary = items[-1]
        assert isinstance(summary, c.BackupSummary)
        if summary.code != 0:
            log.warning("scheduled backup %s is incomplete: %d path(s) not read, %d pack(s) short of shares%s",
                        summary.snapshot_id[:8], summary.errors, summary.mesh.degraded if summary.mesh else 0,
                        "".join(f"; {p}" for p in summary.mesh.problems) if summary.mesh else "")
        return summary.code

    def _adopt(self) -> None:
        """Take in the placements members made for this node's packs while it was away
        (node/app/rescue.py); a worker thread."""
        from corestate.node.app.rescue import adopt
        try:
            n = adopt(self.node)
        except (CoreStateError, OSError) as exc:
            log.warning("adopting members' placements failed: %s", exc)
            return
        if n:
            log.info("adopted %d share placement(s) that members made while this node was away", n)

    def _placed(self) -> bool:
        """Whether repair and audit have anything to look after: shares this node placed,
        or, in a group with other members, their packs (repaired while they are away)."""
        group = self.node.group
        return self.node.ledger.has_any() or (group.in_group and len(group.members()) > 1)

    def notify(self, event: sched.Event) -> None:
        """Tell the scheduler core something happened (from the event loop)."""
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._sched_send.send_nowait(event)

    async def scheduler(self) -> None:
        """Drive the scheduler core (node/core/scheduler.py): it decides when to back up
        the ``[backup]`` paths, apply the ``[retention]`` rules after a scheduled backup, and
        repair; this loop sleeps until its next deadline or event, runs what it hands out
        (one job at a time, each under the command lock), and reports back."""
        cfg = self.node.cfg
        groups = self.mesh.groups
        core = sched.Scheduler(
            sched.ScheduleConfig(backup_every=cfg.backup_every, has_paths=bool(cfg.paths),
                                 retention=bool(cfg.retention), repair_every=cfg.repair_every,
                                 audit_every=cfg.audit_every or None,
                                 sync_every=groups.interval if groups is not None else 0),
            now=trio.current_time(), rng=random.Random())
        pending: list[sched.Event] = [sched.HoldingsChanged(self._placed())]
        if groups is not None:
            token = self.token

            def members_changed() -> None:  # in the thread that changed them
                token.run_sync_soon(self.notify, sched.MembersChanged(groups.others()))
            self.node.group.on_members.append(members_changed)
            groups.on_kick = lambda: self.notify(sched.Kick("news to spread"))
            pending += [sched.MembersChanged(groups.others()), sched.Kick("the daemon started")]
        async with trio.open_nursery() as nursery:
            while True:
                cmds: list[sched.Command] = []
                for ev in pending or [sched.Tick()]:
                    cmds += core.handle(ev, trio.current_time())
                    if isinstance(ev, sched.Kick) and groups is not None:
                        # News: our address advert first (also with no other member yet,
                        # so the first to join finds it), then whatever rounds follow.
                        nursery.start_soon(self._advertise, groups)
                pending = []
                for cmd in cmds:
                    if isinstance(cmd, sched.RunJob):
                        nursery.start_soon(self._job, cmd)
                    elif isinstance(cmd, sched.SyncWith) and groups is not None:
                        self._sync_wanted |= set(cmd.peers)
                        if not self._syncing:
                            nursery.start_soon(self._sync_rounds, groups)
                    elif isinstance(cmd, sched.ScheduleNext):
                        self._announce(cmd)
                    elif isinstance(cmd, sched.Warn):
                        log.warning("%s", cmd.message)
                deadline = core.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    pending.append(await self._sched_recv.receive())
                    while True:  # and whatever else arrived meanwhile
                        try:
                            pending.append(self._sched_recv.receive_nowait())
                        except trio.WouldBlock:
                            break

    async def watch_peers(self, every: float = PEER_POLL) -> None:
        """``peer.up`` / ``peer.down`` events for the peers this node deals with (trusted
        peers and group members): a connection to one opened or closed. Connections open
        when there is something to say (a backup, a sync round, a survey), so a peer that
        is down shows as down once a connection to it broke or could not be made."""
        up: set[str] = set()
        while True:
            mine = set(await trio.to_thread.run_sync(self.node.trusted_peers))
            now = set(self.mesh.host.connected_peers()) & mine
            for peer in sorted(now - up):
                self.events.publish(c.PeerUp(time_ns=time.time_ns(), peer_id=peer))
            for peer in sorted(up - now):
                self.events.publish(c.PeerDown(time_ns=time.time_ns(), peer_id=peer))
            up = now
            await trio.sleep(every)

    async def _advertise(self, groups: Any) -> None:
        if groups.group.in_group:
            await trio.to_thread.run_sync(groups.advertise)

    async def _sync_rounds(self, groups: Any) -> None:
        """Anti-entropy rounds one after another: peers asked for while a round runs are
        synced in the next (rounds never pile up behind a slow or absent member)."""
        self._syncing = True
        try:
            while self._sync_wanted:
                peers, self._sync_wanted = tuple(sorted(self._sync_wanted)), set()
                await groups.round(peers)
                await trio.to_thread.run_sync(self._adopt)
        finally:
            self._syncing = False

    def _announce(self, cmd: sched.ScheduleNext) -> None:
        at = None if cmd.at is None else time.time() + (cmd.at - trio.current_time())
        self.schedule_next[cmd.job.value] = at
        self.events.publish(c.ScheduleNext(time_ns=time.time_ns(), job=cmd.job.value,
                                           at_ns=None if at is None else int(at * 1e9)))

    async def _job(self, cmd: sched.RunJob) -> None:
        """A job the scheduler core handed out, then the jobs of ``cmd.then`` if it made a
        snapshot, all in one hold of the command lock (no client sees the snapshots between
        a backup and its retention); each one's end goes back to the core."""
        async with self.command_lock:
            for job in (cmd.job, *cmd.then):
                code = 1
                try:
                    log.info("scheduled %s (%s)", job.value, cmd.reason if job == cmd.job else f"after {cmd.job.value}")
                    code = await self._run_job(job)
                finally:
                    self.notify(sched.JobFinished(job, code))
                if code not in (0, 3):
                    break
        self.notify(sched.HoldingsChanged(await trio.to_thread.run_sync(self._placed)))

    async def _run_job(self, job: sched.Job) -> int:
        if job == sched.Job.BACKUP:
            return await trio.to_thread.run_sync(self._scheduled_backup)
        if job == sched.Job.RETENTION:
            # The [retention] rules as a typed forget (it says retention.finished).
            from corestate.node.app.maintain import retention_call
            code, items, why = await self._scheduled_call(retention_call(self.node.cfg.retention))
            if code != 0:
                why = why or "; ".join(i.problem for i in items if isinstance(i, c.ShareNotDeleted))
                log.warning("scheduled retention did not finish cleanly: %s", why[:500])
            return code
        if job == sched.Job.AUDIT:
            await trio.to_thread.run_sync(self._adopt)
            code, items, why = await self._scheduled_call(c.AuditCall())
            if why:
                log.warning("scheduled audit failed: %s", why[:500])
            return code
        await trio.to_thread.run_sync(self._adopt)
        code, items, why = await self._scheduled_call(c.RepairCall(dry_run=False))
        if self.node.group.in_group:
            # Then the packs of members that are away (node/app/rescue.py).
            mcode, _, mwhy = await self._scheduled_call(c.MemberRepairCall())
            if mcode != 0:
                log.warning("scheduled repair of absent members' packs incomplete: %s", mwhy[:500])
        if code != 0:
            why = why or "; ".join([f"{len([i for i in items if isinstance(i, c.Unrepairable)])} "
                                    "pack(s) not repairable now",
                                    *(i.failed for i in items if isinstance(i, c.RepairFailure))])
            log.warning("scheduled repair left packs below full redundancy: %s", why[:500])
        return code

    async def _scheduled_call(self, call: Message) -> tuple[int, list[Message | Record], str]:
        """Run a typed operation for the daemon's own schedule (the caller holds the command
        lock): in a worker thread, its events to the bus. Returns its exit code (the
        ``code`` of its result or last record; 1 when it raised), its answer, and what went
        wrong when it raised."""
        op = OPERATIONS[type(call)]
        ctx = _DaemonContext(self.events.publish, self, scheduled=True)

        def work() -> list[Message | Record]:
            answer = op.run(self.node, call, ctx)
            return [answer] if isinstance(answer, Message) else list(answer)
        try:
            items = await trio.to_thread.run_sync(work)
        except (CoreStateError, OSError) as exc:
            return 1, [], str(exc)
        except Exception as exc:  # a bug in one job must not end the schedule
            log.exception("scheduled %s failed", call.TYPE)
            return 1, [], f"internal error: {type(exc).__name__}: {exc}"
        code = getattr(items[-1], "code", 0) if items else 0
        return int(code), items, ""


class _ClientGone(Exception):
    """The control client of a call went away: stop its work."""


@dataclass(slots=True)
class _DaemonContext:
    """What an operation run for a control client may use (node/app: ``Context``)."""

    _emit: Callable[[Message], None]
    daemon: Daemon
    scheduled: bool = False
    stop: threading.Event = field(default_factory=threading.Event)  # set by the client's Cancel

    def emit(self, ev: Message) -> None:
        self._emit(ev)

    def warn(self, text: str) -> None:
        log.warning("%s", text)

    def mesh(self) -> MeshPort:
        return self.daemon.port()

    def live(self) -> DaemonLive:
        return DaemonLive(self.daemon)

    def cancelled(self) -> bool:
        return self.stop.is_set()

    def check(self) -> None:
        check_stop(self.stop)

    # What the daemon lends an operation besides the mesh (node/app/backup.py).

    @property
    def journal(self) -> Journal | None:
        return self.daemon.journal

    @property
    def kick_members(self) -> Callable[[], None] | None:
        groups = self.daemon.mesh.groups
        return None if groups is None else groups.kick


def _approx_size(v: object) -> int:
    """About the encoded size of a record: its bytes and text, and a little per field."""
    if isinstance(v, (bytes, str)):
        return len(v) + 4
    if isinstance(v, Record):
        return sum(_approx_size(getattr(v, f)) + 8 for f in v.SPECS)
    if isinstance(v, tuple):
        return sum(_approx_size(x) for x in v) + 2
    return 9


def _start_journal(node: LocalNode) -> Journal | None:
    """Watch the configured paths for changes, so scheduled and CLI backups of them walk
    only what changed (any doubt -> a full walk; kernel/journal.py)."""
    if not node.cfg.paths:
        return None
    roots = [Path(os.path.abspath(node.home.path / p)) for p in node.cfg.paths]
    journal = Journal(node.home.path / "journal", roots)
    try:
        journal.start()
    except (CoreStateError, OSError) as exc:
        log.warning("change journal not available (%s): backups walk the whole tree", exc)
        return None
    log.info("change journal: %s on %s", journal.backend, " ".join(map(str, roots)))
    return journal


async def run_daemon(home: Home, passphrase: bytes, listen: list[str] | None, *,
                     ready: Any = None, hsm_module: str | None = None) -> int:
    node = LocalNode.open(home, passphrase, hsm_module=hsm_module)
    events = EventBus()
    journal: Journal | None = None
    try:
        for pid, reason in node.problems:
            log.warning("pack %s could not be read: %s (run `corestate check`)", pid.hex()[:16], reason)
        async with open_mesh(node, listen=listen, mdns=node.cfg.mdns, events=events) as mesh:
            daemon = Daemon(node, mesh, events)
            journal = daemon.journal = await trio.to_thread.run_sync(_start_journal, node)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    path = await nursery.start(daemon.serve_control)
                    nursery.start_soon(daemon.scheduler)
                    nursery.start_soon(daemon.watch_peers)
                    addrs = mesh.host.addrs()
                    log.info("node %s ready; listening on %s; control socket %s",
                             node.keys.peer_id, " ".join(addrs), path)
                    if ready is not None:
                        ready(node, addrs)
                    async for sig in signals:
                        log.info("%s received: shutting down", signal.Signals(sig).name)
                        nursery.cancel_scope.cancel()
                        break
    finally:
        if journal is not None:
            journal.stop()
        node.close()
    return 0


__all__ = ["Daemon", "run_daemon"]
