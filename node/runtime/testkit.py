"""The in-process test kit: a mesh of N real nodes over memory streams, on a virtual clock.

Role: mesh, group, repair and application-layer tests that run in one process in
milliseconds. Each node is what a daemon holds — a real home (key, config, repository,
share ledger, address book, group replica: a real ``LocalNode``), its ``Mesh`` and
``GroupService`` wired by the daemon's own ``open_mesh`` — but its host is a
:class:`MemoryHost`: streams are :func:`~corestate.protocol.streams.memory_stream_pair`
pairs, routed by PeerID inside one :class:`MemoryNetwork`, all in one trio loop. The
real-daemon tests (``tests/meshutil.py``, ``node.runtime.localmesh``) stay the truth about
processes, sockets, libp2p and the CLI; this kit is the fast truth about what the runtime
decides and records.

What the pieces promise:

- :class:`MemoryHost` offers what the runtime uses of ``protocol.p2p.P2PHost`` (the
  ``protocol.streams.Host`` interface). ``remote_peer`` of an inbound stream is the PeerID
  of the host that opened it, derived from that host's identity seed, as Noise would
  authenticate it: a test plays a hostile peer with a host of any seed
  (:meth:`MemoryNetwork.host`), never with a PeerID it holds no key for. A handler's
  exception is logged, kept in ``MemoryHost.failures`` and resets the stream; it never
  stops the host.
- A node that goes down (:meth:`MemoryMesh.kill`) breaks its streams as a killed process
  does: its peers read what was buffered, then a clean EOF, and their writes break; its
  handlers are cancelled; dialing it fails at once (connection refused). A partitioned
  node (:meth:`MemoryMesh.partition`) is silent instead: its open streams pass nothing
  and a dial to or from it fails only when the caller's timeout runs out — on the virtual
  clock, so that costs no real time.
- :class:`VirtualClock` is trio's clock for these tests: time stands still while anything
  can still happen (a task is runnable or a worker thread is at work) and jumps to the
  next deadline as soon as nothing can. ``trio.testing.MockClock(autojump_threshold=0)``
  cannot be used here: the runtime does its disk and CPU work in worker threads, and
  MockClock counts a loop that waits for a thread as idle, so it would fire every timeout
  in the middle of a share write. The kit tells the clock about the node's thread
  limiters, and about threads that wait for the loop in a port call (at rest, not at
  work). A real-time watchdog (``real_timeout``) turns a deadlock into a failure.
- Homes are sealed with the lowest Argon2id cost (``CHEAP_KDF``), for speed: product
  defaults are untouched, and such a home is for tests only.

Operations go through the code the CLI and the daemon use: the backup engine, then
``meshops.push`` and the catalog records (``meshops.catalog_items``); restore through
``meshops.fetch``; ``meshops.survey`` and ``meshops.repair``; group create/invite/join and
sync through ``GroupNode`` and ``GroupService``. The synchronous ones run in a worker
thread with a :class:`KitPort`, a ``MeshPort`` that calls back into the loop, as the
daemon runs commands. (``MemoryMesh.backup`` and ``restore`` repeat the steps of the CLI's
``_backup`` and ``_restore`` without their rendering; once the application layer has a
backup and a restore operation, they call those.)

Writing a test (pytest-trio picks the clock from a fixture that returns a trio Clock)::

    @pytest.fixture
    def clock() -> VirtualClock:
        return VirtualClock()

    async def test_restore_with_two_holders_down(tmp_path, clock):
        with scratch_dir() as homes:                        # on /dev/shm when there is one
            async with memory_mesh(homes, 5) as kit:        # five nodes, all trusting each other
                src = small_tree(tmp_path / "src", mib=3)   # 3 MiB: several 1 MiB packs
                backed = await kit.backup(0, [src], k=2, n=4)
                assert backed.pushed.safe
                await kit.kill(1, 2)                        # their streams break at once
                await kit.restore(0, backed.snapshot_id.hex(), tmp_path / "out")
                await kit.start(1, 2)                       # back, from their homes on disk
                survey = await kit.survey(0)                # meshops.survey: full again

Other tools: ``kit.partition(i)``/``kit.heal(i)``, ``kit.kill_after_bytes(i, n)`` (kill a
node in the middle of a transfer), ``kit.form_group(...)``, ``kit.sync_round()``,
``kit.until(pred)`` (polls on the virtual clock), ``kit.advance(seconds)``,
``kit.status(i)`` (the application layer's ``status`` with the live view),
``kit.run_sync(i, fn)`` (any synchronous ``fn(node, port)`` the way the daemon runs it).
A node's ``LocalNode``, ``Mesh``, ``MemoryHost`` and ``EventBus`` are ``kit.nodes[i].node``,
``.mesh``, ``.host``, ``.events`` while it is up.

Limits: no Noise, yamux, TCP or process boundary (the real-daemon tests cover those);
an operation a test runs *on* a node that it then kills belongs to the test's task, not to
the node, and fails as it may; sockets or other I/O that the clock does not know of
must not be mixed into a kit test (the clock would jump past them).
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nacl.pwhash
import nacl.signing
import trio
from corestate.node.home import Home
from corestate.node.local import LocalNode, init_home
from corestate.node.runtime import meshops
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.port import MeshPort, open_mesh
from corestate.protocol import control as c
from corestate.protocol.errors import PeerUnreachable
from corestate.protocol.keys import NodeKeys, peer_id_from_public_key
from corestate.protocol.streams import MemoryStream, Stream, memory_stream_pair

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.app.backup import PushResult
    from corestate.node.engine.backup import BackupResult
    from corestate.node.engine.restore import RestoreStats
    from corestate.node.group import Invite
    from corestate.node.runtime.mesh import Mesh
    from corestate.protocol import control as c

log = logging.getLogger("corestate.testkit")
T = TypeVar("T")

PASSPHRASE = b"corestate testkit"
CHEAP_KDF = (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)
PACK_SIZE = 1 << 20  # the smallest pack a config allows: a few MiB make several packs

Handler = Callable[[Stream], Awaitable[None]]


class KitError(CoreStateError):
    """The kit was used wrongly, or a kit test ran past its real-time limit."""


# ---------------------------------------------------------------------------------------
# The clock.


class VirtualClock(trio.abc.Clock):
    """Virtual seconds that jump to the next deadline whenever nothing else can happen
    first: no task runnable (trio asks the clock only then), no callback queued for the
    loop, and no worker thread at work. A thread is at work while it holds a token of the
    default thread limiter or of a limiter given to :meth:`track`, unless it is parked
    in a port call (waiting for the loop: the loop's tasks account for it).

    With ``autojump=False`` time moves only by :meth:`jump`.
    """

    def __init__(self, *, autojump: bool = True) -> None:
        self.autojump = autojump
        self.parked = 0
        self.jumps = 0
        self._now = 0.0
        self._limiters: weakref.WeakSet[trio.CapacityLimiter] = weakref.WeakSet()

    def track(self, limiter: trio.CapacityLimiter) -> None:
        self._limiters.add(limiter)

    def threads_at_work(self) -> int:
        limiters = {trio.to_thread.current_default_thread_limiter(), *self._limiters}
        return sum(lim.borrowed_tokens for lim in limiters) - self.parked

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds

    # -- trio.abc.Clock ----------------------------------------------------------------

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline <= self._now:
            return 0.0
        if (self.autojump and deadline != math.inf and self.threads_at_work() <= 0
                and trio.lowlevel.current_statistics().run_sync_soon_queue_size == 0):
            self._now = deadline
            self.jumps += 1
            return 0.0
        # Wait for real: a thread's end (or a callback) wakes the loop, and trio asks again.
        return math.inf


def _virtual_clock() -> VirtualClock | None:
    clock = trio.lowlevel.current_clock()
    return clock if isinstance(clock, VirtualClock) else None


# ---------------------------------------------------------------------------------------
# The network.


def peer_id_of_seed(seed: bytes) -> str:
    return peer_id_from_public_key(bytes(nacl.signing.SigningKey(seed).verify_key))


def _transport(addr: str) -> str:
    return addr.split("/p2p/", 1)[0]


class MemoryNetwork:
    """Routes streams between the :class:`MemoryHost` s that serve now, by PeerID."""

    def __init__(self) -> None:
        self.unreachable: set[str] = set()  # PeerIDs behind a partition
        self._hosts: dict[str, MemoryHost] = {}
        self._links: set[frozenset[str]] = set()  # connections, as connected_peers reports
        self._healed = trio.Event()
        self._next = 0

    def new_address(self) -> str:
        """A transport address no other host of this network has (never dialed for real)."""
        self._next += 1
        return f"/ip4/10.77.{self._next // 250}.{self._next % 250 + 1}/tcp/4001"

    def host(self, seed: bytes | None = None, addr: str | None = None) -> MemoryHost:
        """A host with the identity of ``seed`` (a fresh one: a stranger), not yet serving."""
        return MemoryHost(self, seed or os.urandom(32), addr or self.new_address())

    def serving(self, peer_id: str) -> MemoryHost | None:
        return self._hosts.get(peer_id)

    def cut(self, a: str, b: str) -> bool:
        return a in self.unreachable or b in self.unreachable

    def partition(self, *peers: str) -> None:
        self.unreachable.update(peers)

    def heal(self, *peers: str) -> None:
        """End the partition of ``peers`` (all, when none is named); frozen streams move on."""
        if peers:
            self.unreachable.difference_update(peers)
        else:
            self.unreachable.clear()
        self._healed.set()
        self._healed = trio.Event()

    async def wait_healed(self, a: str, b: str) -> None:
        while self.cut(a, b):
            await self._healed.wait()

    def announce(self, peer_id: str) -> None:
        """What mDNS would do: every other serving host hears of ``peer_id``'s address."""
        host = self._hosts[peer_id]
        for other in list(self._hosts.values()):
            if other is not host:
                other._discovered(peer_id, host.addrs())


class MemoryHostStream:
    """One end of a stream between two hosts: a ``MemoryStream`` whose reader gets nothing
    while the link is cut, and that its host aborts when it goes down."""

    def __init__(self, inner: MemoryStream, owner: MemoryHost) -> None:
        self.remote_peer = inner.remote_peer
        self._inner = inner
        self._owner = owner
        owner._ends.add(self)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        net, me = self._owner.net, self._owner.peer_id
        await net.wait_healed(me, self.remote_peer)
        data = await self._inner.receive_some(max_bytes)
        # Bytes that crossed while the link was cut arrive when it heals.
        await net.wait_healed(me, self.remote_peer)
        if data:
            self._owner._received(len(data))
        return data

    async def send_all(self, data: bytes | memoryview) -> None:
        # Sent into the buffer even across a cut (as into a socket's): the reader holds it
        # until the link heals, and a full buffer makes the writer wait.
        await self._inner.send_all(data)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def abort(self) -> None:
        self._inner.abort()


class MemoryHost:
    """A host of a :class:`MemoryNetwork` with the interface of ``protocol.p2p.P2PHost``.

    It serves while :meth:`serving` runs (its inbound handlers run in a nursery of its
    own); when that block ends it goes down as a killed process does (:meth:`go_down`).
    """

    def __init__(self, net: MemoryNetwork, seed: bytes, addr: str) -> None:
        self.net = net
        self.identity_seed = seed
        self.peer_id = peer_id_of_seed(seed)
        self.addr = addr
        self.failures: list[tuple[str, str, BaseException]] = []  # (protocol, peer, error)
        self.opened: dict[str, int] = {}  # inbound streams served, per protocol
        self.bytes_in = 0
        self.on_bytes_in: Callable[[int], None] | None = None
        self._handlers: dict[str, Handler] = {}
        self._known: dict[str, list[str]] = {}
        self._discovery_cbs: list[Callable[[str, list[str]], None]] = []
        self._ends: weakref.WeakSet[MemoryHostStream] = weakref.WeakSet()
        self._nursery: trio.Nursery | None = None

    # -- life --------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[MemoryHost]:
        if self.net._hosts.get(self.peer_id) is not None:
            raise KitError(f"a host with PeerID {self.peer_id} serves already")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.net._hosts[self.peer_id] = self
            try:
                yield self
            finally:
                self.go_down()
                nursery.cancel_scope.cancel()

    @property
    def up(self) -> bool:
        return self._nursery is not None

    def go_down(self) -> None:
        """Stop serving at once, as a killed process: every stream end of this host is
        aborted (peers read EOF, their writes break), its connections are gone and it
        cannot be dialed. Idempotent; the handlers are cancelled when ``serving`` ends."""
        if self.net._hosts.get(self.peer_id) is self:
            del self.net._hosts[self.peer_id]
        self.net._links = {link for link in self.net._links if self.peer_id not in link}
        for end in list(self._ends):
            end.abort()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None

    # -- the P2PHost interface ---------------------------------------------------------

    def addrs(self) -> list[str]:
        return [f"{self.addr}/p2p/{self.peer_id}"]

    def add_addrs(self, peer_id: str, addrs: Sequence[str]) -> None:
        known = self._known.setdefault(peer_id, [])
        for a in addrs:
            t = _transport(a)
            if t and t not in known:
                known.append(t)

    def connected_peers(self) -> list[str]:
        return sorted(p for link in self.net._links if self.peer_id in link
                      for p in link if p != self.peer_id)

    def set_handler(self, protocol_id: str, handler: Handler) -> None:
        self._handlers[protocol_id] = handler

    def on_peer_discovered(self, cb: Callable[[str, list[str]], None]) -> None:
        self._discovery_cbs.append(cb)

    async def open_stream(self, peer_id: str, protocol_id: str, *, addrs: Sequence[str] = (),
                          timeout: float = 10.0) -> Stream:
        await trio.lowlevel.checkpoint()
        if not self.up:
            raise KitError(f"host {peer_id[-8:]} is down: it cannot open streams")
        given = [_transport(a) for a in addrs if _transport(a)]
        self.add_addrs(peer_id, given)
        net = self.net
        if net.cut(self.peer_id, peer_id):
            # A partition drops every packet: the dial waits until the caller gives up.
            await trio.sleep(timeout)
            raise PeerUnreachable(f"peer {peer_id} unreachable: no stream for {protocol_id} "
                                  f"within {timeout:g} s (partitioned)", peer=peer_id)
        target = net._hosts.get(peer_id)
        if peer_id not in self.connected_peers():
            candidates = [*given, *self._known.get(peer_id, [])]
            if not candidates:
                raise PeerUnreachable(f"peer {peer_id} unreachable: no known address", peer=peer_id,
                                      hint="add the peer's address (from its invite or `corestate peers`)")
            if target is None or target.addr not in candidates:
                raise PeerUnreachable(f"peer {peer_id} unreachable: "
                                      f"{', '.join(candidates)}: connection refused", peer=peer_id)
            net._links.add(frozenset((self.peer_id, peer_id)))
        assert target is not None and target._nursery is not None  # links end with their hosts
        handler = target._handlers.get(protocol_id)
        if handler is None:
            raise PeerUnreachable(f"cannot open {protocol_id} to peer {peer_id}: protocol not supported",
                                  peer=peer_id)
        mine, theirs = memory_stream_pair(self.peer_id, peer_id)
        out = MemoryHostStream(mine, self)
        target.opened[protocol_id] = target.opened.get(protocol_id, 0) + 1
        target._nursery.start_soon(target._serve, protocol_id, handler, MemoryHostStream(theirs, target))
        return out

    # -- inside ------------------------------------------------------------------------

    async def _serve(self, protocol_id: str, handler: Handler, stream: MemoryHostStream) -> None:
        # As P2PHost.set_handler: closed when the handler returns, reset when it raises,
        # and an exception never goes further.
        try:
            await handler(stream)
        except Exception as exc:
            log.warning("handler for %s failed on a stream from %s; stream reset", protocol_id,
                        stream.remote_peer, exc_info=True)
            self.failures.append((protocol_id, stream.remote_peer, exc))
            stream.abort()
            return
        except BaseException:
            stream.abort()
            raise
        await stream.aclose()

    def _received(self, n: int) -> None:
        self.bytes_in += n
        if self.on_bytes_in is not None:
            self.on_bytes_in(self.bytes_in)

    def _discovered(self, peer: str, addrs: list[str]) -> None:
        for cb in list(self._discovery_cbs):
            cb(peer, addrs)


# ---------------------------------------------------------------------------------------
# Ports: synchronous code calling into the loop.


class KitPort(MeshPort):
    """A ``MeshPort`` for synchronous code the kit runs in a worker thread: ``call``
    runs in the loop (as the daemon's port does); while it runs, the calling thread is
    parked, so the virtual clock may move."""

    def __init__(self, token: trio.lowlevel.TrioToken, get_mesh: Callable[[], Awaitable[Mesh]],
                 clock: VirtualClock | None) -> None:
        super().__init__(token, get_mesh)
        self._clock = clock

    def call(self, fn: Callable[[Mesh], Awaitable[T]]) -> T:
        clock = self._clock

        async def run() -> T:
            if clock is not None:
                clock.parked += 1
            try:
                return await fn(await self._get_mesh())
            finally:
                if clock is not None:
                    clock.parked -= 1
        return trio.from_thread.run(run, trio_token=self.token)


# ---------------------------------------------------------------------------------------
# The mesh of nodes.


@dataclass(eq=False)
class KitNode:
    """One node of a :class:`MemoryMesh`; ``node``, ``mesh``, ``host`` and ``events`` are
    set while it is up."""

    index: int
    home: Path
    root: bytes
    addr: str
    peer_id: str = ""
    node: LocalNode | None = None
    mesh: Mesh | None = None
    host: MemoryHost | None = None
    events: EventBus | None = None
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event | None = None
    starts: int = 0

    @property
    def up(self) -> bool:
        return self.mesh is not None

    @property
    def identity_seed(self) -> bytes:
        return NodeKeys.from_root(self.root).identity_seed

    @property
    def full_addr(self) -> str:
        return f"{self.addr}/p2p/{self.peer_id}"

    def local(self) -> LocalNode:
        if self.node is None:
            raise KitError(f"node {self.index} is down")
        return self.node


@dataclass(slots=True)
class Surveyed:
    """What :meth:`MemoryMesh.survey` found: each pack's redundancy, the holders that lost or
    spoiled shares (with what), and the shares by verdict."""

    per_pack: dict[bytes, str]
    bad_holders: dict[str, list[str]]
    shares: dict[str, int]


@dataclass(slots=True)
class Repaired:
    """The records of a ``repair`` (node/app/maintain.py), with the summary last."""

    items: list[Any]

    @property
    def summary(self) -> c.RepairSummary:
        last = self.items[-1]
        assert isinstance(last, c.RepairSummary)
        return last

    @property
    def rebuilt(self) -> list[c.Rebuilt]:
        return [x for x in self.items if isinstance(x, c.Rebuilt)]

    @property
    def placed(self) -> dict[bytes, dict[int, str]]:
        return {r.pack: dict(r.placed) for r in self.rebuilt}

    @property
    def failed(self) -> list[str]:
        return [x.failed for x in self.items if isinstance(x, c.RepairFailure)]

    @property
    def complete(self) -> bool:
        return self.summary.complete

    @property
    def forgotten(self) -> int:
        return self.summary.forgotten


@dataclass(slots=True)
class Backed:
    """What :meth:`MemoryMesh.backup` did: the engine's result and the push to peers."""

    result: BackupResult
    pushed: PushResult | None
    snapshot_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.snapshot_id = self.result.snapshot_id


class MemoryMesh:
    """N nodes in homes below ``base``, on one :class:`MemoryNetwork` (see the module
    docstring). Made and run by :func:`memory_mesh`."""

    def __init__(self, base: Path, count: int, *, pack_size: int = PACK_SIZE,
                 peer_timeout: float = 20.0, anti_entropy: bool = False,
                 sync_interval: float = 20.0) -> None:
        self.base = base
        self.net = MemoryNetwork()
        self.anti_entropy = anti_entropy
        self.sync_interval = sync_interval
        self._pack_size = pack_size
        self._peer_timeout = peer_timeout
        self.nodes = [KitNode(i, base / f"node{i + 1}", os.urandom(32), self.net.new_address())
                      for i in range(count)]
        self._nursery: trio.Nursery | None = None

    # -- homes -------------------------------------------------------------------------

    def create(self) -> None:
        """Make every home (``init`` with a cheap key seal) and set its test config."""
        self.base.mkdir(parents=True, exist_ok=True)
        for kn in self.nodes:
            keys = init_home(Home(kn.home), kn.root, PASSPHRASE, kdf_cost=CHEAP_KDF)
            kn.peer_id = keys.peer_id
            self.edit_config(kn.index, "pack_size = 16777216", f"pack_size = {self._pack_size}")
            self.edit_config(kn.index, "mdns = true", "mdns = false")
            self.edit_config(kn.index, "peer_timeout = 20", f"peer_timeout = {self._peer_timeout:g}")

    def edit_config(self, i: int, old: str, new: str) -> None:
        """Replace a line of node ``i``'s ``config.toml`` (read when it starts next)."""
        cfg = self.nodes[i].home / "config.toml"
        text = cfg.read_text()
        if old not in text:
            raise KitError(f"{old!r} is not in {cfg}")
        cfg.write_text(text.replace(old, new, 1))

    def trust(self, i: int, j: int) -> None:
        """Node ``i`` trusts node ``j`` (``peer add``), at once if ``i`` is up."""
        a, b = self.nodes[i], self.nodes[j]
        if a.node is not None:
            a.node.book.add(b.peer_id, [b.addr], trusted=True)
            if a.mesh is not None:
                a.mesh.vault.set_quota(b.peer_id, a.node.cfg.quota_per_peer)
            return
        from corestate.node.peers import AddressBook
        book = AddressBook(a.home / "peers.db")
        try:
            book.add(b.peer_id, [b.addr], trusted=True)
        finally:
            book.close()

    def trust_all(self) -> None:
        """Every node trusts every other (before they start: one address book at a time)."""
        from corestate.node.peers import AddressBook
        for a in self.nodes:
            if a.node is not None:
                for b in self.nodes:
                    if b is not a:
                        self.trust(a.index, b.index)
                continue
            book = AddressBook(a.home / "peers.db")
            try:
                for b in self.nodes:
                    if b is not a:
                        book.add(b.peer_id, [b.addr], trusted=True)
            finally:
                book.close()

    # -- life --------------------------------------------------------------------------

    async def start(self, *which: int) -> None:
        """Start nodes ``which`` (all by default) from their homes, as daemons start."""
        assert self._nursery is not None, "use memory_mesh()"
        for i in which or range(len(self.nodes)):
            kn = self.nodes[i]
            if kn.up:
                raise KitError(f"node {i} is up already")
            kn.node = await trio.to_thread.run_sync(LocalNode.open, Home(kn.home), PASSPHRASE)
            await self._nursery.start(self._run_node, kn)

    async def _run_node(self, kn: KitNode, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        assert kn.node is not None
        kn._stopped = trio.Event()
        host = self.net.host(kn.identity_seed, kn.addr)
        try:
            with trio.CancelScope() as scope:
                kn._scope = scope
                async with host.serving(), trio.open_nursery() as nursery:
                    bus = EventBus()
                    async with open_mesh(kn.node, host=host, events=bus) as mesh:
                        clock = _virtual_clock()
                        if clock is not None:
                            for part in (mesh, mesh.groups):
                                for value in vars(part).values():
                                    if isinstance(value, trio.CapacityLimiter):
                                        clock.track(value)
                        assert mesh.groups is not None
                        mesh.groups.interval = self.sync_interval
                        kn.host, kn.events, kn.mesh = host, bus, mesh
                        kn.starts += 1
                        if self.anti_entropy:
                            nursery.start_soon(mesh.groups.run)
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            host.go_down()
            kn.mesh = kn.host = kn.events = None
            kn._scope = None
            node, kn.node = kn.node, None
            if node is not None:
                node.close()
            kn._stopped.set()

    def kill_soon(self, i: int) -> None:
        """Kill node ``i`` now, from anywhere in the loop (a callback too): its streams
        break at once, its tasks are cancelled; :meth:`kill` also waits for the end."""
        kn = self.nodes[i]
        if kn.host is not None:
            kn.host.go_down()
        if kn._scope is not None:
            kn._scope.cancel()

    async def kill(self, *which: int) -> None:
        for i in which:
            kn = self.nodes[i]
            if kn._stopped is None or kn._stopped.is_set():
                continue
            self.kill_soon(i)
            await kn._stopped.wait()

    async def restart(self, i: int) -> None:
        await self.kill(i)
        await self.start(i)

    def kill_after_bytes(self, i: int, nbytes: int) -> None:
        """Kill node ``i`` once it received ``nbytes`` more bytes over its streams: in
        the middle of a transfer, whatever the scheduling."""
        kn = self.nodes[i]
        host = kn.host
        if host is None:
            raise KitError(f"node {i} is down")
        limit = host.bytes_in + nbytes

        def check(total: int) -> None:
            if total >= limit:
                host.on_bytes_in = None
                self.kill_soon(i)
        host.on_bytes_in = check

    def partition(self, *which: int) -> None:
        """Cut nodes ``which`` off: nothing passes to or from them until :meth:`heal`."""
        self.net.partition(*(self.nodes[i].peer_id for i in which))

    def heal(self, *which: int) -> None:
        self.net.heal(*(self.nodes[i].peer_id for i in which))

    # -- time --------------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, with everything due in them."""
        clock = _virtual_clock()
        if clock is not None and not clock.autojump:
            clock.jump(seconds)
            await trio.sleep(0)
            return
        await trio.sleep(seconds)

    async def until(self, pred: Callable[[], object], *, timeout: float = 600.0, what: str = "",
                    every: float = 0.05) -> None:
        """Poll ``pred`` every ``every`` (virtual) seconds; fail after ``timeout``."""
        with trio.move_on_after(timeout):
            while not pred():
                await trio.sleep(every)
            return
        raise AssertionError(f"not within {timeout:g} s: {what or pred}")

    # -- running synchronous code ------------------------------------------------------

    def port(self, i: int) -> KitPort:
        kn = self.nodes[i]

        async def get() -> Mesh:
            if kn.mesh is None:
                raise KitError(f"node {i} is down")
            return kn.mesh
        return KitPort(trio.lowlevel.current_trio_token(), get, _virtual_clock())

    async def run_sync(self, i: int, fn: Callable[[LocalNode, KitPort], T]) -> T:
        """``fn(node, port)`` in a worker thread, with a port into node ``i``'s mesh."""
        node, port = self.nodes[i].local(), self.port(i)
        return await trio.to_thread.run_sync(fn, node, port)

    # -- operations --------------------------------------------------------------------

    async def backup(self, i: int, paths: Sequence[Path], *, k: int = 0, n: int = 0) -> Backed:
        """``corestate backup PATHS --k K --n N`` on node ``i``: the engine, the push to
        peers, and in a group the catalog records and a sync round."""
        return await self.run_sync(i, lambda node, port: _backup(node, port, list(paths), k, n))

    async def restore(self, i: int, snapshot: str, target: Path,
                      paths: Sequence[str] = ()) -> RestoreStats:
        """``corestate restore SNAPSHOT --target TARGET [--path P]...`` on node ``i``."""
        return await self.run_sync(i, lambda node, port: _restore(node, port, snapshot, target, list(paths)))

    async def survey(self, i: int, *, audit: bool = True) -> Surveyed:
        from corestate.node.app.maintain import survey
        found = await self.run_sync(i, lambda node, port: survey(node, port, audit=audit))
        bad: dict[str, list[str]] = {}
        for b in found.bad:
            bad.setdefault(b.peer, []).append(b.share)
        return Surveyed(found.per_pack, bad, found.shares)

    async def repair(self, i: int, *, dry_run: bool = False) -> Repaired:
        """The ``repair`` operation of the application layer (node/app/maintain.py)."""
        from corestate.node.app import Local
        from corestate.node.app.maintain import repair

        def run(node: LocalNode, port: KitPort) -> Repaired:
            return Repaired(list(repair(node, c.RepairCall(dry_run=dry_run), Local(port=port))))
        return await self.run_sync(i, run)

    async def create_group(self, i: int, name: str = "office") -> bytes:
        node = self.nodes[i].local()
        return await trio.to_thread.run_sync(node.group.create, name)

    async def invite(self, i: int, role: str = "member", expires_s: float = 3600) -> Invite:
        kn = self.nodes[i]
        node = kn.local()
        assert kn.host is not None
        return await trio.to_thread.run_sync(node.group.invite, role, expires_s, kn.host.addrs())

    async def join(self, j: int, invite: Invite) -> None:
        """``corestate group join TOKEN`` on node ``j``: redeem, first sync, a round."""
        mesh = self._mesh(j)
        assert mesh.groups is not None
        await mesh.groups.join(invite)
        await mesh.groups.sync_with(invite.admin, list(invite.addrs))
        await mesh.groups.sync_all()

    async def form_group(self, admin: int = 0, members: Sequence[int] | None = None,
                         name: str = "office") -> bytes:
        """A group of ``admin`` and ``members`` (default: every other node), each joined
        by a one-time invite of the admin's."""
        gid = await self.create_group(admin, name)
        for j in members if members is not None else [kn.index for kn in self.nodes if kn.index != admin]:
            await self.join(j, await self.invite(admin))
        return gid

    async def remove_member(self, admin: int, j: int) -> None:
        """``corestate group remove`` on ``admin`` (the daemon then tells the members)."""
        node = self.nodes[admin].local()
        await trio.to_thread.run_sync(node.group.remove, self.nodes[j].peer_id)
        mesh = self._mesh(admin)
        assert mesh.groups is not None
        if not self.anti_entropy:
            await mesh.groups.sync_all()

    async def sync_round(self, *which: int) -> dict[int, dict[str, str]]:
        """``corestate group sync`` on nodes ``which`` (every node up, by default), one
        after the other; per node, per peer, "ok" or why not."""
        out = {}
        for i in which or [kn.index for kn in self.nodes if kn.up]:
            mesh = self._mesh(i)
            assert mesh.groups is not None
            await trio.to_thread.run_sync(mesh.groups.advertise)
            out[i] = await mesh.groups.sync_all()
        return out

    def status(self, i: int) -> c.StatusResult:
        """The application layer's ``status`` of node ``i``, with its live view."""
        from corestate.node.app.status import Live, status
        kn = self.nodes[i]
        assert kn.host is not None and kn.events is not None
        live = Live(connected=frozenset(kn.host.connected_peers()), alerts=tuple(kn.events.recent_alerts))
        return status(kn.local(), live)

    def _mesh(self, i: int) -> Mesh:
        mesh = self.nodes[i].mesh
        if mesh is None:
            raise KitError(f"node {i} is down")
        return mesh


def _backup(node: LocalNode, port: KitPort, paths: list[Path], k: int, n: int) -> Backed:
    """The steps of ``corestate backup`` after its arguments are read (node/cli.py
    ``_backup``, ``_push`` and ``_record_in_catalog``), without the rendering."""
    from corestate.node.engine.backup import Backup
    engine = Backup(node.repo, node.cfg, skip_dirs=node.skip_dirs(), exclude=list(node.cfg.exclude),
                    state_dir=node.home.path / "snapshots", workers=1)
    result = engine.run(paths)
    from corestate.node.app.backup import push
    pushed = push(node, port, k=k, n=n) if meshops.is_mesh_node(node) else None
    if node.group.in_group:
        packs = [p.pack for p in pushed.report.packs] if pushed is not None and pushed.report else []
        node.group.write(meshops.catalog_items(node, result.snapshot_id, packs))
        port.call(lambda mesh: _sync_all(mesh))
    return Backed(result, pushed)


async def _sync_all(mesh: Mesh) -> dict[str, str]:
    assert mesh.groups is not None
    return await mesh.groups.sync_all()


def _restore(node: LocalNode, port: KitPort, snapshot: str, target: Path, paths: list[str]) -> RestoreStats:
    """``corestate restore`` (node/cli.py ``_restore`` and ``_fetch``) without the rendering."""
    from corestate.node.engine.restore import Restore, RestoreStats
    snap = node.repo.resolve(snapshot)
    includes = [os.fsencode("/" + p.strip("/")) for p in paths]
    need = meshops.packs_of(node, snap, includes or None) & node.ledger.remote_only()
    fetched = meshops.fetch(node, port, need) if need else []
    stats = RestoreStats()
    try:
        Restore(node.repo, stats=stats).run(snap, target, includes)
    finally:
        meshops.drop_fetched(node, fetched)
    return stats


@asynccontextmanager
async def memory_mesh(base: Path, count: int, *, trusted: bool = True, start: bool = True,
                      real_timeout: float = 120.0, **options: Any) -> AsyncIterator[MemoryMesh]:
    """A :class:`MemoryMesh` of ``count`` nodes in homes below ``base`` (``options``: its
    keyword arguments), each trusting the others unless ``trusted`` is false, all up
    unless ``start`` is false; every node goes down when the block ends. Fails with
    ``KitError`` when the block runs longer than ``real_timeout`` real seconds."""
    kit = MemoryMesh(base, count, **options)
    await trio.to_thread.run_sync(kit.create)
    if trusted:
        kit.trust_all()
    token = trio.lowlevel.current_trio_token()
    expired = threading.Event()
    async with trio.open_nursery() as nursery:
        kit._nursery = nursery

        def expire() -> None:
            expired.set()
            try:
                token.run_sync_soon(nursery.cancel_scope.cancel)
            except trio.RunFinishedError:
                pass
        watchdog = threading.Timer(real_timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            if start:
                await kit.start()
            yield kit
        finally:
            watchdog.cancel()
            for kn in kit.nodes:
                kit.kill_soon(kn.index)
    if expired.is_set():
        raise KitError(f"the kit test ran longer than {real_timeout:g} real seconds (a deadlock? "
                       "the virtual clock stands still while a worker thread is at work)")


@contextmanager
def scratch_dir(prefix: str = "corestate-kit-") -> Iterator[Path]:
    """A temporary folder for the kit's homes, on a memory file system when the machine
    has one (``/dev/shm``: the vault's and sqlite's fsyncs cost nothing there, and these
    homes are throwaway), removed afterwards."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=prefix, dir=where) as d:
        yield Path(d)


def small_tree(root: Path, *, mib: float = 1.0, files: int = 4, seed: int = 0) -> Path:
    """A tree of ``files`` files of random (incompressible) bytes, ``mib`` MiB in all, in
    two folders, plus a small text file and a symlink."""
    rnd = random.Random(seed)
    (root / "a" / "b").mkdir(parents=True)
    size = int(mib * (1 << 20)) // max(1, files)
    for f in range(files):
        folder = root / "a" if f % 2 else root / "a" / "b"
        (folder / f"f{f}.bin").write_bytes(rnd.randbytes(size))
    (root / "notes.txt").write_text(f"tree {seed}\n" * 50)
    (root / "link").symlink_to("notes.txt")
    return root


__all__ = [
    "CHEAP_KDF",
    "PASSPHRASE",
    "Backed",
    "KitError",
    "KitNode",
    "KitPort",
    "MemoryHost",
    "MemoryHostStream",
    "MemoryMesh",
    "MemoryNetwork",
    "VirtualClock",
    "memory_mesh",
    "peer_id_of_seed",
    "scratch_dir",
    "small_tree",
]
