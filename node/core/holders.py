"""Holders over time: what to audit, how far to trust each holder, when one counts as lost.

Three sans-I/O pieces, used by the daemon (node/runtime/health.py) and by the simulator:

**The audit planner** (:class:`AuditPlanner`). Each audit round (the scheduler core runs
``Job.AUDIT`` every ``[schedule] audit_every``) it picks, from the ``rng`` passed in,
``spot_per_round`` random shares of holders still trusted (ok or suspect), and for each a
random block (:class:`Challenge` with a ``block``): the holder answers with the block and its
Merkle path, checked against the root recorded at upload. A suspect holder's shares are
challenged ``suspect_factor`` times as often (containment: a doubt is settled fast). Beside
the spot checks, a slower *whole-share cycle* verifies every share in full (a GET checked
block by block against its root) once per ``whole_cycle``: the planner walks the shares in
a fixed order (by pack, index, holder) from a cursor, ``ceil(len(shares) * audit_every /
whole_cycle)`` of them per round, so the cycle covers everything however the shares change.
A holder that kept only some blocks of a share is caught by the spot checks with probability
``1 - kept_fraction`` per challenge, and for certain by the cycle. The runtime must pass an
unpredictable ``rng`` (a CSPRNG: a holder that could predict the block could keep only it);
tests and the simulator pass a seeded one.

**Reputation** (:class:`HolderBook`). Each audit result moves a holder's score (the
daemon reports one per holder per audit round or repair survey: failed if any share it was
asked about failed — node/app/health.py ``per_holder``), a beta
reputation with forgetting in the spirit of Storj's audit score: ``alpha <- lam * alpha +
pass``, ``beta <- lam * beta + fail``, ``score = alpha / (alpha + beta)``, starting at
``alpha = 1 / (1 - lam)`` (as if it had always passed), ``lam = 0.95``. States:

- ``ok``: score at or above ``suspect_below`` (0.96): with the defaults one failure makes a
  holder suspect, and about four passes in a row make it ok again;
- ``suspect``: below ``suspect_below``; its shares still count, but it is audited more;
- ``evicted``: below ``evict_below`` (0.85: four failures in a row, more with passes
  between). Final: its shares are rebuilt elsewhere, it gets no new ones, and its copies are
  deleted (signed) when it answers again. Only a person brings it back (not this core).

An audit the holder could not be reached for moves no score: absence is the lost-holder
policy's business, not a proof of bad faith.

**The lost-holder policy** (same object). A holder unreachable for longer than
``holder_lost_after`` counts as ``lost``: its shares no longer count and are rebuilt on
others. When it answers again it is ``ok``/``suspect`` by its score and the command
:class:`Returned` says so: the shares it holds that were rebuilt meanwhile are surplus, to be
deleted (signed); they are never counted twice, because a share index counts once whoever
holds it (node/core/health.py).

Default ``holder_lost_after`` = 3 days (:data:`DEFAULT_LOST_AFTER`). Why: home and
small-office machines are off for ordinary reasons — a night, a weekend away, a reboot
after an update, a few hours of ISP outage — and rebuilding after each would cost the mesh
a pack's worth of reads and writes per share for nothing: the machine comes back with the
data. Three days outlasts a long weekend; beyond that a machine is more likely dead or gone
than asleep. The data's safety does not hinge on it: a k-of-n pack survives n - k
simultaneous losses, and with disk failure rates of a few percent a year the chance that
the remaining margin fails within the same three days is tiny (for 2-of-4 at 5 %/year,
one holder already gone: 3 * (0.05 * 3 / 365)^2, about 5e-7 per pack). The simulator checks this trade-off.

Interface (all times are seconds on one monotonic scale, passed in):

- ``HolderBook(config, records=())``, ``handle(event, now) -> list[Command]``,
  ``next_deadline() -> float | None`` (the next time a holder would turn lost),
  ``state(peer)``, ``records()`` (to persist; ``HolderBook(config, records)`` resumes).
- Events: :class:`Known` (a holder got a share: starts its clock), :class:`Answered`,
  :class:`Unanswered`, :class:`Seen` (heard from at some time by other means), :class:`Audited` (``passed``), :class:`Tick`. Only a ``Tick``
  turns holders lost: feed a round's answers, then a ``Tick``.
- Commands: :class:`StateChanged` (old, new, reason) and :class:`Returned`.
- ``AuditPlanner(config, cursor=0)``, ``plan(shares, states, now, rng) -> list[Challenge]``.

Pure: no I/O, no clock, no global randomness. Every decision carries its reason in words.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

DEFAULT_LOST_AFTER = 3 * 86400.0
DEFAULT_WHOLE_CYCLE = 30 * 86400.0


class HolderState(enum.Enum):
    """What a holder is to this node. The values leave the process (``health --json``)."""

    OK = "ok"
    SUSPECT = "suspect"
    EVICTED = "evicted"
    LOST = "lost"


COUNTS = frozenset({HolderState.OK, HolderState.SUSPECT})  # whose shares count as held


@dataclass(frozen=True, slots=True)
class HolderConfig:
    holder_lost_after: float = DEFAULT_LOST_AFTER
    forgetting: float = 0.95  # lam: how fast old audit results fade
    suspect_below: float = 0.96
    evict_below: float = 0.85

    def __post_init__(self) -> None:
        if not 0 < self.forgetting < 1:
            raise ValueError("forgetting is in (0, 1)")
        if not 0 <= self.evict_below < self.suspect_below <= 1:
            raise ValueError("need 0 <= evict_below < suspect_below <= 1")
        if self.holder_lost_after <= 0:
            raise ValueError("holder_lost_after must be positive")


@dataclass(frozen=True, slots=True)
class HolderRecord:
    """One holder's standing; what the runtime persists."""

    peer: str
    alpha: float
    beta: float
    passed: int = 0
    failed: int = 0
    last_seen: float | None = None  # last answer (or when it got its first share)
    evicted: bool = False
    lost: bool = False

    @property
    def score(self) -> float:
        return self.alpha / (self.alpha + self.beta)


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Known:
    """``peer`` holds (or just got) shares of ours: its absence is timed from now on."""

    peer: str


