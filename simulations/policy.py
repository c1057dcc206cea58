"""Who repairs, and where shares go: the validation models, or the node's real cores.

**Validation models** (``[repair]`` present) do exactly what the issue states, nothing more:
initial placement on n distinct nodes drawn uniformly; ``exponential``: when a pack has
``repair_at`` or fewer live shares (and at least k), a repair completes after an
exponential time of mean ``mean_days`` and restores all n shares on live nodes that hold
none of that pack; ``none``: nothing is ever repaired.

**The real policy** (no ``[repair]`` table) drives the node's own pure cores, one per node:

- ``node.core.scheduler.Scheduler`` decides when each node runs its repair, audit and backup
  jobs (the same object the daemon drives; its clock is the simulated one, in seconds).
  A node's timers only fire while it is online (its daemon runs only then); coming back
  online is a ``Tick``. A job's end is a ``JobFinished`` after the time its traffic takes
  on the node's upload and download bandwidth.
- A repair job surveys the node's own packs (repair runs on the owner only, as today) and
  hands each pack that has a share to rebuild to ``node.core.repair.plan_repair``, with
  each holder's verdict: ``OK`` online with the share, ``UNREACHABLE`` offline, ``MISSING``
  no share any more (its disk was lost) or counted lost by the lost-holder rule. Packs in
  which every holder answered OK are full: the core would plan nothing for them, so they
  are not built into objects (the only batching; it changes no decision).
- **Lost holders**: each owner keeps the health core's holder book
  (``node.core.holders.HolderBook``, issue 15): after each survey, online holders
  ``Answered``, offline ones were ``Seen`` when they went down (a daemon hears from its
  peers all the time through sync), then a ``Tick``; a holder the book counts ``lost`` (or
  ``evicted``) is ``MISSING`` to the planner (forgotten, its share rebuilt elsewhere); one
  briefly away is ``UNREACHABLE`` and its index is not rebuilt yet. With more than 100
  nodes (or ``[policy] holder_book = false``) the same rule runs vectorised
  (:func:`lost_holders`: away ``holder_lost_after`` or longer), since 10,000 books fed
  every day cost hours; ``tests/simulations/test_policy.py`` checks both give the same run.
- New holders come from ``node.core.placement.replace_all`` (rebuilt shares: ``replace``
  share after share, the pack ranked once) and
  ``node.core.placement.place`` (packs of new backups), ranking a random sample of
  ``[policy] candidates`` online nodes (0: all of them) with their free capacity and their
  site as failure domain. The packs present at the start are laid out by a vectorised
  equivalent (n distinct nodes, capacity-weighted, one per site while sites last) because
  calling ``place`` a million times costs minutes before the first event.
- Audits (``audit_every``, or riding on the repair survey) cost one block per share
  reachable; the world has no silent corruption yet, so they find nothing beyond what the
  survey sees.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from corestate.node.core import holders as holders_core
from corestate.node.core import lease as lease_core
from corestate.node.core import placement as placement_core
from corestate.node.core import scheduler as sched
from corestate.node.core.repair import PackHealth, ShareState, Verdict, plan_repair
from corestate.simulations.scenario import DAY

if TYPE_CHECKING:
    from corestate.simulations.world import World

POLICY = 4  # the world's event kind for policy events
STAGGER = lease_core.DEFAULT_STAGGER  # seconds between members' turns to claim (node/app/rescue.py)
LEASE_FOR = lease_core.DEFAULT_LEASE  # seconds a repair lease lasts unless renewed
_REPAIR_DONE, _TIMER, _JOB_DONE = 0, 1, 2


def make_policy(world: World) -> ValidationPolicy | RealPolicy:
    if world.sc.repair is not None:
        return ValidationPolicy(world)
    return RealPolicy(world)


def spread(world: World, count: int, weights: np.ndarray | None = None,
           owners: np.ndarray | None = None) -> np.ndarray:
    """``count`` rows of n distinct nodes (capacity-weighted when ``weights``), one node
    per site while there are at least n sites, never the row's owner (``owners``, when
    given: a node does not hold shares of its own packs): redrawn row by row until valid."""
    n, N = world.n, world.N
    gen = world.draws.gen
    p = None if weights is None else weights / weights.sum()
    out = gen.choice(N, size=(count, n), p=p).astype(np.int32)
    sites = world.sc.world.sites
    by_site = sites >= n
    for _ in range(10_000):
        key = world.site[out] if by_site else out
        s = np.sort(key, axis=1)
        dup = (s[:, 1:] == s[:, :-1]).any(axis=1) if n > 1 else np.zeros(len(out), dtype=bool)
        if owners is not None:
            dup |= (out == owners[:, None]).any(axis=1)
        bad = np.flatnonzero(dup)
        if len(bad) == 0:
            return out
        out[bad] = gen.choice(N, size=(len(bad), n), p=p)
    raise RuntimeError("could not spread shares over distinct nodes")  # pragma: no cover


class ValidationPolicy:
    """``[repair] model = "exponential"`` or ``"none"``: the issue's exact models."""

    def __init__(self, world: World) -> None:
        self.w = world
        rp = world.sc.repair
        assert rp is not None
        self.model = rp.model
        self.repair_at = rp.repair_at
        self.mean = rp.mean_days
        self.pending = np.zeros(world.P, dtype=bool)

    def start(self) -> None:
        return None

    def place_new(self, packs: np.ndarray) -> None:
        w = self.w
        rows = spread(w, len(packs))
        w.add_shares(np.repeat(packs, w.n), np.tile(np.arange(w.n), len(packs)), rows.reshape(-1))

    def on_online(self, node: int, online: bool) -> None:
        return None

    def on_lost_shares(self, packs: np.ndarray) -> None:
        if self.model != "exponential":
            return
        w = self.w
        lv = w.live[packs]
        due = packs[(lv <= self.repair_at) & (lv >= w.k) & ~self.pending[packs] & ~w.lost[packs]]
        now = w.engine.now
        for q in due.tolist():
            self.pending[q] = True
            w.engine.push(now + w.draws.exp(self.mean), POLICY, q, _REPAIR_DONE)

    def on_event(self, kind: int, a: int, b: int) -> None:
        w = self.w
        q = a
        self.pending[q] = False
        if w.lost[q]:
            return
        row = w.loc[q]
        empty = np.flatnonzero(row < 0).tolist()
        held = set(row[row >= 0].tolist())
        new: list[int] = []
        while len(new) < len(empty):
            y = w.draws.below(w.N)
            if y not in held:
                held.add(y)
                new.append(y)
        w.put_one(q, empty, new)
        w.repairs += 1
        w.shares_rebuilt += len(empty)
        w.repair_bytes += float(w.share_size * (w.k + len(empty)))


