"""Reachability: can members reach this node from outside its network, and on which
members should it reserve relay slots. Pure: probe results and times in, verdicts with
their reasons out.

A probe is one member's dial-back (``protocol.p2p.P2PHost.dial_back``): the addresses it
reached us at (``[]``: none), or None when it could not tell. Invariants:

- ``public`` needs one member that reached us; ``private`` needs at least one member that
  tried and reached nothing; no answer at all is ``unknown`` (never a guess);
- a relay that failed is not tried again before ``retry_after`` seconds;
- a node never relays through itself, and keeps at most ``want`` relays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

STATES = ("public", "private", "unknown")


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # one of STATES
    reason: str
    public_addrs: tuple[str, ...] = ()


def judge(probes: Mapping[str, list[str] | None]) -> Verdict:
    """The reachability the dial-backs of ``probes`` (member -> result) show."""
    answered = {p: r for p, r in probes.items() if r is not None}
    if not answered:
        why = "no member to ask" if not probes else f"none of {len(probes)} member(s) could dial back"
        return Verdict("unknown", why)
    reached = sorted({a for r in answered.values() for a in r})
    if reached:
        who = sorted(p for p, r in answered.items() if r)
        return Verdict("public", f"{len(who)} member(s) reached us at {', '.join(reached)}", tuple(reached))
    return Verdict("private", f"{len(answered)} member(s) tried and could not reach our listen port")


def relays_to_try(members: Iterable[str], me: str, have: Iterable[str], failed: Mapping[str, float],
                  now: float, want: int, retry_after: float = 60.0) -> list[str]:
    """Members to ask for a reservation now, in a stable order (the caller stops once it
    holds ``want``); none when it holds enough already."""
    held = set(have)
    need = want - len(held)
    if need <= 0:
        return []
    out = [p for p in sorted(set(members)) if p != me and p not in held
           and now - failed.get(p, -retry_after) >= retry_after]
    return out


__all__ = ["STATES", "Verdict", "judge", "relays_to_try"]