@dataclass(frozen=True, slots=True)
class Answered:
    """``peer`` answered a request (any answer, even an error, proves it is there)."""

    peer: str


@dataclass(frozen=True, slots=True)
class Unanswered:
    peer: str


@dataclass(frozen=True, slots=True)
class Seen:
    """``peer`` was heard from at time ``at`` by other means (a catalog sync, a capacity
    request): its absence is timed from then, if that is later than what the book knew."""

    peer: str
    at: float


@dataclass(frozen=True, slots=True)
class Audited:
    """An audit of ``peer`` ended: ``passed`` (proof checks) or not (bad proof, a share it
    should have and says it has not, a whole share that does not verify). ``what`` names
    the share, for the reasons."""

    peer: str
    passed: bool
    what: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    pass


HolderEvent = Known | Answered | Unanswered | Audited | Seen | Tick


# -- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChanged:
    peer: str
    old: HolderState
    new: HolderState
    reason: str


@dataclass(frozen=True, slots=True)
class Returned:
    """A holder counted lost answered again: delete its surplus shares (those rebuilt
    elsewhere meanwhile)."""

    peer: str
    away: float  # seconds since it was last seen before
    reason: str


HolderCommand = StateChanged | Returned


class HolderBook:
    """Every holder's standing (see the module docstring)."""

    def __init__(self, config: HolderConfig | None = None, records: Iterable[HolderRecord] = ()) -> None:
        self.config = config or HolderConfig()
        self._holders = {r.peer: r for r in records}

    # -- queries -------------------------------------------------------------------------

    def state(self, peer: str) -> HolderState:
        r = self._holders.get(peer)
        return HolderState.OK if r is None else self._state(r)

    def _state(self, r: HolderRecord) -> HolderState:
        if r.evicted:
            return HolderState.EVICTED
        if r.lost:
            return HolderState.LOST
        return HolderState.SUSPECT if r.score < self.config.suspect_below else HolderState.OK

    def states(self) -> dict[str, HolderState]:
        return {p: self._state(r) for p, r in self._holders.items()}

    def records(self) -> list[HolderRecord]:
        return [self._holders[p] for p in sorted(self._holders)]

    def record(self, peer: str) -> HolderRecord | None:
        return self._holders.get(peer)

    def next_deadline(self) -> float | None:
        """When the next holder would count as lost (None: nobody can turn lost)."""
        times = [r.last_seen + self.config.holder_lost_after for r in self._holders.values()
                 if not r.lost and not r.evicted and r.last_seen is not None]
        return min(times) if times else None

    # -- the interface -------------------------------------------------------------------

    def handle(self, event: HolderEvent, now: float) -> list[HolderCommand]:
        out: list[HolderCommand] = []
        if isinstance(event, Known):
            if event.peer not in self._holders:
                self._holders[event.peer] = self._fresh(event.peer, now)
        elif isinstance(event, Answered):
            self._answered(event.peer, now, out)
        elif isinstance(event, Audited):
            self._answered(event.peer, now, out)
            self._audited(event, out)
        elif isinstance(event, Seen):
            r = self._holders.get(event.peer)
            if r is None:
                self._holders[event.peer] = self._fresh(event.peer, min(now, event.at))
            elif r.last_seen is None or event.at > r.last_seen:
                self._answered(event.peer, min(now, event.at), out)
        elif isinstance(event, Unanswered) and event.peer not in self._holders:
            # First heard of by not answering: its clock starts now, it is not lost yet.
            self._holders[event.peer] = self._fresh(event.peer, now)
        elif isinstance(event, Tick):
            # Only a Tick turns holders lost: a driver feeds a round's answers first, then
            # a Tick, so a holder is never counted lost just before its answer is read.
            self._expire(now, out)
        return out

    # -- rules ---------------------------------------------------------------------------

    def _fresh(self, peer: str, now: float) -> HolderRecord:
        alpha = 1.0 / (1.0 - self.config.forgetting)
        return HolderRecord(peer, alpha, 0.0, last_seen=now)

    def _set(self, new: HolderRecord, out: list[HolderCommand], reason: str) -> None:
        old = self._holders.get(new.peer)
        before = HolderState.OK if old is None else self._state(old)
        self._holders[new.peer] = new
        after = self._state(new)
        if after is not before:
            out.append(StateChanged(new.peer, before, after, reason))

    def _answered(self, peer: str, now: float, out: list[HolderCommand]) -> None:
        r = self._holders.get(peer) or self._fresh(peer, now)
        if r.lost:
            away = now - (r.last_seen if r.last_seen is not None else now)
            self._set(replace(r, lost=False, last_seen=now), out,
                      f"answered again after {_words(away)} away")
            out.append(Returned(peer, away, f"counted lost, answered again after {_words(away)}: "
                                f"the shares rebuilt elsewhere meanwhile are surplus there"))
            return
        self._holders[peer] = replace(r, last_seen=now)

    def _audited(self, ev: Audited, out: list[HolderCommand]) -> None:
        r = self._holders[ev.peer]
        lam = self.config.forgetting
        alpha = lam * r.alpha + (1.0 if ev.passed else 0.0)
        beta = lam * r.beta + (0.0 if ev.passed else 1.0)
        new = replace(r, alpha=alpha, beta=beta, passed=r.passed + ev.passed, failed=r.failed + (not ev.passed))
        score = alpha / (alpha + beta)
        what = f" ({ev.what})" if ev.what else ""
        if not r.evicted and score < self.config.evict_below:
            new = replace(new, evicted=True)
            reason = (f"failed an audit{what}; audit score {score:.3f} fell below "
                      f"{self.config.evict_below:g} ({new.failed} failed, {new.passed} passed)")
        elif ev.passed:
            reason = f"passed an audit{what}; audit score {score:.3f}"
        else:
            reason = (f"failed an audit{what}; audit score {score:.3f} is below "
                      f"{self.config.suspect_below:g}")
        self._set(new, out, reason)

    def _expire(self, now: float, out: list[HolderCommand]) -> None:
        limit = self.config.holder_lost_after
        for peer in sorted(self._holders):
            r = self._holders[peer]
            if r.lost or r.evicted or r.last_seen is None or now - r.last_seen < limit:
                continue
            self._set(replace(r, lost=True), out,
                      f"unreachable for {_words(now - r.last_seen)} (holder_lost_after is {_words(limit)})")


