"""The libp2p adapter: the one module of CoreState that imports libp2p.

A node's host speaks TCP, secured by Noise and multiplexed by yamux, nothing else: the
security table holds Noise alone (libp2p's default also offers plaintext, which a peer
could pick), and the muxer table holds yamux alone. The identity is the Ed25519 key of
the node's 32-byte identity seed, so ``P2PHost.peer_id`` equals
``corestate.protocol.keys.peer_id_from_public_key`` of its public key.

Everything above this module sees our own ``Stream`` (``receive_some`` returning ``b""``
at EOF, ``send_all``, ``aclose``), never a libp2p type. Invariants:

- A stream handler never takes the host down: any exception it raises is logged on the
  ``corestate.p2p`` logger and its stream reset; ``trio.Cancelled`` is never swallowed.
- Every wait on a peer is bounded: dials and stream opening by ``timeout``, closing a
  stream by ``CLOSE_TIMEOUT``; reads and writes by the caller (``Channel``).
- A dial failure is ``PeerUnreachable`` (retryable), naming the peer and the addresses
  tried. libp2p blocks a peer whose dial failed for 60 s (its negative dial cache); we
  lift that block before every dial of ours, so a daemon that comes back is reachable at
  once. Retries belong to the caller, so libp2p's own per-address retries are off.
- A peer killed mid-stream looks like a clean EOF here (yamux cannot tell); the lengths
  and hashes of the wire protocol catch it (``Channel.receive_bulk``).
- A protocol-negotiation (multistream-select) message longer than
  ``NEGOTIATION_MAX_BYTES`` is refused before its body is read: libp2p 0.8.1 reads it
  with no limit (advisory GHSA-hmjq-g7pp-rw3x, fixed in 0.8.2), so a stranger could make
  a host allocate what its length prefix claims. See :func:`_cap_negotiation`.
- We open yamux's receive window past its 256 KiB start only for a bulk body the
  receiver admitted and is about to read (``P2PStream.expect_bulk``, called by
  ``Channel.receive_bulk_to``), at once to its size, at most ``BULK_WINDOW`` (libp2p's
  own tuning still grows a window while its reader reads, as before).

Relays and hole punching (circuit relay v2, DCUtR; :class:`RelayOptions`):

- Every host accepts relayed connections (the STOP side) and can dial through a relay
  (:meth:`P2PHost.open_stream` with a ``/p2p-circuit`` address; libp2p's swarm skips
  those, so we dial them through the relay transport ourselves, after the direct ones).
- A host with ``hop`` relays for the peers its policy admits (:meth:`set_relay_policy`,
  the group's members) and for no one else: a reservation or connect from anyone else is
  answered PERMISSION_DENIED before its message is read.
- Only the side that *accepted* a relayed connection starts DCUtR (libp2p would start
  it on both ends; the two sessions collide on the listen port). Once a direct
  connection exists, libp2p picks it for new streams; the relayed one stays open
  (libp2p closes it 60 s later) and is dialed again when the direct one drops.
- A stream carried by a relayed connection is rate-limited to ``relayed_rate`` bytes/s
  when sending (bulk over a member's uplink must not starve it).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ifaddr
import multiaddr
import trio
from corestate.protocol.errors import PeerUnreachable, ProtocolError
from libp2p import new_host
from libp2p.abc import INetStream, PeerInfo
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery
from libp2p.exceptions import ParseError
from libp2p.host.basic_host import BasicHost
from libp2p.io.exceptions import IOException
from libp2p.network.config import RetryConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.rcmgr.metrics import Direction
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import TrioManager
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

if TYPE_CHECKING:
    from corestate.protocol.streams import Stream

__all__ = ["CLOSE_TIMEOUT", "P2PHost", "P2PStream", "RelayOptions", "open_host"]

log = logging.getLogger("corestate.p2p")

Handler = Callable[["Stream"], Awaitable[None]]
DiscoveryCallback = Callable[[str, list[str]], None]

SEED_BYTES = 32
# Closing sends a yamux FIN; on a frozen connection even that could wait forever.
CLOSE_TIMEOUT = 5.0
# How long the peerstore keeps addresses we were given (the runtime's address book is
# the lasting record; the peerstore is a cache).
ADDR_TTL = 24 * 3600
# Happy eyeballs: the next address is tried when the previous one failed or after this.
NEXT_ADDR_DELAY = 0.25
# The longest multistream-select message we read (go-multistream refuses more than 1 KiB
# too); a protocol id of ours is a few dozen bytes.
NEGOTIATION_MAX_BYTES = 1024
# Largest yamux receive window opened for one admitted bulk body (``expect_bulk``): a
# whole share of a 16 MiB pack at k=2 (8 MiB) plus its header and the messages around it.
BULK_WINDOW = 9 << 20
# The piece size of relayed traffic: what the relay pump reads at once, and what a paced
# stream sends at once.
RELAY_CHUNK = 1 << 16


async def _capped_negotiation_read(self: MultiselectCommunicator) -> str:
    """``MultiselectCommunicator.read`` with the length prefix checked before the body."""
    try:
        data = await read_varint_prefixed_bytes_limited(self.read_writer, NEGOTIATION_MAX_BYTES)
    except (ParseError, IOException) as e:  # MessageTooLarge is an IOException
        raise MultiselectCommunicatorError(f"refused negotiation message: {e}") from e
    if not data or data[-1:] != b"\n":
        raise MultiselectCommunicatorError("negotiation message not delimited by a newline")
    return data[:-1].decode()


def _cap_negotiation() -> None:
    """Put the size cap into libp2p's multistream reader, for every user of it (the
    security and muxer negotiation of each connection, the protocol of each stream).

    Pinned to libp2p 0.8.1 (``pyproject.toml``): its ``MultiselectCommunicator.read``
    is the one reader of negotiation messages, and ``read_writer`` its byte stream.
    There is no public hook for this; replacing the method on the class is the smallest
    change that covers the hosts libp2p builds internally.
    """
    MultiselectCommunicator.read = _capped_negotiation_read  # type: ignore[method-assign]


_cap_negotiation()

CIRCUIT = "/p2p-circuit"
DIAL_BACK_PROTOCOL = "/corestate/dial-back/1"
DIAL_BACK_TIMEOUT = 5.0
DIAL_BACK_MAX_PORTS = 4
# DCUtR's direct dials: libp2p waits 10 s on an unreachable address by default; a hole
# punch either works within a round trip or two, or not at all.
HOLE_PUNCH_DIAL_TIMEOUT = 3
HOLE_PUNCH_ATTEMPTS = 3
HOLE_PUNCH_POLL = 1.0


@dataclass(frozen=True)
class RelayOptions:
    """What a host does about relays (config ``[relay]``).

    ``hop``: relay for admitted peers; the limits apply to each circuit through us
    (``circuit_bytes`` both directions together, ``circuit_seconds`` from its start,
    ``circuit_rate`` bytes/s each way, 0: no limit) and
    to us as a whole (``max_reservations``, ``max_circuits`` per reserved peer).
    ``relayed_rate``: bytes/s a stream of ours may send over a relayed connection
    (0: no limit). ``hole_punch``: run DCUtR.
    """

    hop: bool = False
    circuit_rate: int = 0
    circuit_bytes: int = 4 * 2**30
    circuit_seconds: int = 2 * 3600
    reservation_seconds: int = 3600
    max_reservations: int = 32
    max_circuits: int = 8
    relayed_rate: int = 0
    hole_punch: bool = True


class _TokenBucket:
    """``rate`` bytes per second, bursts of one second's worth; shared by a host's
    relayed streams."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._stamp = time.monotonic()
        self._lock = trio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(float(self.rate), self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                need = min(n, self.rate)  # a piece larger than a second's worth waits for a full bucket
                if self._tokens >= need:
                    self._tokens -= need
                    return
                await trio.sleep((need - self._tokens) / self.rate)


class _MemberRelay(CircuitV2Protocol):
    """libp2p's circuit relay v2 with our own byte pump (the one override).

    libp2p 0.8.1's pump files each circuit under the peer's id alone and, when a circuit
    ends, closes the streams filed under that id: with two circuits between the same
    members (each dialed the other at once) the end of one resets the other. Ours closes
    only its own two streams, and applies the per-circuit rate.
    """

    circuit_rate = 0

    async def _relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                          deadline: float | None = None, circuit_data_limit: list[int] | None = None) -> None:
        bucket = _TokenBucket(self.circuit_rate) if self.circuit_rate else None
        clean = False
        try:
            while True:
                data = b""
                with trio.move_on_at(math.inf if deadline is None else trio.current_time() + deadline - time.monotonic()):
                    try:
                        data = await src_stream.read(RELAY_CHUNK)
                    except StreamError:
                        data = b""
                    clean = not data
                if not data:
                    break  # EOF (clean) or past the circuit's time limit
                if circuit_data_limit is not None:
                    if len(data) > circuit_data_limit[0]:
                        log.info("relayed circuit of %s ended: its byte limit is spent", peer_id)
                        clean = False
                        break
                    circuit_data_limit[0] -= len(data)
                if bucket is not None:
                    await bucket.take(len(data))
                with trio.fail_after(self.write_timeout):
                    await dst_stream.write(data)
        except (StreamError, trio.TooSlowError):
            clean = False
        except Exception:
            log.debug("relay pump for %s failed", peer_id, exc_info=True)
            clean = False
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
                try:
                    if clean:
                        await dst_stream.close()  # our half: the other direction goes on
                    else:
                        await src_stream.reset()
                        await dst_stream.reset()
                except Exception:
                    log.debug("closing a relayed circuit of %s failed", peer_id, exc_info=True)