def lost_holders(offline: np.ndarray, away_days: np.ndarray, holder_lost_after: float) -> np.ndarray:
    """The lost-holder rule (the hook for issue 15's core), for a batch of holders: an
    unreachable holder counts as lost once it has been away ``holder_lost_after`` or
    longer (with 0, at once)."""
    return offline & (away_days >= holder_lost_after)


def peer(x: int) -> str:
    return f"n{x}"


@dataclass(slots=True)
class _Job:
    job: sched.Job
    then: tuple[sched.Job, ...]
    moves: list[tuple[int, int, int, int, int]]  # pack, slot, old holder, new holder, its failures
    leases: list[tuple[int, lease_core.Lease]] = field(default_factory=list)  # dropped at the end


class RealPolicy:
    """The node's real cores: scheduler, repair planner, placement (see the module doc)."""

    def __init__(self, world: World) -> None:
        self.w = world
        pol = world.sc.policy
        self.pol = pol
        bk = world.sc.backups
        self.cfg = sched.ScheduleConfig(
            backup_every=(bk.backup_every * DAY) if bk and bk.packs_per_day > 0 else 0.0,
            has_paths=bk is not None,
            repair_every=pol.repair_every * DAY,
            audit_every=None if pol.audit_every is None else pol.audit_every * DAY,
            sync_every=0.0,
        )
        self.scheds: list[sched.Scheduler] = []
        self.timer_at: list[float | None] = [None] * world.N
        self.jobs: dict[int, _Job] = {}
        self.missed = np.zeros(world.N, dtype=bool)
        use = pol.holder_book if pol.holder_book is not None else world.N <= 100
        cfg = holders_core.HolderConfig(holder_lost_after=max(pol.holder_lost_after, 1e-9) * DAY)
        self.books = [holders_core.HolderBook(cfg) for _ in range(world.N)] if use else None
        self._att_at = -1.0
        # Owners whose packs may have a share without holder (a disk lost, a new pack):
        # _needs_work looks at their packs' share counts, and clears the mark when full.
        self._short = np.ones(world.N, dtype=bool)
        self._attention = np.zeros(world.N, dtype=bool)
        # Who is absent, as of one churn step (_absent): holders gone (holder_lost_after)
        # and owners away (owner_away_after).
        self._gone_at = -1.0
        self._gone = np.zeros(0, dtype=np.int64)
        self._gone_mask = np.zeros(world.N, dtype=bool)
        self._owners_away = np.zeros(0, dtype=np.int64)
        # Repair by any member (node/core/lease.py): the leases every member reads (the
        # catalog syncs at once here), when each member first saw a pack in need, the
        # members' rank order per pack, the packs of away owners in need (cached).
        self.member_repair = pol.member_repair
        self.leases: dict[int, list[lease_core.Lease]] = {}
        self.need_since: dict[int, dict[int, float]] = {}
        self._order: dict[int, np.ndarray] = {}
        self._foreign_key: tuple[float, int, int] | None = None
        self._foreign: list[tuple[int, int]] = []
        self._applied = 0  # jobs whose moves were recorded (a cache key)
        self.member_repairs = 0
        self.member_shares = 0
        # Reputation from audits ([faults]: hollow holders exist): each owner's audit
        # results go to its own HolderBook (node/core/holders.py), whose evictions the
        # repair planner treats as missing shares and placement never picks again.
        ft = world.sc.faults
        self.kept = ft.kept_fraction if ft is not None else 0.0
        self.reputation = world.any_hollow
        self.rep_books: dict[int, holders_core.HolderBook] = {}
        self.evicted: dict[int, set[int]] = {}
        self.evictions = 0
        self.owned: list[list[np.ndarray]] = [[] for _ in range(world.N)]
        self._own_at = [-1] * world.N
        self.backlog = np.zeros(world.N)  # fractional packs due from backups
        self.jobs_run = 0
        # Idle rounds through the scheduler core's run_idle (False: every round through
        # handle, the reference the equivalence test compares against).
        self.idle_rounds = world.idle_rounds
        self.idle_run = 0  # jobs run through run_idle
        self.unrepairable = 0
        self._initial = True

    # -- placement -----------------------------------------------------------------------

    def _candidates(self, owner: int) -> list[placement_core.Candidate]:
        """The online nodes placement ranks: all of them, or a random sample of
        ``[policy] candidates`` that holds one node of every site first (so that a sample
        never hides a failure domain from the spreading rule), then random others (without
        sites: a uniform draw without replacement). Never the ``owner`` itself (it holds
        no shares of its own packs), nor a holder its audits evicted."""
        w = self.w
        on = np.flatnonzero(w.online)
        on = on[on != owner]
        ev = self.evicted.get(owner)
        if ev:  # an evicted holder gets no new shares from this owner
            on = on[~np.isin(on, list(ev))]
        c = self.pol.candidates
        sites = w.sc.world.sites
        if c and len(on) > c and not sites:
            # A uniform sample without replacement: draws in order, repeats skipped
            # (cheaper than shuffling every online node for 16 of them).
            gen = w.draws.gen
            picked: dict[int, None] = {}
            while len(picked) < c:
                for i in gen.integers(0, len(on), size=2 * c).tolist():
                    picked.setdefault(i)
                    if len(picked) == c:
                        break
            on = on[list(picked)]
        elif c and len(on) > c:
            shuffled = w.draws.gen.permutation(on)
            if sites:
                _, first = np.unique(w.site[shuffled], return_index=True)
                first = np.sort(first)
                rest = np.setdiff1d(np.arange(len(shuffled)), first, assume_unique=True)
                shuffled = shuffled[np.concatenate([first, rest])]
            on = shuffled[: max(c, min(sites, len(shuffled)))]
        free = (w.sc.world.capacity - w.used[on] * w.share_size).tolist()
        return [placement_core.Candidate(peer(y), f, (f"s{int(w.site[y])}",) if sites else ())
                for y, f in zip(on.tolist(), free, strict=True)]

    def _candidate(self, y: int) -> placement_core.Candidate:
        w = self.w
        return placement_core.Candidate(peer(y), int(w.sc.world.capacity - w.used[y] * w.share_size),
                                        (f"s{int(w.site[y])}",) if w.sc.world.sites else ())

    def place_new(self, packs: np.ndarray) -> None:
        w = self.w
        if len(packs) == 0:
            return
        for q in packs.tolist():
            o = int(w.owner[q])
            self.owned[o].append(np.array([q], dtype=np.int64))
            self._own_at[o] = -1
            self._short[o] = True  # a placement may come up short
        if self._initial:
            rows = spread(w, len(packs), np.maximum(w.sc.world.capacity - w.used * w.share_size, 1).astype(float),
                          owners=w.owner[packs])
            w.add_shares(np.repeat(packs, w.n), np.tile(np.arange(w.n), len(packs)), rows.reshape(-1))
            return
        cands = self._candidates(int(w.owner[packs[0]]))
        P, S, X = [], [], []
        for q in packs.tolist():
            pl = placement_core.place(q.to_bytes(8, "big"), w.n, cands, exclude={peer(int(w.owner[q]))})
            for i, name in enumerate(pl.peers):
                P.append(q)
                S.append(i)
                X.append(int(name[1:]))
        w.backup_bytes += float(len(P) * w.share_size)
        if P:
            w.add_shares(np.array(P, dtype=np.int64), np.array(S, dtype=np.int64), np.array(X, dtype=np.int32))

    # -- scheduler driving ---------------------------------------------------------------

    def start(self) -> None:
        w = self.w
        self._initial = False
        for x in range(w.N):
            s = sched.Scheduler(self.cfg, now=0.0, rng=random.Random(w.seed * 1_000_003 + x))
            self.scheds.append(s)
            self._do(x, s.handle(sched.HoldingsChanged(placed=True), 0.0))

    def _arm(self, x: int) -> None:
        d = self.scheds[x].next_deadline()
        if d is None:
            self.timer_at[x] = None
            return
        if self.timer_at[x] != d:
            self.timer_at[x] = d
            self.w.engine.push(max(d / DAY, self.w.engine.now), POLICY, x, _TIMER)

    def _do(self, x: int, cmds: list[sched.Command]) -> None:
        for cmd in cmds:
            if isinstance(cmd, sched.RunJob) and self._run_job(x, cmd):
                # Done at once: _finish gave the core its JobFinished and armed the timer
                # after the core's last word (one RunJob per answer: nothing else to run).
                return
        self._arm(x)

    def _tick(self, x: int, now_s: float) -> None:
        """A ``Tick`` for owner ``x``. A round in which the repair job would find nothing
        to rebuild (the question ``_repair`` asks first) goes through the core's
        ``run_idle``: the state ``handle`` and an at-once ``JobFinished`` would leave, and
        the same survey cost; any other round through ``handle``.
        ``tests/simulations/test_policy.py`` checks both paths give the identical run."""
        s = self.scheds[x]
        if self.idle_rounds and self.books is None:
            ran = s.run_idle(now_s, lambda job: self._idle(x, job))
            if ran is not None:
                for _job in ran:  # REPAIR only: _idle declines the others
                    self.jobs_run += 1
                    self.idle_run += 1
                    if self.cfg.audit_every is None:
                        self._survey_audit(self._own(x))
                self._arm(x)
                return
        self._do(x, s.handle(sched.Tick(), now_s))

    def _idle(self, x: int, job: sched.Job) -> bool:
        """Whether ``job`` would finish at once with nothing placed: a repair job whose
        survey finds no share to rebuild (no side effect but the churn-step cache
        ``_needs_work`` keeps, which the job itself would fill at this same time)."""
        if job is not sched.Job.REPAIR or self.reputation:
            return False  # (with hollow holders every survey may evict: handle() decides)
        ps = self._own(x)
        if len(ps) and self._needs_work(x, ps):
            return False
        return not (self.member_repair and self._foreign_work(self.w.engine.now))

    def _survey_audit(self, ps: np.ndarray) -> None:
        """Audits riding on the repair survey: one block from every reachable share."""
        if len(ps):
            self.w.audit_bytes += float(int(self.w.onl[ps].sum()) * self.pol.audit_block)

    def on_online(self, node: int, online: bool) -> None:
        # Only a timer that came due while the node was down has anything to fire; any
        # other Tick would change nothing in the scheduler.
        if online and self.missed[node]:
            self.missed[node] = False
            self._tick(node, self.w.engine.now * DAY)

    def on_lost_shares(self, packs: np.ndarray) -> None:
        # Owners find out at their next survey; until then their packs may be short.
        self._short[self.w.owner[packs]] = True

    def on_event(self, kind: int, a: int, b: int) -> None:
        w = self.w
        x = a
        now_s = w.engine.now * DAY
        if b == _TIMER:
            due = self.timer_at[x]
            if due is None or abs(due / DAY - w.engine.now) > 1e-9:
                return  # superseded
            self.timer_at[x] = None
            if not w.online[x]:
                self.missed[x] = True
                return  # the daemon is down: the timer fires when it is back (a Tick)
            # The deadline itself, not now * DAY: a rounding below it would not fire.
            self._tick(x, max(now_s, due))
        elif b == _JOB_DONE:
            self._finish(x)

    def _finish(self, x: int) -> None:
        now_s = self.w.engine.now * DAY
        job = self.jobs.pop(x)
        self._apply(job)
        s = self.scheds[x]
        cmds = s.handle(sched.JobFinished(job.job, 0), now_s)
        for j in job.then:
            cmds += s.handle(sched.JobFinished(j, 0), now_s)
        self._do(x, cmds)

    # -- jobs ----------------------------------------------------------------------------

    def _run_job(self, x: int, cmd: sched.RunJob) -> bool:
        """Start a job; whether it finished at once (no traffic)."""
        w = self.w
        self.jobs_run += 1
        up = down = 0.0
        moves: list[tuple[int, int, int, int, int]] = []
        held: list[tuple[int, lease_core.Lease]] = []
        if cmd.job == sched.Job.REPAIR:
            up, down, moves = self._repair(x, audit=self.cfg.audit_every is None)
            if self.member_repair:  # then the packs of away owners, in the same hold
                mu, md, mm, held = self._member_round(x, w.engine.now)
                up, down, moves = up + mu, down + md, moves + mm
        elif cmd.job == sched.Job.AUDIT:
            up = self._audit(x)
        elif cmd.job == sched.Job.BACKUP:
            up = self._backup(x)
        secs = up / w.sc.world.upload + down / w.sc.world.download
        self.jobs[x] = _Job(cmd.job, cmd.then, moves, held)
        if held:
            # Renewed while the job runs (rescue.py renews once half the term is left).
            end_ms = int((w.engine.now * DAY + secs + LEASE_FOR) * 1000)
            for q, le in held:
                self.leases[q] = [dataclasses.replace(e, until_ms=end_ms) if e == le else e
                                  for e in self.leases.get(q, [])]
            self.jobs[x].leases = [(q, dataclasses.replace(le, until_ms=end_ms)) for q, le in held]
        if secs > 0:
            w.engine.push(w.engine.now + secs / DAY, POLICY, x, _JOB_DONE)
            return False
        self._finish(x)  # nothing to send: done at once (no event)
        return True

    def _own(self, x: int) -> np.ndarray:
        """Owner ``x``'s packs not lost. Filtered again only when a pack was added or
        lost since (``_own_at``: the world's loss count when last filtered)."""
        ch = self.owned[x]
        if not ch:
            return np.zeros(0, dtype=np.int64)
        lost_now = self.w.packs_lost
        if len(ch) == 1 and self._own_at[x] == lost_now:
            return ch[0]
        ps = np.concatenate(ch) if len(ch) > 1 else ch[0]
        ps = ps[~self.w.lost[ps]]
        self.owned[x] = [ps]
        self._own_at[x] = lost_now
        return ps

    def _audit(self, x: int) -> float:
        w = self.w
        ps = self._own(x)
        L = w.loc[ps]
        on = (L >= 0) & w.online[np.maximum(L, 0)]
        b = float(np.count_nonzero(on) * self.pol.audit_block)
        w.audit_bytes += b
        if self.reputation:
            self._audit_holders(x, ps)
        return b

    def _audit_holders(self, x: int, ps: np.ndarray) -> None:
        """Owner ``x``'s audit results into its HolderBook: one block challenged from
        every share on a reachable holder, a holder failing when any of its blocks does
        (node/app/health.py ``per_holder``). An honest holder always passes and its score
        stays at the top, so only hollow holders are fed: each of their challenges
        passes with probability ``kept_fraction``."""
        w = self.w
        L = w.loc[ps]
        L = L[(L >= 0)]
        L = L[w.hollow[L] & w.online[L]]
        if not len(L):
            return
        book = self.rep_books.get(x)
        if book is None:
            cfg = holders_core.HolderConfig(holder_lost_after=max(self.pol.holder_lost_after, 1e-9) * DAY)
            book = self.rep_books[x] = holders_core.HolderBook(cfg)
        now_s = w.engine.now * DAY
        ys, counts = np.unique(L, return_counts=True)
        for y, c in zip(ys.tolist(), counts.tolist(), strict=True):
            passed = all(w.draws.uniform() < self.kept for _ in range(c))
            for cmd in book.handle(holders_core.Audited(peer(y), passed, f"{c} block(s)"), now_s):
                if isinstance(cmd, holders_core.StateChanged) and cmd.new is holders_core.HolderState.EVICTED:
                    self.evicted.setdefault(x, set()).add(y)
                    self.evictions += 1

    def _backup(self, x: int) -> float:
        w = self.w
        bk = w.sc.backups
        assert bk is not None
        self.backlog[x] += bk.packs_per_day * bk.backup_every / w.N
        count = int(self.backlog[x])
        self.backlog[x] -= count
        before = w.backup_bytes
        w.create_packs(count, np.full(count, x, dtype=np.int32))
        return w.backup_bytes - before

    def _needs_work(self, x: int, ps: np.ndarray) -> bool:
        """Whether an owner's packs may need a rebuild: a share without holder, or a holder
        away ``holder_lost_after`` or longer. A cheap pre-filter (the owners with such
        holders are found once per churn step), never a decision."""
        w = self.w
        if self._short[x]:
            if bool((w.live[ps] < w.n).any()):
                return True
            self._short[x] = False
        gone = self._absent(w.engine.now)[0]
        if self._att_at != self._gone_at:
            self._att_at = self._gone_at
            self._attention[:] = False
            if len(gone):
                packs = np.concatenate([w.packs_of(int(y)) for y in gone.tolist()])
                self._attention[w.owner[packs]] = True
        return bool(self._attention[x])

    def _absent(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(holders gone, owners away) as of this churn step: offline for
        ``holder_lost_after`` (the lost-holder rule) or ``owner_away_after``
        (node/core/lease.py ``owner_away``) or longer. One scan of the nodes per step."""
        w = self.w
        if self._gone_at < 0 or now - self._gone_at >= max(w.churn_step, 1e-9):
            self._gone_at = now
            off = np.flatnonzero(~w.online)
            away_for = now - w.offline_since[off]
            self._gone = off[lost_holders(np.ones(len(off), dtype=bool), away_for, self.pol.holder_lost_after)]
            self._gone_mask[:] = False
            self._gone_mask[self._gone] = True
            self._owners_away = off[away_for >= self.pol.owner_away_after]
        return self._gone, self._owners_away

    # -- repair by any member (node/core/lease.py, as node/app/rescue.py uses it) --------

    def _foreign_work(self, now: float) -> list[tuple[int, int]]:
        """(owner, pack) for each pack of an away owner that members should repair: fewer
        than n share indexes counted (a holder's disk lost, or the holder gone) and at
        least k answering. Cached until the step, the failures or the recorded moves
        change."""
        away = self._absent(now)[1]
        if len(away) == 0:
            if self.need_since:
                self.need_since.clear()
                self._order.clear()
            return []
        w = self.w
        key = (self._gone_at, w.failures, self._applied)
        if key == self._foreign_key:
            return self._foreign
        out: list[tuple[int, int]] = []
        for o in away.tolist():
            ps = self._own(o)
            if not len(ps):
                continue
            L = w.loc[ps]
            has = L >= 0
            Lc = np.maximum(L, 0)
            counted = has & ~self._gone_mask[Lc]
            ok = counted & w.online[Lc]
            needy = (counted.sum(axis=1) < w.n) & (ok.sum(axis=1) >= w.k)
            out += [(o, q) for q in ps[needy].tolist()]
        out.sort(key=lambda oq: oq[1])
        self._foreign_key, self._foreign = key, out
        # A pack in need no more: each member forgets when it first saw it (rescue.py
        # clears its need.<pack> mark), and its rank order is not needed again.
        needed = {q for _, q in out}
        for q in [q for q in self.need_since if q not in needed]:
            del self.need_since[q]
            self._order.pop(q, None)
        return out

    def _turn_come(self, q: int, x: int, o: int, waited: float) -> bool:
        """Whether member ``x``'s turn to claim pack ``q`` has come after ``waited``
        seconds: ``waited >= claim_delay``, i.e. its place in the lease core's rank order
        among the members not gone (the owner ``o`` left out) times ``STAGGER``. The
        order is hashed once per pack; the place is counted only when ``waited`` does not
        settle it (the first look, where only the first place claims; a wait shorter
        than every member's turn)."""
        order = self._order.get(q)
        if order is None:
            names = lease_core.order(q.to_bytes(8, "big"), [peer(y) for y in range(self.w.N)])
            order = self._order[q] = np.array([int(m[1:]) for m in names], dtype=np.int64)
        if waited >= (len(order) - 1) * STAGGER:
            return True  # past the last place's turn
        if waited < STAGGER:  # only the first place: the first member not gone, not the owner
            for y in order.tolist():
                if y != o and not self._gone_mask[y]:
                    return y == x
            return False
        before = order[: int(np.flatnonzero(order == x)[0])]
        return waited >= int(np.count_nonzero(~self._gone_mask[before] & (before != o))) * STAGGER

    def _member_round(self, x: int, now: float) -> tuple[float, float, list[tuple[int, int, int, int, int]],
                                                           list[tuple[int, lease_core.Lease]]]:
        """Member ``x``'s pass over the packs of away owners, right after its own repair
        (same job): claims in its turn, the settle round (claims reach every member at
        once here), and the rebuilds it won; the decisions are node/core/lease.py's."""
        work = self._foreign_work(now)
        if not work:
            return 0.0, 0.0, [], []
        w = self.w
        me, now_ms = peer(x), int(now * DAY * 1000)
        lease_ms = int(LEASE_FOR * 1000)
        for o, q in work:
            if o == x:
                continue
            qb = q.to_bytes(8, "big")
            d = lease_core.decide(qb, peer(o), me, self.leases.get(q, ()), now_ms, away=True)
            if d.action is lease_core.Action.CLAIM:
                since = self.need_since.setdefault(q, {}).setdefault(x, now)
                if self._turn_come(q, x, o, (now - since) * DAY):
                    self.leases.setdefault(q, []).append(lease_core.Lease(qb, peer(o), me, now_ms + lease_ms))
        up = down = 0.0
        moves: list[tuple[int, int, int, int, int]] = []
        held: list[tuple[int, lease_core.Lease]] = []
        cands: list[placement_core.Candidate] | None = None
        sites = w.sc.world.sites
        for o, q in work:
            if o == x:
                continue
            qb = q.to_bytes(8, "big")
            known = self.leases.get(q, [])
            d = lease_core.decide(qb, peer(o), me, known, now_ms, away=True)
            mine = [le for le in known if le.repairer == me]
            if d.action is lease_core.Action.YIELD:
                self.leases[q] = [le for le in known if le.repairer != me]
                continue
            if d.action is not lease_core.Action.REPAIR:
                continue
            held += [(q, le) for le in mine]
            L = w.loc[q]
            has = L >= 0
            counted = has & ~self._gone_mask[np.maximum(L, 0)]
            missing = [i for i in range(w.n) if not counted[i]]
            peers: list[str | None] = [peer(int(L[i])) if counted[i] else None for i in range(w.n)]
            if cands is None:
                cands = self._candidates(x)
            pool = cands
            if sites:
                listed = {c.peer for c in cands}
                pool = cands + [self._candidate(int(L[i])) for i in range(w.n)
                                if counted[i] and peer(int(L[i])) not in listed]
            done = 0
            for i, name in zip(missing, placement_core.replace_all(qb, peers, missing, pool, exclude={peer(o)}),
                               strict=True):
                if name is None:
                    break
                y = int(name[1:])
                moves.append((q, i, int(L[i]) if has[i] else -1, y, int(w.disk_losses[y])))
                done += 1
            if done:
                down += w.k * w.share_size
                up += done * w.share_size
                self.member_repairs += 1
                self.member_shares += done
                w.repairs += 1
                w.shares_rebuilt += done
        w.repair_bytes += up + down
        return up, down, moves, held

    def _book_lost(self, x: int, holders: np.ndarray, now: float) -> np.ndarray:
        """Owner ``x``'s holder book (node/core/holders.py, issue 15's core) after this
        survey: online holders answered; an offline one was last seen when it went down
        (the daemon hears from its peers all the time, through sync). The holders it
        counts lost or evicted."""
        assert self.books is not None
        book, w, now_s = self.books[x], self.w, now * DAY
        for y in holders.tolist():
            if w.online[y]:
                book.handle(holders_core.Answered(peer(y)), now_s)
            else:
                book.handle(holders_core.Seen(peer(y), float(w.offline_since[y]) * DAY), now_s)
        book.handle(holders_core.Tick(), now_s)
        gone = (holders_core.HolderState.LOST, holders_core.HolderState.EVICTED)
        return np.array([y for y in holders.tolist() if book.state(peer(y)) in gone], dtype=np.int64)

    def _repair(self, x: int, *, audit: bool) -> tuple[float, float, list[tuple[int, int, int, int, int]]]:
        w = self.w
        now = w.engine.now
        hla = self.pol.holder_lost_after
        ps = self._own(x)
        if len(ps) == 0:
            return 0.0, 0.0, []
        if audit:
            self._survey_audit(ps)
            if self.reputation:
                self._audit_holders(x, ps)
        ev = self.evicted.get(x)
        if self.books is None and not ev and not self._needs_work(x, ps):
            return 0.0, 0.0, []  # every share has a holder not counted lost: nothing to plan
        L = w.loc[ps]
        has = L >= 0
        Lc = np.maximum(L, 0)
        bad = has & np.isin(L, list(ev)) if ev else np.zeros(L.shape, dtype=bool)
        on = has & w.online[Lc] & ~bad
        away = now - w.offline_since[Lc]
        if self.books is not None:
            lost = has & ~on & np.isin(L, self._book_lost(x, np.unique(L[has]), now))
        else:
            lost = lost_holders(has & ~on, away, hla)
        lost |= bad  # evicted by its audits: missing, to be rebuilt elsewhere
        rows = np.flatnonzero((~has | lost).any(axis=1))
        if len(rows) == 0:
            return 0.0, 0.0, []
        healths = []
        for r in rows.tolist():
            shares = []
            for i in range(w.n):
                if not has[r, i]:
                    continue  # its holder lost the disk: the row was forgotten
                v = Verdict.OK if on[r, i] else (Verdict.MISSING if lost[r, i] else Verdict.UNREACHABLE)
                shares.append(ShareState(i, peer(int(L[r, i])), v))
            # A disk-lost holder answers "missing" once; model it as a recorded row.
            healths.append(PackHealth(int(ps[r]).to_bytes(8, "big"), w.k, w.n, tuple(shares), False))
        row_of = {int(ps[r]): r for r in rows.tolist()}
        plan = plan_repair(healths)
        self.unrepairable += len(plan.unrepairable)
        cands = self._candidates(x) if plan.rebuilds else []
        sites = w.sc.world.sites
        up = down = 0.0
        moves: list[tuple[int, int, int, int, int]] = []
        for rb in plan.rebuilds:
            q = int.from_bytes(rb.pack, "big")
            r = row_of[q]
            # Today's core rebuilds every index without an OK answer; the lost-holder
            # rule holds back the ones whose holder is only briefly away.
            todo = [i for i in rb.indexes if not has[r, i] or lost[r, i]]
            if not todo:
                continue
            peers: list[str | None] = [peer(int(L[r, i])) if has[r, i] and not lost[r, i] else None
                                       for i in range(w.n)]
            # The pack's other holders are candidates too (never chosen again: they hold a
            # share), as in the runtime: placement spreads against their sites only if it
            # knows them.
            # Without sites they could only be skipped (replace_all never ranks a holder
            # that stays): not listed.
            extra = []
            if sites:
                listed = {c.peer for c in cands}
                extra = [self._candidate(int(L[r, j])) for j in range(w.n)
                         if has[r, j] and not lost[r, j] and peer(int(L[r, j])) not in listed]
            pool = cands + extra if extra else cands
            done = 0
            # The pack's shares one after the other, as replace() share by share would
            # (tests/node/test_placement.py: replace_all is exactly that).
            for i, name in zip(todo, placement_core.replace_all(rb.pack, peers, todo, pool, exclude={peer(x)}),
                               strict=True):
                if name is None:
                    break
                y = int(name[1:])
                moves.append((q, i, int(L[r, i]) if has[r, i] else -1, y, int(w.disk_losses[y])))
                done += 1
            if done:
                down += w.k * w.share_size
                up += done * w.share_size
                w.repairs += 1
                w.shares_rebuilt += done
        w.repair_bytes += up + down
        return up, down, moves

    def _apply(self, job: _Job) -> None:
        """Record what a finished repair placed (skipping what changed meanwhile); drop
        the leases the job held (the placement record and the tombstone in one write)."""
        for q, le in job.leases:
            left = [e for e in self.leases.get(q, []) if e != le]
            if left:
                self.leases[q] = left
            else:
                self.leases.pop(q, None)
        if not job.moves:
            return
        w = self.w
        P: list[int] = []
        S: list[int] = []
        X: list[int] = []
        taken: set[tuple[int, int]] = set()
        for q, i, old, y, g in job.moves:
            if w.lost[q] or w.disk_losses[y] != g:
                continue
            cur = int(w.loc[q, i])
            if cur >= 0 and cur != old:
                continue
            if y in w.loc[q] or (q, y) in taken:
                continue  # never two shares of one pack on one node
            taken.add((q, y))
            if cur >= 0:
                w.move_off(q, i, check=False)
            P.append(q)
            S.append(i)
            X.append(y)
        if P:
            w.put_few(P, S, X)
            self._applied += 1
            if w.any_hollow:  # a share moved onto a hollow holder leaves its pack short
                self._short[w.owner[np.array(P, dtype=np.int64)]] = True