# -- the audit planner -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareRef:
    """Share ``index`` of ``pack`` on ``peer``: ``blocks`` blocks of proof."""

    pack: bytes
    index: int
    peer: str
    blocks: int

    @property
    def key(self) -> tuple[bytes, int, str]:
        return (self.pack, self.index, self.peer)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Audit ``share``: one ``block`` (spot check), or the whole share when ``block`` is
    None."""

    share: ShareRef
    block: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class AuditConfig:
    audit_every: float = 3600.0  # the round's period (the scheduler runs the rounds)
    spot_per_round: int = 16  # random block challenges per round (over all holders)
    suspect_factor: int = 4  # a suspect holder's shares weigh this much more in the draw
    whole_cycle: float = DEFAULT_WHOLE_CYCLE  # every share verified whole once per cycle

    def __post_init__(self) -> None:
        if self.audit_every <= 0 or self.whole_cycle <= 0:
            raise ValueError("audit_every and whole_cycle must be positive")
        if self.spot_per_round < 0 or self.suspect_factor < 1:
            raise ValueError("spot_per_round >= 0 and suspect_factor >= 1")


@dataclass(slots=True)
class AuditPlanner:
    config: AuditConfig
    cursor: int = 0  # where the whole-share cycle goes on (persisted by the runtime)

    def whole_per_round(self, shares: int) -> int:
        if shares == 0:
            return 0
        return max(1, math.ceil(shares * self.config.audit_every / self.config.whole_cycle))

    def plan(self, shares: Iterable[ShareRef], states: Mapping[str, HolderState],
             rng: random.Random) -> list[Challenge]:
        """One round's challenges: whole-share verifications from the cycle's cursor, then
        spot checks drawn from ``rng`` (never a share verified whole this same round).
        Holders evicted or lost are not audited (their shares count for nothing already)."""
        live = sorted((s for s in shares if states.get(s.peer, HolderState.OK) in COUNTS),
                      key=lambda s: s.key)
        if not live:
            return []
        out: list[Challenge] = []
        whole = min(self.whole_per_round(len(live)), len(live))
        start = self.cursor % len(live)
        chosen: set[tuple[bytes, int, str]] = set()
        for i in range(whole):
            s = live[(start + i) % len(live)]
            chosen.add(s.key)
            out.append(Challenge(s, None, f"whole-share cycle: every share once per "
                                          f"{_words(self.config.whole_cycle)}"))
        self.cursor = (start + whole) % len(live)
        pool = [s for s in live if s.key not in chosen]
        weights = [self.config.suspect_factor if states.get(s.peer) is HolderState.SUSPECT else 1
                   for s in pool]
        for _ in range(min(self.config.spot_per_round, len(pool))):
            i = _weighted(rng, weights)
            s = pool.pop(i)
            weights.pop(i)
            why = "spot check of a suspect holder" if states.get(s.peer) is HolderState.SUSPECT else "spot check"
            out.append(Challenge(s, rng.randrange(max(1, s.blocks)), why))
        return out


def _weighted(rng: random.Random, weights: Sequence[int]) -> int:
    total = sum(weights)
    x = rng.randrange(total)
    for i, w in enumerate(weights):
        if x < w:
            return i
        x -= w
    raise AssertionError("unreachable")


def _words(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            v = seconds / size
            return f"{v:.0f}{unit}" if abs(v - round(v)) < 0.05 else f"{v:.1f}{unit}"
    return f"{seconds:.0f}s"


__all__ = [
    "COUNTS", "DEFAULT_LOST_AFTER", "DEFAULT_WHOLE_CYCLE", "Answered", "AuditConfig", "AuditPlanner",
    "Audited", "Challenge", "HolderBook", "HolderCommand", "HolderConfig", "HolderEvent", "HolderRecord",
    "HolderState", "Known", "Returned", "Seen", "ShareRef", "StateChanged", "Tick", "Unanswered",
]
