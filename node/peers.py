"""The address book: peers this node knows, how to reach them, and which it trusts.

Role: a small cache that survives restarts (``peers.db``, sqlitedict with CBOR — never its
pickle default, which would run code from bytes a peer influenced). Discovery is not
trust: a peer found by mDNS is listed with ``trusted = False`` and gets no shares; only
``corestate peer add`` (or group membership) makes a peer trusted.

Invariant: addresses the user or the group gave are pinned: discovery (an mDNS
announcement carries any PeerID a LAN host likes, a trusted one's too) never removes or
reorders them; it adds at most MAX_FOUND addresses per peer, dialed after the pinned
ones, and at most MAX_UNTRUSTED untrusted peers in all.

Multiaddrs are checked here, with the PeerID they must end in, so a typo is caught when
the user types it and not at the first backup.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from sqlitedict import SqliteDict

from corestate.errors import CoreStateError

log = logging.getLogger("corestate.peers")

_PEER_ID = re.compile(r"^(12D3Koo[1-9A-HJ-NP-Za-km-z]{44,46}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")


class BadAddress(CoreStateError):
    def __init__(self, addr: str, reason: str) -> None:
        super().__init__(f"{addr!r} is not a peer address: {reason}",
                         hint="a peer address looks like /ip4/192.168.1.7/tcp/4001/p2p/12D3KooW...; "
                              "`corestate node info` on that peer prints its addresses")
        self.addr = addr


def split_peer_addr(addr: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/5/p2p/ID`` -> (ID, ``/ip4/1.2.3.4/tcp/5``)."""
    parts = addr.strip().split("/")
    if len(parts) < 3 or parts[0] != "":
        raise BadAddress(addr, "it must start with / (a multiaddr)")
    if "p2p" not in parts:
        raise BadAddress(addr, "it must end with /p2p/<peer id>")
    i = len(parts) - 1 - parts[::-1].index("p2p")
    if i != len(parts) - 2:
        raise BadAddress(addr, "/p2p/<peer id> must come last")
    peer = parts[-1]
    if not _PEER_ID.match(peer):
        raise BadAddress(addr, f"{peer!r} is not a PeerID")
    transport = "/".join(parts[:i])
    if transport:
        t = transport.split("/")
        if len(t) < 5 or t[1] not in ("ip4", "ip6", "dns", "dns4", "dns6") or t[3] != "tcp" \
                or not (t[4].isascii() and t[4].isdigit()) or not 0 < int(t[4]) < 65536:
            raise BadAddress(addr, "only /ip4|ip6|dns/<host>/tcp/<port> transports are supported")
    return peer, transport


def valid_peer_id(peer: str) -> bool:
    return bool(_PEER_ID.match(peer))


# Bounds on what discovery may write (anyone on the LAN can announce anything): a few
# addresses per peer, after the pinned ones and never displacing them, and a bounded
# number of untrusted peers overall (the least recently seen go first).
MAX_PINNED = 16
MAX_FOUND = 4
MAX_UNTRUSTED = 256


@dataclass(slots=True)
class PeerEntry:
    """``pinned``: addresses the user (``peer add``) or the group (an invite, a member's
    advert) gave — only such a source changes them; ``found``: addresses discovery saw,
    at most MAX_FOUND, newest first. ``addrs`` is the dial order: pinned, then found."""

    peer: str
    pinned: list[str] = field(default_factory=list)
    trusted: bool = False
    source: str = "user"  # "user" or "mdns"
    domains: list[str] = field(default_factory=list)  # failure-domain labels, e.g. [site, host]
    added_ns: int = 0
    seen_ns: int = 0
    found: list[str] = field(default_factory=list)

    @property
    def addrs(self) -> list[str]:
        return self.pinned + [a for a in self.found if a not in self.pinned]

    def to_obj(self) -> dict[str, Any]:
        return {"addrs": self.pinned, "found": self.found, "trusted": self.trusted, "source": self.source,
                "domains": self.domains, "added_ns": self.added_ns, "seen_ns": self.seen_ns}

    @classmethod
    def from_obj(cls, peer: str, o: Any) -> PeerEntry:
        # Whatever the file holds (a damaged or hand-edited entry): what is not of its
        # field's type reads as the field's default, never as an exception.
        if not isinstance(o, dict):
            return cls(peer)
        addrs = _strs(o.get("addrs"))
        found = _strs(o.get("found"))
        if "found" not in o and o.get("source") == "mdns":
            addrs, found = [], addrs  # written before addresses were kept apart
        source = o.get("source", "user")
        return cls(peer, addrs[:MAX_PINNED], o.get("trusted") is True,
                   source if isinstance(source, str) else "user", _strs(o.get("domains"))[:4],
                   _ns(o.get("added_ns")), _ns(o.get("seen_ns")), found[:MAX_FOUND])

    def note_found(self, addrs: list[str]) -> None:
        """Addresses discovery saw: newest first, bounded, never a pinned one twice."""
        for a in addrs:
            if a and a not in self.pinned:
                if a in self.found:
                    self.found.remove(a)
                self.found.insert(0, a)
        del self.found[MAX_FOUND:]


