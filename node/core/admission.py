"""Admission: how much of a node the share service gives each peer at once.

A request enters the scopes of its peer, of all strangers (when it is one: neither a group
member nor a peer the user added) and of everyone; it fits when every scope stays within
its limits of streams and of bulk bytes (PUT and GET bodies) in flight. A bulk size above a
scope's whole limit still fits when that scope has no bulk in flight, so that one big
request is served alone rather than never. The runtime refuses strangers that do not fit
at once and lets members wait (SPEC 8.5, "Limits").

Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """What one scope (a peer, all strangers, everyone) may have in flight at once."""

    streams: int
    bulk: int  # bytes of PUT and GET bodies under way


# Members and peers the user added; strangers (each, and all together); everyone.
MEMBER_LIMITS = Limits(streams=16, bulk=2 << 30)
STRANGER_LIMITS = Limits(streams=3, bulk=64 << 20)
STRANGERS_LIMITS = Limits(streams=8, bulk=128 << 20)
TOTAL_LIMITS = Limits(streams=64, bulk=4 << 30)
_STRANGERS, _ALL = " strangers", " all"  # scope keys no PeerID can equal


class Admission:
    """Streams and bulk bytes in flight, per scope (see the module docstring)."""

    def __init__(self, member: Limits = MEMBER_LIMITS, stranger: Limits = STRANGER_LIMITS,
                 strangers: Limits = STRANGERS_LIMITS, total: Limits = TOTAL_LIMITS) -> None:
        self.member, self.stranger, self.strangers, self.total = member, stranger, strangers, total
        self.streams: Counter[str] = Counter()
        self.bulk: Counter[str] = Counter()

    def _scopes(self, peer: str, stranger: bool) -> list[tuple[str, Limits]]:
        if stranger:
            return [(peer, self.stranger), (_STRANGERS, self.strangers), (_ALL, self.total)]
        return [(peer, self.member), (_ALL, self.total)]

    def try_enter(self, peer: str, stranger: bool, *, streams: int = 0, bulk: int = 0) -> bool:
        scopes = self._scopes(peer, stranger)
        for key, lim in scopes:
            if self.streams[key] + streams > lim.streams:
                return False
            if bulk and self.bulk[key] and self.bulk[key] + bulk > lim.bulk:
                return False
        for key, _ in scopes:
            self.streams[key] += streams
            self.bulk[key] += bulk
        return True

    def leave(self, peer: str, stranger: bool, *, streams: int = 0, bulk: int = 0) -> None:
        for key, _ in self._scopes(peer, stranger):
            self.streams[key] -= streams
            self.bulk[key] -= bulk
            if self.streams[key] <= 0 and self.bulk[key] <= 0:
                del self.streams[key], self.bulk[key]


__all__ = ["MEMBER_LIMITS", "STRANGERS_LIMITS", "STRANGER_LIMITS", "TOTAL_LIMITS", "Admission", "Limits"]
