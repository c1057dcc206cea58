"""Repair by any member: when an owner is away, who repairs its packs, without doubling work.

In a group every member reads every placement record (shares are ciphertext, and RS
decoding needs no key), so any member can rebuild an absent owner's missing shares from any
k and place them on new holders. This core decides *whether* a member should, and *which*
member, from facts the runtime passes in:

- **Owner away** (:func:`owner_away`): the owner has not been seen (no answer, no catalog
  news) for ``owner_away_after`` seconds. While the owner is around it repairs its own packs;
  members never touch them.
- **Leases** (:class:`Lease`): a member that means to repair a pack writes a lease (pack,
  owner, until) in *its own* catalog partition, so the lease syncs to everyone like any
  record; it renews it while it works and drops it (a tombstone) when done.
- **Turns** (:func:`claim_delay`): the members rank themselves per pack by rendezvous hash
  (``BLAKE3(domain || pack || peer)``, lowest first); the best-ranked live member claims at
  once, the r-th waits ``r * stagger`` seconds and claims only if it still sees no lease: in
  the usual case the first claim has synced to the others before their turn comes.
- **Decision** (:func:`decide`), each time before working on a pack:

  * no valid lease by another member: ``CLAIM`` (write one, let it sync for ``settle``
    seconds, decide again), or ``REPAIR`` if this member already holds a valid lease;
  * valid leases by others: the best-ranked lease holder among all valid leases repairs
    (deterministic tie-break: every member computes the same winner from the same records);
    a member holding a losing lease ``YIELD``\\ s it (tombstone), one without ``DEFER``\\ s.

  A lease is valid until its ``until`` (wall-clock milliseconds; the catalog's clocks are
  HLC-checked, and a lease lasts minutes, far beyond clock skew between members).

What this guarantees: two members that claim concurrently both see both leases after the
settle round and exactly one (the best-ranked) repairs; a member that sees a valid lease
never claims. (A member cut off from all others during the settle round could still repair
a pack another repairs; the owner, on return, keeps one holder per share index and deletes
the surplus, so even then no index is *counted* twice.)

Pure: no I/O, no clock (``now`` passed in), no randomness. Decisions carry reasons.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blake3 import blake3

_DOMAIN = b"corestate repair lease rank v1"
DEFAULT_LEASE = 600.0  # seconds a lease lasts unless renewed
DEFAULT_STAGGER = 5.0  # seconds between members' turns to claim a pack


@dataclass(frozen=True, slots=True)
class Lease:
    """``repairer`` repairs ``pack`` of ``owner`` until ``until_ms`` (wall clock, ms)."""

    pack: bytes
    owner: str
    repairer: str
    until_ms: int


class Action(enum.Enum):
    NONE = "none"  # nothing for a member to do (the owner is around)
    CLAIM = "claim"  # write a lease, let it settle, decide again
    REPAIR = "repair"  # this member holds the winning lease: repair now
    DEFER = "defer"  # another member repairs it
    YIELD = "yield"  # this member's lease lost the tie-break: drop it


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    winner: str | None = None  # the member that repairs, when known


def rank(pack: bytes, peer: str) -> bytes:
    """A member's place in the order for ``pack`` (lower first); the same on every member."""
    return blake3(_DOMAIN + bytes(pack) + peer.encode("utf-8")).digest()


def order(pack: bytes, members: Iterable[str]) -> list[str]:
    return sorted(set(members), key=lambda p: rank(pack, p))


def owner_away(last_seen: float | None, now: float, away_after: float) -> tuple[bool, str]:
    """Whether the owner counts as away, and why. ``last_seen`` None: never seen by this
    member (it is away only once ``away_after`` passed since the member started watching,
    which the runtime expresses by passing its start time instead)."""
    if last_seen is None:
        return True, "never seen"
    gone = now - last_seen
    if gone >= away_after:
        return True, f"not seen for {gone:.0f}s (owner_away_after is {away_after:.0f}s)"
    return False, f"seen {gone:.0f}s ago (owner_away_after is {away_after:.0f}s)"


def claim_delay(pack: bytes, me: str, members: Iterable[str], stagger: float = DEFAULT_STAGGER) -> float:
    """How long ``me`` waits before claiming ``pack``: its rank among the live ``members``
    (itself included; the owner is not among them) times ``stagger``."""
    ranked = order(pack, [*members, me])
    return ranked.index(me) * stagger


def decide(pack: bytes, owner: str, me: str, leases: Sequence[Lease], now_ms: int, *,
           away: bool) -> Decision:
    """What ``me`` does about ``pack`` of ``owner`` given every lease it can read."""
    if me == owner:
        return Decision(Action.NONE, "the owner repairs its own packs (node/core/repair.py)")
    if not away:
        return Decision(Action.NONE, "the owner is around: it repairs its own packs")
    valid = [le for le in leases if le.pack == pack and le.owner == owner and le.until_ms > now_ms
             and le.repairer != owner]
    mine = [le for le in valid if le.repairer == me]
    others = [le for le in valid if le.repairer != me]
    if not others:
        if mine:
            return Decision(Action.REPAIR, f"this member holds the only valid lease (until {mine[0].until_ms} ms)",
                            me)
        return Decision(Action.CLAIM, "no valid lease for this pack: claim it, let the claim settle, decide again")
    best = min(valid, key=lambda le: (rank(pack, le.repairer), le.repairer))
    if best.repairer == me:
        return Decision(Action.REPAIR, f"{len(valid)} valid leases; this member ranks first for the pack", me)
    if mine:
        return Decision(Action.YIELD, f"{len(valid)} valid leases; {best.repairer[-8:]} ranks first: drop ours",
                        best.repairer)
    return Decision(Action.DEFER, f"{best.repairer[-8:]} holds a valid lease until {best.until_ms} ms",
                    best.repairer)


def renew_due(lease: Lease, now_ms: int, lease_ms: int) -> bool:
    """Renew a lease once less than half its term is left."""
    return lease.until_ms - now_ms < lease_ms // 2


__all__ = ["DEFAULT_LEASE", "DEFAULT_STAGGER", "Action", "Decision", "Lease", "claim_delay", "decide", "order",
           "owner_away", "rank", "renew_due"]