def _strs(v: object) -> list[str]:
    return [a for a in v if isinstance(a, str)] if isinstance(v, list) else []


def _ns(v: object) -> int:
    return v if type(v) is int else 0


class AddressBook:
    def __init__(self, path: Path) -> None:
        self._db = SqliteDict(str(path), tablename="peers", autocommit=True,
                              encode=cbor2.dumps, decode=cbor2.loads)

    def close(self) -> None:
        self._db.close()

    def _put(self, peer: str, obj: Any | None) -> None:
        """Write (or delete, ``obj`` None) one entry and wait for its commit. sqlitedict
        writes from a thread of its own and raises a failed write (a full disk) at the
        *next* call on the book, whichever that is: waiting here raises it to the caller
        that wrote, and only once."""
        if obj is None:
            del self._db[peer]
        else:
            self._db[peer] = obj
        self._db.commit()

    def get(self, peer: str) -> PeerEntry | None:
        o = self._db.get(peer)
        return None if o is None else PeerEntry.from_obj(peer, o)

    def all(self) -> list[PeerEntry]:
        return sorted((PeerEntry.from_obj(k, v) for k, v in self._db.items()), key=lambda e: e.peer)

    def trusted(self) -> list[PeerEntry]:
        return [e for e in self.all() if e.trusted]

    def add(self, peer: str, addrs: list[str], *, trusted: bool, source: str = "user",
            domains: list[str] | None = None) -> PeerEntry:
        """Record ``peer``. From the user or the group (``source`` "user"): its addresses are
        pinned and its trust set. From discovery (any other source): its addresses are
        only noted as found (bounded, after the pinned ones), trust is left alone, and a
        new peer pushes out the least recently seen discovered ones beyond MAX_UNTRUSTED."""
        e = self.get(peer)
        if e is None:
            e = PeerEntry(peer, source=source, added_ns=time.time_ns())
            if source != "user":
                self._make_room()
        if source == "user":
            for a in addrs:
                if a and a not in e.pinned:
                    e.pinned.insert(0, a)
                if a in e.found:
                    e.found.remove(a)
            del e.pinned[MAX_PINNED:]
            e.trusted = trusted
            e.source = "user"
            if domains is not None:
                e.domains = domains
        else:
            e.note_found(addrs)
            e.seen_ns = time.time_ns()
        self._put(peer, e.to_obj())
        return e

    def _make_room(self) -> None:
        """Room for one more discovered peer: the least recently seen discovered untrusted
        peers beyond the bound go (never a trusted or user-added one)."""
        loose = sorted((e for e in self.all() if not e.trusted and e.source != "user"),
                       key=lambda e: (e.seen_ns, e.added_ns))
        while len(loose) >= MAX_UNTRUSTED:
            self._put(loose.pop(0).peer, None)

    def seen(self, peer: str, addrs: list[str] | None = None) -> None:
        """``peer`` answered (from ``addrs``, when known): noted as found, never pinned.
        Best effort: a note that cannot be written (a full disk) is logged, never raised;
        the backup or sync round that heard the peer goes on without it."""
        e = self.get(peer)
        if e is None:
            return
        e.seen_ns = time.time_ns()
        e.note_found(addrs or [])
        try:
            self._put(peer, e.to_obj())
        except sqlite3.Error as exc:
            log.warning("could not note that %s answered: %s", peer[-8:], exc)

    def remove(self, peer: str) -> bool:
        if peer in self._db:
            self._put(peer, None)
            return True
        return False
