"""A scripted daemon for the TUI's screenshot tests: a real Unix socket speaking the real
control protocol (handshake, typed results, pages and ``Done``, a subscription), answering
every call from fixed typed messages, so that a screenshot is the same on every run (a
real daemon has a new PeerID and new times each time). The behaviour tests use a real
daemon (test_tui_daemon.py); this one only holds the pictures still.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from corestate.protocol import control as c
from corestate.protocol import wire

NOW_NS = 1_796_000_000 * 10**9  # the frozen clock of the screenshots
MIN = 60 * 10**9
ME = "12D3KooWMeNodeA1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8t9Uhome"
PEERS = ["12D3KooWPeerB1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8tNAS01",
         "12D3KooWPeerC1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8tLAPTOP",
         "12D3KooWPeerD1b2C3d4E5f6G7h8J9k1L2m3N4p5Q6r7S8tPI4OFF"]
GROUP = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c2e4a6c8e0b2d4f6a8c0e2a4c6e8f0a2b"


def snapshots() -> list[c.SnapshotSummary]:
    sizes = [812, 815, 815, 830, 829, 901, 903, 960]
    out = []
    for i, mib in enumerate(sizes):
        sid = f"{i + 1:x}" * 8 + "a" * 56
        out.append(c.SnapshotSummary(
            snapshot_id=sid[:64], short_id=sid[:8], time_ns=NOW_NS - (len(sizes) - i) * 360 * MIN,
            host="homeserver", paths=(b"/home/ada/Documents", b"/home/ada/Photos"),
            files=4200 + i * 37, bytes=mib << 20, torn=0, errors=0, provider="btrfs",
            verdict="suspect" if i == 5 else "ok", protected=False))
    return out


def health() -> c.HealthResult:
    levels = c.PackLevels(full=1062, degraded=31, at_risk=2, lost=0)
    return c.HealthResult(
        packs=levels, snapshots=(),
        holders=tuple(c.HolderHealth(peer=p, state=st, last_seen_ns=NOW_NS - ago * MIN, audits_passed=40,
                                     audits_failed=fails, shares=n, score=score)
                      for p, st, ago, fails, n, score in (
                          (PEERS[0], "suspect", 1, 1, 1450, "0.950"), (PEERS[1], "ok", 1, 0, 1210, "1.000"),
                          (PEERS[2], "lost", 130, 0, 640, "1.000"))),
        repair=c.RepairStatus(running=True, packs=33, shares=41, bytes=41 * (4 << 20), unrepairable=0,
                              eta_s=540, reason="PI4OFF lost", last_ns=NOW_NS - 60 * MIN, member_repairs=0))


def status(acked: frozenset[tuple[int, str]] = frozenset()) -> c.StatusResult:
    snaps = snapshots()
    return c.StatusResult(
        peer_id=ME, daemon=True, group=GROUP,
        peers=(c.PeerStatus(peer_id=PEERS[0], online=True, trusted=True, member=True,
                            last_seen_ns=NOW_NS - 10**9, shares=1450, connection="direct"),
               c.PeerStatus(peer_id=PEERS[1], online=True, trusted=True, member=True,
                            last_seen_ns=NOW_NS - 4 * 10**9, shares=1210, connection="relayed"),
               c.PeerStatus(peer_id=PEERS[2], online=False, trusted=True, member=True,
                            last_seen_ns=NOW_NS - 130 * MIN, shares=640)),
        last_backup=c.SnapshotRef(snapshot_id=snaps[-1].snapshot_id, short_id=snaps[-1].short_id,
                                  time_ns=snaps[-1].time_ns),
        next_backup=NOW_NS + 222 * MIN, snapshots=len(snaps),
        redundancy=c.Redundancy(packs=1100, full=1062, degraded=31, at_risk=2, local=5, lost=0),
        reachability="private",
        alerts=tuple(
            c.AlertRecord(time_ns=t, alert=name, severity=sev, message=text,
                          acked=(t, name) in acked, details=details)
            for t, name, sev, text, details in (
                (NOW_NS - 300 * MIN, "holder-lost", "warning",
                 "PI4OFF has not answered for 2 h: 640 shares to rebuild", {"peer": PEERS[2]}),
                (NOW_NS - 20 * MIN, "failed-audit", "critical",
                 "NAS01 failed the audit of a share of pack 3f9a…", {"peer": PEERS[0], "pack": "3f9a" * 16}))))


def node_info() -> c.NodeInfoResult:
    return c.NodeInfoResult(peer_id=ME, addrs=("/ip4/192.168.1.10/tcp/4001",), home=b"/home/ada/.corestate",
                            uptime_ms=3 * 86400 * 1000 + 4 * 3600 * 1000, connected=tuple(PEERS[:2]),
                            held_for_peers=c.VaultStats(shares=2210, bytes=3 << 30, senders=3))


def peer_rows() -> list[c.PeerRow]:
    return [c.PeerRow(peer=p, addrs=(f"/ip4/192.168.1.{20 + i}/tcp/4001",), trusted=True, source="user",
                      domains=(), seen_ns=NOW_NS - (10**9 if i < 2 else 130 * MIN), connected=i < 2,
                      shares_held_for_us=(1450, 1210, 640)[i], bytes_held_for_us=(1450, 1210, 640)[i] << 20,
                      bytes_we_hold=(900, 700, 610)[i] << 20)
            for i, p in enumerate(PEERS)]


def group() -> c.GroupView:
    return c.GroupView(group=GROUP, name="home-lab",
                       members=(c.Member(peer_id=ME, role="admin"),
                                *(c.Member(peer_id=p, role="member") for p in PEERS)),
                       removed=(), me=ME)


def entries() -> list[c.Entry]:
    def e(path: str, kind: str = "f", size: int = 0) -> c.Entry:
        return c.Entry(path=path.encode(), type=kind, mode=0o755 if kind == "d" else 0o644, uid=1000,
                       gid=1000, mtime_ns=NOW_NS - 90 * MIN, size=size, target=None)
    return [e("/home", "d"), e("/home/ada", "d"), e("/home/ada/Documents", "d"),
            e("/home/ada/Documents/taxes-2026.pdf", size=1_234_567),
            e("/home/ada/Documents/report.odt", size=88_000),
            e("/home/ada/Documents/notes", "d"), e("/home/ada/Documents/notes/todo.md", size=512),
            e("/home/ada/Photos", "d"), e("/home/ada/Photos/2026", "d"),
            e("/home/ada/Photos/2026/IMG_0001.jpg", size=4_500_000),
            e("/home/ada/Photos/2026/IMG_0002.jpg", size=4_200_000)]


class ScriptedDaemon:
    """Serves the fixed answers above on ``path`` until closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.acked: set[tuple[int, str]] = set()
        self.listing = entries()  # what ls answers (a test may put a huge tree here)
        self.events: list[c.Message] = []  # sent to each subscriber at once
        self.silent = False  # True: a StatsCall is never answered
        self.ls_calls: list[c.LsCall] = []
        self.completed: list[str] = []  # requests answered in full
        self.hung_up: list[str] = []  # requests whose client hung up before the end

    async def _send(self, w: asyncio.StreamWriter, msg: c.Message) -> None:
        w.write(wire.encode_frame(c.encode(msg)))
        await w.drain()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        dec = wire.FrameDecoder(max_frame=c.CONTROL_MAX_FRAME)

        async def receive() -> c.Message | None:
            while (frame := dec.next_frame()) is None:
                data = await r.read(65536)
                if not data:
                    return None
                dec.feed(data)
            return c.decode(frame)

        req: c.Message | None = None
        try:
            if not isinstance(await receive(), c.Hello):
                return
            await self._send(w, c.Welcome(version=c.CONTROL_VERSION, peer_id=ME, home="/home/ada/.corestate"))
            req = await receive()
            answers: list[c.Message] = []
            if isinstance(req, c.Subscribe):
                await self._send(w, c.Ok())
                for ev in self.events:
                    await self._send(w, ev)
                await receive()  # until the client hangs up
                return
            if isinstance(req, c.StatsCall) and self.silent:
                await receive()  # a daemon that never answers
                return
            if isinstance(req, c.StatusCall):
                answers = [status(frozenset(self.acked))]
            elif isinstance(req, c.AlertAckCall):
                self.acked |= {(k.time_ns, k.alert) for k in req.alerts}
                answers = [c.AlertAckResult(acked=len(req.alerts))]
            elif isinstance(req, c.HealthCall):
                answers = [health()]
            elif isinstance(req, c.NodeInfoCall):
                answers = [node_info()]
            elif isinstance(req, c.SnapshotsCall):
                answers = [c.SnapshotsPage(snapshots=tuple(snapshots())), c.Done(items=len(snapshots()))]
            elif isinstance(req, c.PeerListCall):
                answers = [c.PeerListPage(peers=tuple(peer_rows())), c.Done(items=3)]
            elif isinstance(req, c.GroupMembersCall):
                answers = [c.GroupMembersResult(view=group())]
            elif isinstance(req, c.LsCall):
                listing = self.listing if req.recursive else [
                    e for e in self.listing if e.path.rpartition(b"/")[0] == req.path.rstrip(b"/")]
                answers = [c.LsPage(entries=tuple(listing[i:i + 4096])) for i in range(0, len(listing), 4096)]
                answers.append(c.Done(items=len(listing)))
                self.ls_calls.append(req)
            else:
                answers = [c.Failure(kind="bad-request", message="not scripted", hint="", retryable=False)]
            for a in answers:
                await self._send(w, a)
            self.completed.append(type(req).__name__)
        except (ConnectionError, BrokenPipeError):
            self.hung_up.append(type(req).__name__ if req is not None else "?")
        finally:
            w.close()

    async def __aenter__(self) -> ScriptedDaemon:
        self.server = await asyncio.start_unix_server(self._client, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def scripted(path: Path) -> AsyncIterator[ScriptedDaemon]:
    async with ScriptedDaemon(path) as d:
        yield d
