"""``health`` and ``audit``: how safe the data is over time, and the audit round behind it.

``audit`` (the daemon runs it every ``[schedule] audit_every``; a typed call like any other)
asks the audit planner (node/core/holders.py) for this round's challenges, has the mesh put
them to the holders (HAS of every share, AUDIT of random blocks checked against the roots
recorded at upload, GET of whole shares on the slow cycle), feeds what came back into the
holder book (reputation, lost holders), saves the book in the ledger, and raises the alerts
of node/core/health.py: ``holder-evicted``, ``holder-lost``, ``redundancy-low``,
``pack-lost``.

``health`` answers from what is known, asking nobody: each pack's level given the holders'
standing, per snapshot and in total; each holder's state, last answer, audits and shares;
what repair has to do and an ETA at ``[health] repair_bandwidth`` (or the rate the last
repair measured).

Invariants:
- The holder book lives in the ledger (``mesh.db``); every operation that learns something
  of the holders loads it, feeds it, saves it (audit here, repair in node/app/maintain.py).
- Times in the book are wall-clock seconds: they must survive a restart of the daemon.
- An alert for a pack is raised once per fall (the last levels are kept in the ledger).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

import cbor2
from corestate.node.app import Context, Operation
from corestate.node.core import health as hc
from corestate.node.core import holders as hb
from corestate.node.local import LocalNode
from corestate.protocol import control as c

EXIT_OK, EXIT_INCOMPLETE = 0, 3
_CURSOR = "audit.cursor"
_LEVELS = "health.levels"
_RATE = "repair.rate"  # bytes/s the last repair moved (cbor [bytes, seconds, time])
_MEMBER = "repair.member"  # packs of absent owners repaired for them (count)
_RUNNING = "repair.running"
ALERTS_PER_KIND = 4  # more packs than this falling at once: one alert for them all


def wall_time() -> float:
    """Seconds since the epoch: the holder book's clock (one place, so that a test on the
    in-process kit can move it with the virtual clock)."""
    return time.time()


def load_book(node: LocalNode) -> hb.HolderBook:
    return hb.HolderBook(hb.HolderConfig(holder_lost_after=node.cfg.health.holder_lost_after),
                         node.ledger.holders())


def current_book(node: LocalNode) -> hb.HolderBook:
    """The holder book as of now, without asking anyone: what was saved, what the address
    book heard since (catalog syncs, capacity requests), and who is lost by now. For reading
    (health, status, whom to give shares): not saved."""
    book = load_book(node)
    now = wall_time()
    for r in book.records():
        e = node.book.get(r.peer)
        if e is not None and e.seen_ns:
            book.handle(hb.Seen(r.peer, e.seen_ns / 1e9), now)
    book.handle(hb.Tick(), now)
    return book


def learn(node: LocalNode, book: hb.HolderBook, ctx: Context, events: Iterable[hb.HolderEvent],
          now: float) -> list[hb.StateChanged]:
    """Feed ``events`` (and the time) to ``book``, save it, raise the holder alerts."""
    out: list[hb.HolderCommand] = []
    for peer in sorted({r.peer for cp in node.ledger.all().values() for r in cp.shares}):
        # When it last answered anything (a capacity request, a catalog sync), if known.
        e = node.book.get(peer)
        out += book.handle(hb.Seen(peer, e.seen_ns / 1e9) if e is not None and e.seen_ns else hb.Known(peer), now)
    for ev in events:
        out += book.handle(ev, now)
    out += book.handle(hb.Tick(), now)
    node.ledger.save_holders(book.records())
    changes = [x for x in out if isinstance(x, hb.StateChanged)]
    for ch in changes:
        decision = hc.holder_alert(ch)
        if decision is not None:
            _alert(ctx, decision)
    return changes


def per_holder(found: Iterable[tuple[str, bool, str]]) -> list[hb.HolderEvent]:
    """One audit per holder per round (or repair survey): passed when every share it was
    asked about checked, else failed, naming the first share that did not. So one bad
    moment (a disk swapped, a burst of rot) makes a holder suspect, not evicted at once:
    eviction takes failing rounds in a row (node/core/holders.py), while the shares that
    failed are rebuilt right away by repair."""
    verdict: dict[str, tuple[bool, str, int]] = {}
    for peer, ok, what in found:
        prior = verdict.get(peer)
        if prior is None:
            verdict[peer] = (ok, what, 1)
        elif prior[0] and not ok:
            verdict[peer] = (False, what, prior[2] + 1)
        else:
            verdict[peer] = (prior[0], prior[1], prior[2] + 1)
    out: list[hb.HolderEvent] = []
    for peer in sorted(verdict):
        ok, what, n = verdict[peer]
        out.append(hb.Audited(peer, ok, f"{n} share(s) checked" if ok else f"{what}; {n} share(s) checked"))
    return out


def pack_views(node: LocalNode) -> list[hc.PackView]:
    """Each coded pack and its holders, less the shares whose last audit failed."""
    store = node.repo.store
    bad = node.ledger.bad()
    views = []
    for pid, cp in node.ledger.all().items():
        share = max((r.size for r in cp.shares), default=cp.size // max(1, cp.k))
        views.append(hc.PackView(pid, cp.k, cp.n, share,
                                 tuple((r.index, r.peer) for r in cp.shares if (pid, r.index, r.peer) not in bad),
                                 bool(cp.local or store.has_local(pid))))
    return views


def refresh_levels(node: LocalNode, ctx: Context, states: dict[str, hb.HolderState]) -> dict[bytes, hc.Level]:
    """Each pack's level now; raise ``redundancy-low`` / ``pack-lost`` for the packs that
    fell since the last time, and remember the levels for next time."""
    levels = {p.pack: hc.pack_level(p, states) for p in pack_views(node)}
    raw = node.ledger.meta(_LEVELS)
    before: dict[bytes, hc.Level] = {}
    if raw:
        try:
            before = {bytes(k): hc.Level(v) for k, v in cbor2.loads(raw).items()}
        except (ValueError, TypeError, cbor2.CBORDecodeError):
            before = {}
    # Packs not in ``before`` were full when last looked at (only the others are kept).
    for decision in hc.batch(hc.alerts({p: before.get(p, hc.Level.FULL) for p in levels}, levels),
                             ALERTS_PER_KIND):
        _alert(ctx, decision)
    node.ledger.set_meta(_LEVELS, cbor2.dumps({p: lv.value for p, lv in levels.items()
                                               if lv is not hc.Level.FULL}, canonical=True))
    return levels


def _alert(ctx: Context, d: hc.AlertDecision) -> None:
    ctx.emit(c.Alert(time_ns=time.time_ns(), alert=d.name, severity=d.severity, message=d.message[:4096],
                     details={k[:64]: v[:1024] for k, v in d.details[:16]}))


# -- audit -------------------------------------------------------------------------------------


def audit(node: LocalNode, call: c.AuditCall, ctx: Context) -> c.AuditResult:
    from corestate.erasure import share as sharefmt
    from corestate.node.core.repair import share_blocks
    book = load_book(node)
    coded = node.ledger.all()
    rows = {(r.pack, r.index, r.peer): r for cp in coded.values() for r in cp.shares}
    port = ctx.mesh()
    events: list[hb.HolderEvent] = []
    challenges: list[hb.Challenge] = []
    found: list[tuple[hb.Challenge, bool, str]] = []
    answered: set[str] = set()
    silent: set[str] = set()
    if port is not None and (rows or hb.HolderState.LOST in book.states().values()):
        cfg = node.cfg
        planner = hb.AuditPlanner(
            hb.AuditConfig(audit_every=cfg.audit_every or cfg.repair_every or 3600.0,
                           whole_cycle=cfg.health.whole_audit_every),
            cursor=int.from_bytes(node.ledger.meta(_CURSOR) or b"", "big"))
        refs = [hb.ShareRef(r.pack, r.index, r.peer,
                            share_blocks(r.size, sharefmt.HEADER_SIZE, sharefmt.DEFAULT_BLOCK_SIZE))
                for r in rows.values()]
        # The holders' states as last saved choose whom to audit (who is lost by now is
        # decided after this round's answers); an unpredictable draw (a holder that could guess the block could keep
        # only it).
        challenges = planner.plan(refs, book.states(), random.SystemRandom())
        node.ledger.set_meta(_CURSOR, planner.cursor.to_bytes(8, "big"))
        # Every holder not evicted is asked (a lost one too: it may be back).
        peers = sorted({k[2] for k in rows if book.state(k[2]) is not hb.HolderState.EVICTED}
                       | {p for p, st in book.states().items() if st is hb.HolderState.LOST})
        found, answered, silent = port.call(lambda mesh: mesh.audit_round(challenges, rows, peers))
        events += [hb.Answered(p) for p in sorted(answered)]
        events += per_holder([(ch.share.peer, ok, what) for ch, ok, what in found])
        node.ledger.mark([ch.share.key for ch, ok, _ in found if not ok], [ch.share.key for ch, ok, _ in found if ok])
        events += [hb.Unanswered(p) for p in sorted(silent)]
    changes = learn(node, book, ctx, events, wall_time())
    refresh_levels(node, ctx, book.states())
    passed = sum(1 for _, ok, _ in found if ok)
    failed = len(found) - passed
    code = EXIT_OK if not failed and not silent else EXIT_INCOMPLETE
    ctx.emit(c.AuditFinished(time_ns=time.time_ns(), scheduled=ctx.scheduled,
                             code=code, passed=passed, failed=failed))
    return c.AuditResult(code=code, challenges=len(challenges), passed=passed, failed=failed,
                         answered=len(answered), silent=len(silent),
                         changes=tuple(c.HolderChange(peer=x.peer, old=x.old.value, new=x.new.value,
                                                      reason=x.reason[:4096]) for x in changes[:4096]))


# -- health ------------------------------------------------------------------------------------


def note_repair(node: LocalNode, moved: int, seconds: float) -> None:
    """What the last repair moved and how long it took (the ETA's measured rate)."""
    if moved > 0 and seconds > 0:
        node.ledger.set_meta(_RATE, cbor2.dumps([moved, seconds, wall_time()]))


def count_member_repairs(node: LocalNode, packs: int) -> None:
    raw = node.ledger.meta(_MEMBER)
    node.ledger.set_meta(_MEMBER, (int.from_bytes(raw or b"", "big") + packs).to_bytes(8, "big"))


def measured_rate(node: LocalNode) -> tuple[float | None, float | None]:
    """(bytes per second, when) of the last repair that moved bytes."""
    raw = node.ledger.meta(_RATE)
    if not raw:
        return None, None
    try:
        moved, seconds, when = cbor2.loads(raw)
        return float(moved) / float(seconds), float(when)
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return None, None


def health(node: LocalNode, call: c.HealthCall, ctx: Context) -> c.HealthResult:
    from corestate.node.runtime.meshops import packs_of  # lazy: the runtime's tree walk
    book = current_book(node)  # not saved: health changes nothing
    states = book.states()
    views = pack_views(node)
    coded = {v.pack for v in views}
    store = node.repo.store
    # Packs never coded for the mesh (no peers yet) are as safe as this one disk.
    views += [hc.PackView(p, 1, 1, 0, (), True) for p in store.local_ids() if p not in coded]
    snaps = node.repo.snapshots()[-4096:]
    measured, last = measured_rate(node)
    cap = node.cfg.health.repair_bandwidth
    rate = min(cap, measured) if cap and measured else (cap or measured)
    s = hc.summarize(views, book.records(), states,
                     [(snap.id.hex(), packs_of(node, snap)) for snap in snaps], rate=rate)
    by_id = {snap.id.hex(): snap for snap in snaps}

    def levels(t: hc.Tally) -> c.PackLevels:
        return c.PackLevels(full=t.full, degraded=t.degraded, at_risk=t.at_risk, lost=t.lost)

    live = ctx.live()
    running = bool(node.ledger.meta(_RUNNING) == b"1") and live is not None
    member = int.from_bytes(node.ledger.meta(_MEMBER) or b"", "big")
    r = s.repair
    return c.HealthResult(
        packs=levels(s.total),
        snapshots=tuple(c.SnapshotLevels(snapshot_id=sid, short_id=by_id[sid].short_id, packs=levels(t))
                        for sid, t in s.snapshots),
        holders=tuple(c.HolderHealth(
            peer=h.peer, state=h.state.value,
            last_seen_ns=None if h.last_seen is None else int(h.last_seen * 1e9),
            audits_passed=h.passed, audits_failed=h.failed, shares=h.shares, score=f"{h.score:.3f}")
            for h in s.holders if h.shares or h.state is not hb.HolderState.OK)[:4096],
        repair=c.RepairStatus(
            running=running, packs=r.packs, shares=r.shares, bytes=r.bytes, unrepairable=r.unrepairable,
            eta_s=None if r.eta is None else int(r.eta + 0.999), reason=r.reason[:4096],
            last_ns=None if last is None else int(last * 1e9), member_repairs=member))


def set_running(node: LocalNode, running: bool) -> None:
    node.ledger.set_meta(_RUNNING, b"1" if running else b"0")


def shunned(node: LocalNode) -> set[str]:
    """Peers that get no new shares: evicted ones, and lost ones while they are lost."""
    book = current_book(node)
    return {p for p, st in book.states().items() if st in (hb.HolderState.EVICTED, hb.HolderState.LOST)}


OPERATIONS: tuple[Operation, ...] = (
    Operation(c.HealthCall, health, lock=False),
    Operation(c.AuditCall, audit),
)


__all__ = ["OPERATIONS", "audit", "count_member_repairs", "current_book", "health", "learn", "load_book", "measured_rate",
           "note_repair", "pack_views", "per_holder", "refresh_levels", "set_running", "shunned", "wall_time"]