class _InboundOnlyDCUtR(DCUtRProtocol):
    """DCUtR started only by the side that accepted the relayed connection.

    libp2p 0.8.1's own drive loop starts a hole punch from both ends, and the two
    sessions collide on the listen port; this replaces that loop (the one override) and
    keeps libp2p's session, dial and verification code.
    """

    async def _auto_drive_loop(self) -> None:
        while True:
            await trio.sleep(HOLE_PUNCH_POLL)
            swarm = self.host.get_network()
            for pid, conns in list(getattr(swarm, "connections", {}).items()):
                if pid in self._in_progress or pid in self._direct_connections:
                    continue
                if self._hole_punch_attempts.get(pid, 0) >= HOLE_PUNCH_ATTEMPTS:
                    continue
                live = [c for c in conns if not c.is_closed]
                if any(not _is_relayed(c) for c in live):
                    continue
                if not any(_is_relayed(c) and c.direction == Direction.INBOUND for c in live):
                    continue
                try:
                    await self.initiate_hole_punch(pid)
                except Exception:
                    log.debug("hole punch to %s failed", pid, exc_info=True)


async def _read_exactly(stream: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = await stream.read(n - len(buf))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return buf


def _is_relayed(conn: Any) -> bool:
    try:
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
        return any(CIRCUIT in str(a) for a in conn.get_transport_addresses())
    except Exception:
        return False


class P2PStream:
    """Our ``Stream`` over a libp2p stream; ``remote_peer`` is the authenticated PeerID.

    libp2p's stream errors are translated the trio way: reading a reset or closed stream
    gives ``b""`` (EOF; the framing above decides whether that was too early), writing to
    one raises ``trio.BrokenResourceError``; using the stream after ``aclose`` raises
    ``trio.ClosedResourceError``.
    """

    def __init__(self, net_stream: INetStream, relayed_bucket: _TokenBucket | None = None) -> None:
        self._net = net_stream
        self.remote_peer = str(net_stream.muxed_conn.peer_id)
        self._closed = False
        self.relayed = _is_relayed(net_stream.muxed_conn)
        self._bucket = relayed_bucket if self.relayed else None

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        try:
            return await self._net.read(max_bytes)
        except StreamError:  # EOF, reset, closed or a dead connection: all end the stream
            return b""

    async def expect_bulk(self, nbytes: int) -> None:
        """Open yamux's receive window for a body of ``nbytes`` this end has admitted and
        is about to read (at most ``BULK_WINDOW``; never shrinks it).

        Every stream starts at yamux's 256 KiB window and libp2p grows it only by
        doubling once per measured round trip, so a share-sized body on a fresh stream
        spends most of its time waiting for window updates through two busy event loops.
        Granting the whole (admitted, bounded) body at once lets the sender write it
        without waiting; what the peer may buffer here is still at most the window."""
        muxed = getattr(self._net, "muxed_stream", None)
        # A relayed stream keeps libp2p's pace: it is rate-limited anyway, and a wide
        # window would only fill the relay's buffers.
        if self._closed or self.relayed or muxed is None or not hasattr(muxed, "target_recv_window"):
            return
        want = min(nbytes, BULK_WINDOW)
        conn = muxed.conn
        async with muxed.window_lock:
            buffered = len(conn.stream_buffers.get(muxed.stream_id, b""))
            grow = want - (muxed.recv_window + buffered)
            if grow <= 0:
                return
            muxed.recv_window += grow
            muxed.target_recv_window = max(muxed.target_recv_window, want)
        try:
            await muxed.send_window_update(grow, skip_lock=True)
        except Exception:  # a dead connection: the read that follows sees the EOF
            log.debug("window update to %s failed", self.remote_peer, exc_info=True)

    async def send_all(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if not data:
            return
        if self._bucket is not None and len(data) > RELAY_CHUNK:
            view = memoryview(data)
            for at in range(0, len(view), RELAY_CHUNK):
                await self.send_all(view[at : at + RELAY_CHUNK])
            return
        if self._bucket is not None:
            await self._bucket.take(len(data))
        try:
            await self._net.write(bytes(data))
        except StreamError as e:
            raise trio.BrokenResourceError(f"stream to {self.remote_peer} broke: {e}") from e

    async def aclose(self) -> None:
        """Half-close towards the peer (FIN) and release the stream. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            try:
                await self._net.close()
            except StreamError:
                pass
        if scope.cancelled_caught:
            await self.reset()

    async def reset(self) -> None:
        """Abort the stream in both directions (yamux RST). Never raises, never blocks long."""
        self._closed = True
        # Shielded: a handler cancelled by the host's shutdown still releases its stream.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
            try:
                await self._net.reset()
            except Exception:
                log.debug("reset of a stream from %s failed", self.remote_peer, exc_info=True)


class P2PHost:
    """A running libp2p host (make one with :func:`open_host`)."""

    def __init__(self, host: BasicHost, peer_id: str, relay: RelayOptions | None = None) -> None:
        self._host = host
        swarm = host.get_network()
        assert isinstance(swarm, Swarm)
        self._swarm = swarm
        self.peer_id = peer_id
        self.relay_options = relay or RelayOptions()
        self._bucket = (
            _TokenBucket(self.relay_options.relayed_rate) if self.relay_options.relayed_rate else None
        )
        self._relay_allow: Callable[[str], bool] = lambda peer: False
        self._relay_proto: CircuitV2Protocol | None = None
        self._relay_transport: CircuitV2Transport | None = None
        self._nursery: trio.Nursery | None = None
        self._circuits: dict[str, list[str]] = {}  # relay peer -> our circuit addresses through it
        self._public: list[str] = []  # addresses members dialed back (dial_back), with /p2p
        self._dial_locks: dict[str, trio.Lock] = {}
        self._discovery_cbs: list[DiscoveryCallback] = []
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._mdns: MDNSDiscovery | None = None

    # -- addresses -------------------------------------------------------------------

    def addrs(self) -> list[str]:
        """Where peers can reach us, each with ``/p2p/<id>``: our listen addresses (ports
        resolved, wildcards expanded), the public addresses members dialed back, our
        circuit addresses through relays that hold a reservation for us; loopback last."""
        out: list[str] = []
        for addr in self._host.get_transport_addrs():
            for concrete in _expand_wildcard(addr):
                full = f"{concrete}/p2p/{self.peer_id}"
                if full not in out:
                    out.append(full)
        extra = [a for a in [*self._public, *(c for cs in self._circuits.values() for c in cs)] if a not in out]
        loop = [a for a in out if _is_loopback(a)]
        return [a for a in out if not _is_loopback(a)] + extra + loop

    def listen_addrs(self) -> list[str]:
        """Our listen addresses only (``addrs`` without public and circuit ones)."""
        return [a for a in self.addrs() if a not in self._public and CIRCUIT not in a]

    def set_public_addrs(self, addrs: Sequence[str]) -> None:
        """Addresses members reached us at from outside (see :meth:`dial_back`)."""
        self._public = [a if "/p2p/" in a else f"{a}/p2p/{self.peer_id}" for a in addrs]

    def add_addrs(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Remember addresses of ``peer_id`` (``/p2p/<peer_id>`` suffix allowed)."""
        pid = _parse_peer_id(peer_id)
        maddrs = [_transport_addr(a, peer_id) for a in addrs]
        if maddrs:
            self._host.get_peerstore().add_addrs(pid, maddrs, ADDR_TTL)

    def connected_peers(self) -> list[str]:
        return [
            str(pid)
            for pid, conns in self._swarm.connections.items()
            if any(not c.is_closed for c in conns)
        ]

    # -- streams -----------------------------------------------------------------------

    def set_handler(self, protocol_id: str, handler: Handler) -> None:
        """Serve ``protocol_id`` with ``handler``, one call per inbound stream.

        The stream is closed when the handler returns, reset when it raises; an exception
        is logged, never propagated into libp2p (where it would stop the whole host).
        """

        async def serve(net_stream: INetStream) -> None:
            stream = P2PStream(net_stream, self._bucket)
            try:
                await handler(stream)
            except Exception:
                log.warning(
                    "handler for %s failed on a stream from %s; stream reset",
                    protocol_id,
                    stream.remote_peer,
                    exc_info=True,
                )
                await stream.reset()
                return
            except BaseException:
                await stream.reset()
                raise
            await stream.aclose()

        self._host.set_stream_handler(TProtocol(protocol_id), serve)

    async def open_stream(
        self,
        peer_id: str,
        protocol_id: str,
        *,
        addrs: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> Stream:
        """A new stream to ``peer_id`` speaking ``protocol_id``, dialing first if needed.

        ``addrs`` are tried first (and remembered), then the addresses the peerstore
        knows. Raises ``PeerUnreachable`` when no connection or stream could be opened
        within ``timeout`` seconds.
        """
        pid = _parse_peer_id(peer_id)
        given = [_transport_addr(a, peer_id) for a in addrs]
        if given:
            self._host.get_peerstore().add_addrs(pid, given, ADDR_TTL)
        with trio.move_on_after(timeout) as scope:
            reused = peer_id in self.connected_peers()
            await self._ensure_connected(pid, given)
            net_stream = None
            if reused:
                with trio.move_on_after(min(timeout / 2, 5.0)):
                    net_stream = await self._new_stream(pid, protocol_id, peer_id)
                if net_stream is None:
                    # The connection went silent (a partition healed, a peer froze and came
                    # back): TCP would take minutes to notice. Drop it and dial afresh.
                    with trio.move_on_after(2):
                        await self._swarm.close_peer(pid)
                    await self._ensure_connected(pid, given)
            if net_stream is None:
                net_stream = await self._new_stream(pid, protocol_id, peer_id)
            return P2PStream(net_stream, self._bucket)
        assert scope.cancelled_caught
        tried = ", ".join(str(a) for a in self._candidates(pid, given)) or "no known address"
        raise PeerUnreachable(
            f"peer {peer_id} unreachable: no stream for {protocol_id} within {timeout:g} s"
            f" (addresses: {tried})",
            peer=peer_id,
        )

    async def _new_stream(self, pid: ID, protocol_id: str, peer_id: str) -> Any:
        try:
            return await self._host.new_stream(pid, [TProtocol(protocol_id)])
        except Exception as e:
            raise PeerUnreachable(
                f"cannot open {protocol_id} to peer {peer_id}: {_describe(e)}",
                peer=peer_id,
            ) from e

    async def _ensure_connected(self, pid: ID, given: list[multiaddr.Multiaddr]) -> None:
        lock = self._dial_locks.setdefault(str(pid), trio.Lock())
        async with lock:
            if str(pid) in self.connected_peers():
                return
            # libp2p refuses to dial a peer for 60 s after a failed dial; our callers decide
            # when to retry, and a daemon that came back must be reachable at once.
            self._swarm.unblock_peer(pid)
            candidates = self._candidates(pid, given)
            if not candidates:
                raise PeerUnreachable(
                    f"peer {pid} unreachable: no known address",
                    peer=str(pid),
                    hint="add the peer's address (from its invite or `corestate peers`)",
                )
            await self._dial_any(pid, candidates)

    def _candidates(self, pid: ID, given: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        try:
            known = list(self._host.get_peerstore().addrs(pid))
        except Exception:  # PeerStoreError: nothing known about the peer
            known = []
        out: list[multiaddr.Multiaddr] = []
        suffix = f"/p2p/{pid}"
        for addr in [*given, *known]:
            text = str(addr)
            if CIRCUIT not in text and text.endswith(suffix):  # identify stores some with /p2p
                addr = multiaddr.Multiaddr(text.removesuffix(suffix))
            if str(addr) not in {str(a) for a in out}:
                out.append(addr)
        # Direct and LAN addresses first, relayed ones after (stable otherwise).
        return sorted(out, key=lambda a: CIRCUIT in str(a))

    async def _dial_any(self, pid: ID, candidates: list[multiaddr.Multiaddr]) -> None:
        """Dial the addresses in order, each one started when the previous one failed or
        after ``NEXT_ADDR_DELAY``; the first connection wins and the others are cancelled."""
        errors: list[str] = []
        won = False

        async with trio.open_nursery() as nursery:

            async def attempt(addr: multiaddr.Multiaddr, failed: trio.Event) -> None:
                nonlocal won
                try:
                    if CIRCUIT in str(addr):
                        await self._dial_circuit(addr)
                    else:
                        await self._swarm.dial_addr(addr, pid)
                except Exception as e:
                    errors.append(f"{addr}: {_describe(e)}")
                    failed.set()
                    return
                won = True
                nursery.cancel_scope.cancel()

            for addr in candidates:
                failed = trio.Event()
                nursery.start_soon(attempt, addr, failed)
                with trio.move_on_after(NEXT_ADDR_DELAY):
                    await failed.wait()
        if not won:
            raise PeerUnreachable(f"peer {pid} unreachable: " + "; ".join(errors), peer=str(pid))

    async def _dial_circuit(self, addr: multiaddr.Multiaddr) -> None:
        """A relayed connection through the relay named in ``addr`` (whose own address,
        if ``addr`` carries one, is dialed first)."""
        if self._relay_transport is None:
            raise ProtocolError("this host does not dial through relays")
        relay_part = str(addr).partition(CIRCUIT)[0]
        relay_maddr = multiaddr.Multiaddr(relay_part)
        relay_id = relay_maddr.value_for_protocol("p2p")
        if relay_id == self.peer_id:
            raise PeerUnreachable("a circuit through ourselves", peer=str(relay_id))
        if relay_id and str(relay_maddr) != f"/p2p/{relay_id}":
            await self._ensure_connected(
                _parse_peer_id(relay_id), [_transport_addr(relay_part, relay_id)]
            )
        await self._relay_transport.dial(addr)

    # -- relays ------------------------------------------------------------------------

    def set_relay_policy(self, allow: Callable[[str], bool]) -> None:
        """Relay (hop) only for the peers ``allow(peer_id)`` admits; refuse all others."""
        self._relay_allow = allow

    async def reserve(self, relay_peer: str, addrs: Sequence[str] = (), *, timeout: float = 10.0) -> list[str]:
        """Reserve a slot on ``relay_peer`` (or refresh ours); return our circuit
        addresses through it, one per direct address of the relay we know.

        Raises ``PeerUnreachable`` when the relay cannot be reached or refuses.
        """
        if self._relay_transport is None or self._nursery is None:
            raise ProtocolError("relays are off on this host")
        pid = _parse_peer_id(relay_peer)
        given = [_transport_addr(a, relay_peer) for a in addrs if CIRCUIT not in a]
        if given:
            self._host.get_peerstore().add_addrs(pid, given, ADDR_TTL)
        with trio.move_on_after(timeout):
            await self._ensure_connected(pid, given)
            stream = await self._host.new_stream(pid, [HOP_PROTOCOL_ID])
            try:
                ok = await self._relay_transport.reserve(stream, pid, self._nursery)
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await stream.close()
                    except Exception:
                        pass
            if not ok:
                self._circuits.pop(relay_peer, None)
                raise PeerUnreachable(f"relay {relay_peer} refused a reservation", peer=relay_peer)
            direct: list[str] = []
            for a in self._candidates(pid, given):
                text = str(a).removesuffix(f"/p2p/{relay_peer}")
                if CIRCUIT not in text and not _is_wildcard(text) and text not in direct:
                    direct.append(text)
            circuits = [f"{a}/p2p/{relay_peer}{CIRCUIT}/p2p/{self.peer_id}" for a in direct]
            self._circuits[relay_peer] = circuits
            return circuits
        raise PeerUnreachable(f"relay {relay_peer}: no reservation within {timeout:g} s", peer=relay_peer)

    def drop_reservation(self, relay_peer: str) -> None:
        """Stop advertising circuits through ``relay_peer`` (it expired or went away)."""
        self._circuits.pop(relay_peer, None)

    def relays(self) -> list[str]:
        """The relays we hold a reservation on (and advertise circuits through)."""
        return list(self._circuits)

    # -- reachability (a dial back, AutoNAT's idea on a protocol of ours) ----------------

    def serve_dial_back(self, allow: Callable[[str], bool]) -> None:
        """Answer admitted peers' :meth:`dial_back` requests: a fresh TCP connection to
        each port they name, at the address their connection to us comes from (never
        another address: a member cannot aim us at a third party)."""

        async def serve(net_stream: INetStream) -> None:
            peer = str(net_stream.muxed_conn.peer_id)
            try:
                if not allow(peer) or _is_relayed(net_stream.muxed_conn):
                    await net_stream.write(bytes([0]))
                    return
                with trio.fail_after(DIAL_BACK_TIMEOUT):
                    count = (await _read_exactly(net_stream, 1))[0]
                    raw = await _read_exactly(net_stream, 2 * min(count, DIAL_BACK_MAX_PORTS))
                ports = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
                remote = net_stream.get_remote_address()
                results = bytearray([len(ports)])
                for port in ports:
                    ok = False
                    if remote is not None and 0 < port < 65536:
                        with trio.move_on_after(DIAL_BACK_TIMEOUT):
                            try:
                                sock = await trio.open_tcp_stream(remote[0], port)
                                await sock.aclose()
                                ok = True
                            except OSError:
                                pass
                    results.append(1 if ok else 0)
                if remote is not None:
                    results += remote[0].encode()[:64]
                await net_stream.write(bytes(results))
            except Exception:
                log.debug("dial-back for %s failed", peer, exc_info=True)
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await net_stream.close()
                    except Exception:
                        pass

        self._host.set_stream_handler(TProtocol(DIAL_BACK_PROTOCOL), serve)

    async def dial_back(self, peer_id: str, *, timeout: float = 15.0) -> list[str] | None:
        """Ask ``peer_id`` (over a direct connection) to dial our listen ports at the
        address it sees us at. The addresses it reached, ``[]`` when none, or None when
        it could not tell (not directly connected, refused, no answer)."""
        if self.connection(peer_id) != "direct":
            return None
        ports: list[int] = []
        for a in self.listen_addrs():
            port = int(multiaddr.Multiaddr(a).value_for_protocol("tcp") or 0)
            if port and port not in ports:
                ports.append(port)
        if not ports:
            return None
        ports = ports[:DIAL_BACK_MAX_PORTS]
        with trio.move_on_after(timeout):
            try:
                stream = await self._host.new_stream(_parse_peer_id(peer_id), [TProtocol(DIAL_BACK_PROTOCOL)])
            except Exception:
                log.debug("no dial-back stream to %s", peer_id, exc_info=True)
                return None
            try:
                await stream.write(bytes([len(ports)]) + b"".join(p.to_bytes(2, "big") for p in ports))
                head = await _read_exactly(stream, 1)
                if head[0] != len(ports):
                    return None
                flags = await _read_exactly(stream, len(ports))
                seen = b""
                while len(seen) < 64:
                    try:
                        more = await stream.read(64 - len(seen))
                    except StreamError:  # EOF: the answer is complete
                        break
                    if not more:
                        break
                    seen += more
                ip = ipaddress.ip_address(seen.decode())
            except Exception:
                log.debug("dial-back by %s failed", peer_id, exc_info=True)
                return None
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await stream.close()
                    except Exception:
                        pass
            proto = "ip4" if ip.version == 4 else "ip6"
            return [f"/{proto}/{ip}/tcp/{p}" for p, ok in zip(ports, flags, strict=True) if ok]
        return None

    def connection(self, peer_id: str) -> str:
        """``"direct"``, ``"relayed"`` or ``"none"``: our best live connection to the peer."""
        try:
            pid = _parse_peer_id(peer_id)
        except ValueError:
            return "none"
        live = [c for c in self._swarm.connections.get(pid, []) if not c.is_closed]
        if not live:
            return "none"
        return "relayed" if all(_is_relayed(c) for c in live) else "direct"

    async def _serve_hop(self, net_stream: INetStream) -> None:
        """The hop protocol for admitted peers only (module docstring)."""
        proto = self._relay_proto
        peer = str(net_stream.muxed_conn.peer_id)
        try:
            if proto is None or not self._relay_allow(peer):
                log.info("relay refused to %s: not a member", peer)
                refusal = HopMessage(
                    type=HopMessage.STATUS, status=to_proto_status(StatusCode.PERMISSION_DENIED)
                )
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await write_delimited_msg(net_stream, refusal)
                    await net_stream.close()
                return
            await proto._handle_hop_stream(net_stream)
        except Exception:
            log.warning("relay hop stream from %s failed", peer, exc_info=True)
            with trio.move_on_after(1):
                try:
                    await net_stream.reset()
                except Exception:
                    pass

    async def _close_connections(self) -> None:
        # libp2p's shutdown cancels its connections without closing the sockets of the
        # ones we dialed (they leak until garbage collection): close every one first.
        # Shielded, so that leaving on cancellation cleans up too; bounded, so that a
        # frozen peer cannot hold the exit.
        async def close(pid: ID) -> None:
            try:
                await self._swarm.close_peer(pid)
            except Exception:
                log.debug("closing the connections to %s failed", pid, exc_info=True)

        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for pid in list(self._swarm.connections):
                    nursery.start_soon(close, pid)

    # -- discovery -------------------------------------------------------------------

    def on_peer_discovered(self, cb: DiscoveryCallback) -> None:
        """Call ``cb(peer_id, addrs)`` in the trio thread for each peer mDNS finds.

        Only with ``open_host(..., mdns=True)``. Discovery is not trust: callers decide
        whom to send anything.
        """
        self._discovery_cbs.append(cb)

    def _start(self, mdns: bool) -> None:
        if not mdns:
            return
        self._trio_token = trio.lowlevel.current_trio_token()
        peerDiscovery.register_peer_discovered_handler(self._on_discovered_threadsafe)
        # Built here rather than by new_host(enable_mDNS=True): libp2p would advertise
        # the wildcard listen address (/ip4/0.0.0.0/...), which no peer can dial.
        advertised = [a for a in self.addrs() if not _is_loopback(a)] or self.addrs()
        port = int(multiaddr.Multiaddr(advertised[0]).value_for_protocol("tcp") or 0)
        self._mdns = MDNSDiscovery(self._swarm, port=port, listen_addrs=advertised)
        self._mdns.start()

    def _stop(self) -> None:
        if self._mdns is not None:
            try:
                self._mdns.stop()
            except Exception:
                log.debug("stopping mDNS failed", exc_info=True)
            self._mdns = None
        if self._trio_token is not None:
            peerDiscovery.unregister_peer_discovered_handler(self._on_discovered_threadsafe)
            self._trio_token = None

    def _on_discovered_threadsafe(self, info: PeerInfo) -> None:
        # Runs in zeroconf's thread; libp2p's event hub is process-wide, so it also
        # reports what other hosts of this process found (harmless: it is a hint only).
        token = self._trio_token
        peer = str(info.peer_id)
        if token is None or peer == self.peer_id:
            return
        # A wildcard address (what libp2p's own mDNS advertises) cannot be dialed.
        addrs = [f"{a}/p2p/{peer}" for a in info.addrs if not _is_wildcard(str(a))]
        if not addrs:
            return
        try:
            token.run_sync_soon(self._dispatch_discovered, peer, addrs)
        except trio.RunFinishedError:
            pass

    def _dispatch_discovered(self, peer: str, addrs: list[str]) -> None:
        for cb in list(self._discovery_cbs):
            try:
                cb(peer, addrs)
            except Exception:
                log.warning("peer-discovered callback failed for %s", peer, exc_info=True)


@asynccontextmanager
async def open_host(
    identity_seed: bytes,
    listen: Sequence[str] = ("/ip4/0.0.0.0/tcp/0",),
    *,
    mdns: bool = False,
    relay: RelayOptions | None = None,
) -> AsyncIterator[P2PHost]:
    """Run a host with the identity of ``identity_seed``, listening on ``listen``.

    Must be entered inside trio; on exit the listeners and all connections are closed.
    ``relay`` says whether we relay for others, our rate over relays and whether we
    punch holes (module docstring); relayed connections are always accepted and dialed.
    """
    key_pair = _key_pair(identity_seed)
    listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
    host = new_host(
        key_pair=key_pair,
        # Noise only: the default table also offers plaintext, TLS and secio.
        sec_opt={
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=new_x25519_key_pair().private_key
            )
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=listen_addrs,
    )
    assert isinstance(host, BasicHost)
    swarm = host.get_network()
    assert isinstance(swarm, Swarm)
    # One attempt per address: retrying is the caller's decision, and libp2p's backoff
    # (0.1 + 0.2 + 0.4 s per address) would only delay a PeerUnreachable.
    swarm.retry_config = RetryConfig(max_retries=0)
    options = relay or RelayOptions()
    p2p = P2PHost(host, str(host.get_id()), options)
    limits = RelayLimits(
        duration=options.circuit_seconds,
        data=options.circuit_bytes,
        max_circuit_conns=options.max_circuits,
        max_reservations=options.max_reservations,
        reservation_ttl=options.reservation_seconds,
    )
    proto = _MemberRelay(host, limits=limits, allow_hop=options.hop)
    proto.circuit_rate = options.circuit_rate
    # STOP only: the transport must not reserve on a relay it dials through.
    transport = CircuitV2Transport(host, proto, RelayConfig(roles=RelayRole.STOP, limits=limits))
    p2p._relay_proto, p2p._relay_transport = proto, transport
    async with host.run(listen_addrs), trio.open_nursery() as nursery:
        if len(swarm.listeners) < len(listen_addrs):
            bound = [str(a) for a in host.get_transport_addrs()]
            raise ProtocolError(
                f"cannot listen on {', '.join(listen)} (bound: {', '.join(bound) or 'none'})",
                hint="is another daemon using the port?",
            )
        p2p._nursery = nursery
        # libp2p's services run under managers in our nursery (not its
        # background_trio_service, whose exit swallows an exception of the body).
        managers: list[TrioManager] = []

        async def start(service: Any) -> None:
            manager = TrioManager(service)
            service._manager = manager
            nursery.start_soon(manager.run)
            await manager.wait_started()
            managers.append(manager)

        try:
            await start(proto)
            await proto.event_started.wait()
            if options.hop:  # replaces libp2p's handler with the gated one
                host.set_stream_handler(HOP_PROTOCOL_ID, p2p._serve_hop)
            if options.hole_punch:
                await start(_InboundOnlyDCUtR(host, dial_timeout=HOLE_PUNCH_DIAL_TIMEOUT))
            p2p._start(mdns)
            yield p2p
        finally:
            p2p._stop()
            await p2p._close_connections()
            for manager in managers:
                manager.cancel()
            nursery.cancel_scope.cancel()


def _key_pair(seed: bytes) -> KeyPair:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"identity seed must be {SEED_BYTES} bytes, got {len(seed)}")
    private = Ed25519PrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


def _parse_peer_id(peer_id: str) -> ID:
    try:
        return ID.from_base58(peer_id)
    except Exception as e:
        raise ValueError(f"not a PeerID: {peer_id!r}") from e


def _transport_addr(addr: str, peer_id: str) -> multiaddr.Multiaddr:
    """``addr`` without its ``/p2p/<id>`` part, which must name ``peer_id`` if present.

    A circuit address (``<relay>/p2p/<relay id>/p2p-circuit/p2p/<peer>``) is kept whole:
    its last ``/p2p`` must name ``peer_id``, or is added."""
    if CIRCUIT in addr:
        relay_part, _, target = addr.partition(CIRCUIT)
        target = target.strip("/")
        if target and target != f"p2p/{peer_id}":
            raise ValueError(f"circuit address {addr} leads to another peer than {peer_id}")
        multiaddr.Multiaddr(relay_part)  # a malformed relay part fails here
        return multiaddr.Multiaddr(f"{relay_part}{CIRCUIT}/p2p/{peer_id}")
    maddr = multiaddr.Multiaddr(addr)
    try:
        named = maddr.value_for_protocol("p2p")
    except Exception:  # ProtocolLookupError: no /p2p part
        named = None
    if named:
        if named != peer_id:
            raise ValueError(f"address {addr} belongs to {named}, not {peer_id}")
        maddr = maddr.decapsulate(multiaddr.Multiaddr(f"/p2p/{named}"))
    return maddr


def _expand_wildcard(addr: multiaddr.Multiaddr) -> list[str]:
    """``/ip4/0.0.0.0/...`` as one address per IPv4 interface (loopback included);
    ``/ip6/::/...`` likewise for IPv6 (link-local left out: it needs a zone)."""
    text = str(addr)
    for proto, wildcard, version in (("ip4", "0.0.0.0", 4), ("ip6", "::", 6)):
        prefix = f"/{proto}/{wildcard}/"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            ips = _interface_ips(version)
            return [f"/{proto}/{ip}/{rest}" for ip in ips]
    return [text]


def _interface_ips(version: int) -> list[str]:
    ips: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(raw)
            except ValueError:
                continue
            if parsed.version != version or parsed.is_link_local:
                continue
            if str(parsed) not in ips:
                ips.append(str(parsed))
    loopback = "127.0.0.1" if version == 4 else "::1"
    if loopback in ips:  # loopback last: LAN peers should try a LAN address first
        ips.remove(loopback)
    ips.append(loopback)
    return ips


def _is_loopback(addr: str) -> bool:
    return addr.startswith(("/ip4/127.", "/ip6/::1/"))


def _is_wildcard(addr: str) -> bool:
    return addr.startswith(("/ip4/0.0.0.0/", "/ip6/::/"))


def _describe(e: BaseException) -> str:
    """One line for an error from libp2p, with the cause it wraps (often the real one)."""
    text = str(e) or type(e).__name__
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({cause})"
    return text
