"""The node daemon: ``corestate node run``.

Role: holds the home (its lock, keys, repository) for as long as it runs, serves the share
protocol to peers, runs scheduled backups, and runs the commands CLI clients send over
the control socket — one at a time, so two writers never touch one home.

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

import argparse
import contextlib
import io
import logging
import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import trio
from corestate.kernel.journal import Journal
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.node.runtime.client import socket_path
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.mesh import Mesh
from corestate.node.runtime.port import MeshPort, open_mesh
from corestate.protocol import control as c
from corestate.protocol import wire
from corestate.protocol.errors import ProtocolError
from corestate.protocol.streams import Channel, TrioStream

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.daemon")

# Path-valued options of the commands a daemon runs, made absolute against the client's cwd.
_PATH_FIELDS = ("paths", "target", "passphrase_file", "dir", "phrase_file")


class Daemon:
    def __init__(self, node: LocalNode, mesh: Mesh, events: EventBus) -> None:
        self.node, self.mesh, self.events = node, mesh, events
        self.command_lock = trio.Lock()
        self.started = time.time()
        self.token = trio.lowlevel.current_trio_token()
        self.journal: Journal | None = None

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
            msg = await ch.receive_or_eof()
            if msg is None:
                return
            if isinstance(msg, c.Run):
                await self._run(ch, msg)
            elif isinstance(msg, c.Subscribe):
                await self._subscribe(ch)
            else:
                await ch.send(c.Output(fd=2, text=f"error: unexpected {type(msg).__name__}\n"))
                await ch.send(c.Exit(code=2))
        except ProtocolError as exc:
            log.info("control client went away: %s", exc)
        except Exception:  # one bad client must not take the daemon down
            log.exception("control client failed")
        finally:
            with trio.move_on_after(1):
                await ch.aclose()

    async def _subscribe(self, ch: Channel) -> None:
        recv = self.events.subscribe()
        await ch.send(c.Ok())
        async with recv:
            async for kind, fields in recv:
                clean = {k: v if isinstance(v, (str, int, bool)) else str(v) for k, v in fields.items()}
                await ch.send(c.Event(kind=kind, fields=clean))

    async def _run(self, ch: Channel, msg: c.Run) -> None:
        from corestate.node import cli
        gone = trio.Event()
        token = self.token

        def write(fd: int, text: str) -> None:
            if gone.is_set():
                return
            for i in range(0, len(text), 1 << 18):
                try:
                    trio.from_thread.run(ch.send, c.Output(fd=fd, text=text[i:i + (1 << 18)]), trio_token=token)
                except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                    trio.from_thread.run_sync(gone.set, trio_token=token)
                    return

        def progress(label: str, done: int, total: int, unit: str) -> None:
            if gone.is_set():
                return
            try:
                trio.from_thread.run(ch.send, c.Progress(label=label[:256], done=max(0, done),
                                                         total=max(-1, total), unit=unit), trio_token=token)
            except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                trio.from_thread.run_sync(gone.set, trio_token=token)

        parser = cli.build_parser()
        said = io.StringIO()
        try:
            # argparse writes its complaint (which may quote an argument) to stderr, which
            # is the daemon's log: it goes to the client instead.
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
                args = parser.parse_args(msg.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
            text = said.getvalue()[-4000:]
            if code:
                shown = shlex.join(msg.argv)
                shown = shown if len(shown) <= 2000 else shown[:2000] + " ..."  # an Output has a limit too
                text += f"error: the daemon could not parse: {shown}\n"
            await ch.send(c.Output(fd=2, text=text))
            await ch.send(c.Exit(code=code))
            return
        absolutize(args, msg.cwd)
        args.home = self.node.home.path
        args.daemon = self
        as_json = bool(getattr(args, "json", False))
        out = cli.Out(as_json, write=write, tty=msg.tty, progress=progress if msg.tty else None)
        if self.command_lock.locked():
            # In the event loop here: send directly (``write`` is for the command's thread).
            await ch.send(c.Output(fd=2, text="waiting for the command already running in the daemon...\n"))
        async with self.command_lock:
            log.info("running: %s", shlex.join(redacted(msg.argv, args)))
            code = await trio.to_thread.run_sync(_execute, args, out)
        with trio.move_on_after(5):
            await ch.send(c.Exit(code=code))

    # -- scheduled work ------------------------------------------------------------------

    async def _internal(self, argv: list[str]) -> tuple[int, str, str]:
        """Run a CLI command for the daemon itself (the caller holds the command lock):
        (exit code, its JSON summary line, everything it wrote)."""
        from corestate.node import cli
        args = cli.build_parser().parse_args([*argv, "--json"])
        args.home, args.daemon = self.node.home.path, self
        lines: list[str] = []
        out = cli.Out(True, write=lambda fd, t: lines.append(t), tty=False)
        code = await trio.to_thread.run_sync(_execute, args, out)
        return code, (lines[-1].strip() if lines else "")[:4000], "".join(lines)

    async def scheduler(self) -> None:
        """Every ``[schedule] backup_every``: back up the ``[backup]`` paths, then apply the
        ``[retention]`` rules (one hold of the command lock for both)."""
        every = self.node.cfg.backup_every
        if every <= 0:
            return
        while True:
            await trio.sleep(every)
            if not self.node.cfg.paths:
                log.warning("scheduled backup skipped: no [backup] paths in config.toml")
                continue
            async with self.command_lock:
                self.events.publish("backup-started", scheduled=True)
                code, summary, _ = await self._internal(["backup"])
                self.events.publish("backup-finished", scheduled=True, code=code, summary=summary)
                if code in (0, 3) and self.node.cfg.retention:
                    argv = ["forget", "--prune"]
                    for key, value in sorted(self.node.cfg.retention.items()):
                        argv += ["--" + key.replace("_", "-"), value]
                    code, summary, text = await self._internal(argv)
                    if code != 0:
                        log.warning("scheduled retention did not finish cleanly: %s", text[-500:])
                    self.events.publish("retention-finished", scheduled=True, code=code, summary=summary)

    async def repair_scheduler(self) -> None:
        """Every ``[schedule] repair_every``: survey the holders of this node's shares and
        rebuild what was lost (``corestate repair``), so redundancy does not wear away
        while nobody looks."""
        every = self.node.cfg.repair_every
        if every <= 0:
            return
        while True:
            await trio.sleep(every)
            if not (self.node.ledger.all() or self.node.ledger.doomed()):
                continue
            async with self.command_lock:
                self.events.publish("repair-started", scheduled=True)
                code, summary, _ = await self._internal(["repair"])
            if code != 0:
                log.warning("scheduled repair left packs below full redundancy: %s", summary[:500])
            self.events.publish("repair-finished", scheduled=True, code=code, summary=summary)


def _execute(args: argparse.Namespace, out: Any) -> int:
    """A command in the daemon: a bug in one must not end the connection without a word."""
    from corestate.node import cli
    try:
        return cli.execute(args, out)
    except Exception as exc:
        log.exception("command failed")
        out.error(f"error: internal error in the daemon: {type(exc).__name__}: {exc} "
                  "(the daemon's log has the details; please report it)")
        return 1


def redacted(argv: list[str], args: argparse.Namespace | None = None) -> list[str]:
    """``argv`` for the log: secrets replaced — an invite token (`group join TOKEN`: the
    parsed token, and anything shaped like one wherever it stands)."""
    from corestate.node.group import TOKEN_PREFIX
    token = getattr(args, "token", None)
    return ["<invite token>" if TOKEN_PREFIX in a or (token is not None and a == token) else a
            for a in argv]


def absolutize(args: argparse.Namespace, cwd: str) -> None:
    """Make the path options of ``args`` absolute against the client's working folder."""
    base = Path(cwd)
    for name in _PATH_FIELDS:
        v = getattr(args, name, None)
        if isinstance(v, list):
            setattr(args, name, [str(base / os.path.expanduser(x)) for x in v])
        elif isinstance(v, (str, Path)):
            setattr(args, name, str(base / os.path.expanduser(str(v))))


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
                    nursery.start_soon(daemon.repair_scheduler)
                    if mesh.groups is not None:
                        nursery.start_soon(mesh.groups.run)
                        mesh.groups.kick()
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


__all__ = ["Daemon", "absolutize", "redacted", "run_daemon", "wire"]
