"""Repair by any member: the packs of an owner that is away, and the owner's adoption on return.

``member_repair`` (the daemon runs it right after its own scheduled repair, in the same
hold of the command lock) looks at every placement record of the other members in the
catalog. For an owner not heard of for ``[health] owner_away_after`` (node/core/lease.py)
it asks each holder of the owner's packs for the share's header (an honest holder verifies
the whole share before it serves a byte), counts a holder the holder book says is lost as
gone, and for each pack below full with at least k good shares follows the lease rules of
node/core/lease.py: claim in its turn (rank order per pack, ``STAGGER`` seconds apart),
let the claim sync for ``SETTLE`` seconds, decide again, and only the winner rebuilds the
missing shares from any k (no key needed: shares are ciphertext), puts them on new holders
*filed under the owner* (``PutShare.owner``), and writes the pack's placement — the good
holders and the new ones, ``owner`` set — in its own partition, dropping its lease.

``adopt`` runs on the owner (after each catalog sync round of the daemon, and before its
repair and audit): the placement records other members wrote for its packs add their
holders to its ledger (a holder's share root must be the one the ledger has for that index:
the code is deterministic), and its own placement record is written again. Each record is
adopted once (by author and sequence number), so a row the owner later forgets is not
brought back by an old record.

Invariants:
- A member never repairs the packs of an owner that is around, nor its own here.
- A share index a member places went to a holder holding no other share of the pack, and
  the pack's record in the member's partition is complete (good holders + new ones).
- Counting never doubles: an index counts once however many holders have it
  (node/core/health.py).
- An owner's storage targets (``target:NAME``) are out of a member's reach (no
  credentials): their shares count as present and unasked, are never rebuilt by a member,
  and a member puts no rebuilt share on a target of its own (module code, ``member_repair``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corestate.node.app import Context, Operation
from corestate.node.app import health as hmod
from corestate.node.core import holders as hb
from corestate.node.core import lease as ls
from corestate.node.core import records
from corestate.node.core.repair import Verdict
from corestate.node.ledger import ShareRow
from corestate.node.local import LocalNode
from corestate.node.targets.registry import holder_name
from corestate.protocol import control as c

from corestate.errors import CoreStateError

R = TypeVar("R")

STAGGER = ls.DEFAULT_STAGGER  # seconds between members' turns to claim a pack
SETTLE = 2.0  # seconds a claim has to reach the members before the claimer decides again
SETTLE_TRIES = 4
LEASE_FOR = ls.DEFAULT_LEASE


@dataclass(slots=True)
class Foreign:
    """What the catalog says of another owner's pack: its code and every holder any
    record names (the owner's own and members' repairs), one per (index, peer)."""

    owner: str
    pack: bytes
    k: int
    n: int
    size: int
    holders: dict[tuple[int, str], records.Holder] = field(default_factory=dict)


def _members_records(node: LocalNode, kind: records.Kind, decode: Callable[[bytes, bytes], R],
                     members: set[str]) -> Iterator[tuple[str, R]]:
    """(author, record) for each live record of ``kind`` that a member wrote; records that do
    not decode are skipped."""
    cat = node.group.catalog
    for author in cat.authors():
        if author not in members:
            continue
        for key, e in cat.entries(author).items():
            if e.value is None or records.kind(key) != kind:
                continue
            try:
                yield author, decode(key, e.value)
            except records.CorruptRecord:
                continue


def foreign_placements(node: LocalNode) -> dict[bytes, Foreign]:
    me = node.keys.peer_id
    members = set(node.group.members())
    out: dict[bytes, Foreign] = {}
    for author, rec in _members_records(node, records.Kind.PLACEMENT, records.Placement.decode, members):
        owner = rec.owner or author
        if owner == me or owner not in members:
            continue
        f = out.setdefault(rec.pack, Foreign(owner, rec.pack, rec.k, rec.n, rec.size))
        if (f.owner, f.k, f.n) != (owner, rec.k, rec.n):
            continue  # another code (or a claim on another owner's pack id): not mixed in
        for h in rec.holders:
            f.holders.setdefault((h.index, h.peer), h)
    return out


def leases(node: LocalNode) -> list[ls.Lease]:
    return [ls.Lease(rec.pack, rec.owner, author, rec.until_ms)
            for author, rec in _members_records(node, records.Kind.LEASE, records.RepairLease.decode,
                                                set(node.group.members()))]


def member_repair(node: LocalNode, call: c.MemberRepairCall, ctx: Context) -> c.MemberRepairResult:
    port = ctx.mesh()
    if port is None or not node.group.in_group:
        return _result(0)
    me = node.keys.peer_id
    cfg = node.cfg.health
    packs = foreign_placements(node)
    if not packs:
        return _result(0)
    now = hmod.wall_time()
    owners = sorted({f.owner for f in packs.values()})
    answered = port.call(lambda mesh: _ping_all(mesh, owners))
    away: list[str] = []
    for owner in owners:
        if owner in answered:
            continue
        entry = node.book.get(owner)
        last = entry.seen_ns / 1e9 if entry is not None and entry.seen_ns else None
        if last is None:  # never heard of: timed from when this member first looked
            key = f"watch.{owner}"
            raw = node.ledger.meta(key)
            if raw is None:
                node.ledger.set_meta(key, repr(now).encode())
                last = now
            else:
                last = float(raw.decode())
        if ls.owner_away(last, now, cfg.owner_away_after)[0]:
            away.append(owner)
    if not away:
        return _result(0)
    work = [f for f in packs.values() if f.owner in away]
    # What the holders have now; who is lost (this member's own holder book).
    verdicts: dict[tuple[bytes, int, str], Verdict] = {}
    for owner in away:
        rows = [ShareRow(f.pack, h.index, h.peer, h.root, h.size) for f in work if f.owner == owner
                for h in f.holders.values()]
        # The owner's storage targets (holders ``target:NAME``) are its own: no member has
        # their credentials, and a member's target of the same name is another store.
        # Their shares are not asked about, count as there (unreachable, not gone: a
        # member never rebuilds them), and teach this member's holder book nothing.
        for r in rows:
            if holder_name(r.peer) is not None:
                verdicts[(r.pack, r.index, r.peer)] = Verdict.UNREACHABLE
        rows = [r for r in rows if holder_name(r.peer) is None]
        verdicts.update(port.call(lambda mesh, rows=rows, owner=owner: mesh.probe_foreign(rows, owner)))
    book = hmod.load_book(node)
    events: list[hb.HolderEvent] = []
    asked = {k: v for k, v in verdicts.items() if holder_name(k[2]) is None}
    for peer in sorted({k[2] for k in asked}):
        e = node.book.get(peer)
        if e is not None and e.seen_ns:
            events.append(hb.Seen(peer, e.seen_ns / 1e9))
    for (_, _, peer), v in sorted(asked.items()):
        events.append(hb.Unanswered(peer) if v is Verdict.UNREACHABLE else hb.Answered(peer))
    hmod.learn(node, book, ctx, events, hmod.wall_time())
    states = book.states()
    # Peers only: a ``target:NAME`` in this member's book is its own target, not the owner's.
    gone = {p for p, st in states.items() if st in (hb.HolderState.LOST, hb.HolderState.EVICTED)
            and holder_name(p) is None}
    now_ms = int(hmod.wall_time() * 1000)
    needy: dict[bytes, tuple[Foreign, list[records.Holder], set[int]]] = {}
    for f in work:
        ok = [h for h in f.holders.values() if verdicts.get((f.pack, h.index, h.peer)) is Verdict.OK
              and h.peer not in gone]
        counted = {h.index for h in f.holders.values() if h.peer not in gone
                   and verdicts.get((f.pack, h.index, h.peer)) in (Verdict.OK, Verdict.UNREACHABLE)}
        if len(counted) >= f.n or len({h.index for h in ok}) < f.k:
            node.ledger.set_meta(f"need.{f.pack.hex()}", b"")
            continue
        needy[f.pack] = (f, ok, counted)
    if not needy:
        return _result(0, away=away)
    # Claims, each member in its turn for the pack.
    members = set(node.group.members()) - gone
    known = leases(node)
    claims: dict[bytes, bytes] = {}
    deferred = 0
    for pack, (f, _, _) in sorted(needy.items()):
        d = ls.decide(pack, f.owner, me, known, now_ms, away=True)
        if d.action is ls.Action.CLAIM:
            key = f"need.{pack.hex()}"
            raw = node.ledger.meta(key)
            since = float(raw.decode()) if raw else now
            if not raw:
                node.ledger.set_meta(key, repr(now).encode())
            if now - since >= ls.claim_delay(pack, me, members - {f.owner}, STAGGER):
                claims[records.lease_key(pack)] = records.RepairLease(pack, f.owner, now_ms + int(LEASE_FOR * 1000)).value()
        elif d.action is ls.Action.DEFER:
            deferred += 1
    if claims:
        node.group.write(claims)
        _settle(port)
        known = leases(node)
    now_ms = int(hmod.wall_time() * 1000)
    from corestate.node.runtime.mesh import RateLimiter  # lazy: a trio object
    rate = RateLimiter(cfg.repair_bandwidth)
    cands = None
    repaired = placed_total = 0
    problems: list[str] = []
    drop: dict[bytes, bytes | None] = {}
    write: dict[bytes, bytes | None] = {}
    for pack, (f, ok, counted) in sorted(needy.items()):
        d = ls.decide(pack, f.owner, me, known, now_ms, away=True)
        if d.action is ls.Action.YIELD:
            drop[records.lease_key(pack)] = None
            deferred += 1
            continue
        if d.action is not ls.Action.REPAIR:
            continue
        now_ms = int(hmod.wall_time() * 1000)
        mine = next((le for le in known if le.pack == pack and le.repairer == me), None)
        if mine is not None and ls.renew_due(mine, now_ms, int(LEASE_FOR * 1000)):
            # A long round: keep the lease ahead of the work (the next sync spreads it).
            node.group.write({records.lease_key(pack): records.RepairLease(
                pack, f.owner, now_ms + int(LEASE_FOR * 1000)).value()})
        if cands is None:
            found, _ = port.call(lambda mesh: mesh.candidates())
            # Not this member's own targets either: they hold their owner's shares only.
            cands = [cd for cd in found if cd.peer not in gone and cd.peer not in away
                     and holder_name(cd.peer) is None]
        assert cands is not None
        rows = [ShareRow(pack, h.index, h.peer, h.root, h.size) for h in ok]
        missing = tuple(i for i in range(f.n) if i not in counted)
        holders = tuple(sorted({(h.index, h.peer) for h in f.holders.values() if h.index in counted
                                and h.peer not in gone}))
        roots: dict[int, bytes] = {}
        try:
            placed = port.call(_Rebuild(f, rows, missing, holders, list(cands), rate, roots))
        except CoreStateError as exc:
            problems.append(f"pack {pack.hex()[:12]} of {f.owner[-8:]}: {exc}")
            continue
        size = next(iter(f.holders.values())).size if f.holders else 0
        kept = [h for h in f.holders.values() if h.peer not in gone and h.index in counted]
        new = [records.Holder(i, peer, roots[i], size) for i, peer in sorted(placed.items())]
        rec = records.Placement(pack, f.k, f.n, f.size, tuple(sorted(kept + new, key=lambda h: (h.index, h.peer))),
                                f.owner)
        write[rec.key] = rec.value()
        drop[records.lease_key(pack)] = None
        placed_total += len(placed)
        if len(placed) == len(missing):
            repaired += 1
        else:
            problems.append(f"pack {pack.hex()[:12]} of {f.owner[-8:]}: {len(missing) - len(placed)} "
                            "share(s) found no holder")
    if write or drop:
        node.group.write({**drop, **write})
        from corestate.node.app.maintain import tell_members
        tell_members(node, ctx)
    if repaired:
        hmod.count_member_repairs(node, repaired)
    code = 0 if not problems else 3
    return _result(code, away=away, repaired=repaired, deferred=deferred, placed=placed_total, problems=problems)


@dataclass(slots=True)
class _Rebuild:
    """Fetch any k shares of ``f``'s pack from ``rows``, rebuild ``missing`` and put them on
    new holders, filed under the owner (what ``port.call`` runs in the loop)."""

    f: Foreign
    rows: list[ShareRow]
    missing: tuple[int, ...]
    holders: tuple[tuple[int, str], ...]
    cands: list[Any]
    rate: Any
    roots: dict[int, bytes]

    async def __call__(self, mesh: Any) -> dict[int, str]:
        f = self.f
        data = await mesh.fetch_rows(f.pack, f.k, self.rows, f.owner, rate=self.rate)
        placed: dict[int, str] = await mesh.rebuild(f.pack, data, f.k, f.n, self.missing, self.holders,
                                                    self.cands, rate=self.rate, owner=f.owner, roots=self.roots)
        return placed


def _settle(port: object) -> None:
    """Let the claims reach the members: a sync round with all, a pause, then rounds until
    every member that answered the first one synced cleanly (two members settling at the
    same moment may refuse each other's concurrent round as busy: retried after a random
    pause), at most ``SETTLE_TRIES`` of them."""
    import random

    import trio

    async def run(mesh: object) -> None:
        groups = getattr(mesh, "groups", None)
        if groups is None:
            return
        first = await groups.sync_all()
        await trio.sleep(SETTLE)
        wanted = {p for p, why in first.items() if why == "ok" or "busy" in why}
        jitter = random.SystemRandom()
        for _ in range(SETTLE_TRIES):
            got = await groups.sync_all()
            if all(got.get(p) == "ok" for p in wanted):
                return
            await trio.sleep(jitter.uniform(0.2, 1.0))
    port.call(run)  # type: ignore[attr-defined]


async def _ping_all(mesh: object, peers: Iterable[str]) -> set[str]:
    import trio
    answered: set[str] = set()

    async def one(p: str) -> None:
        if await mesh.ping(p):  # type: ignore[attr-defined]
            answered.add(p)
    async with trio.open_nursery() as nursery:
        for p in peers:
            nursery.start_soon(one, p)
    return answered


def _result(code: int, *, away: Iterable[str] = (), repaired: int = 0, deferred: int = 0, placed: int = 0,
            problems: Iterable[str] = ()) -> c.MemberRepairResult:
    return c.MemberRepairResult(code=code, owners_away=tuple(away)[:4096], packs_repaired=repaired,
                                packs_deferred=deferred, shares_placed=placed,
                                problems=tuple(p[:4096] for p in problems)[:4096])


# -- the owner adopts ------------------------------------------------------------------------


def adopt(node: LocalNode) -> int:
    """Take into this node's ledger the holders that members placed for its packs while it
    was away (see the module docstring). Returns the shares adopted."""
    if not node.group.in_group:
        return 0
    me = node.keys.peer_id
    cat = node.group.catalog
    adopted = 0
    changed: set[bytes] = set()
    vouched: dict[str, float] = {}  # holder -> when a member's signed record says it took a share
    for author in cat.authors():
        head = cat.head(author)
        if author == me or head is None:
            continue
        # Only entries newer than what was looked at last time (per author: epoch, seq), so
        # a sync round costs what it brought, and a record is adopted once.
        mark = f"adopted.{author}"
        raw = node.ledger.meta(mark)
        epoch, seen = (int(x) for x in raw.decode().split(":")) if raw else (-1, -1)
        since = seen if epoch == head[0] else -1
        for key, e in cat.entries(author).items():
            if e.seq <= since or e.value is None or records.kind(key) != records.Kind.PLACEMENT:
                continue
            try:
                rec = records.Placement.decode(key, e.value)
            except records.CorruptRecord:
                continue
            if rec.owner != me:
                continue
            cp = node.ledger.get(rec.pack)
            if cp is not None and (cp.k, cp.n) == (rec.k, rec.n) and not cp.owner:
                roots = {r.index: r.root for r in cp.shares}
                have = {(r.index, r.peer) for r in cp.shares}
                for h in rec.holders:
                    if (h.index, h.peer) in have or h.peer == me:
                        continue
                    if h.index in roots and roots[h.index] != h.root:
                        continue  # not the share this node coded: never taken on a member's word
                    node.ledger.record_share(rec.pack, h.index, h.peer, h.root, h.size)
                    adopted += 1
                    changed.add(rec.pack)
                    at = (e.hlc >> 16) / 1000  # the HLC's physical part: ms since the epoch
                    vouched[h.peer] = max(vouched.get(h.peer, 0.0), at)
        node.ledger.set_meta(mark, f"{head[0]}:{head[1]}".encode())
    if changed:
        from corestate.node.runtime import meshops  # lazy: the runtime's record builder
        node.group.write(meshops.placement_items(node, changed))
    if vouched:
        # A holder a member put a share on was there then: a holder this node had counted
        # lost while away is back (its old copies are surplus: doomed, deleted on answer).
        book = hmod.load_book(node)
        now = hmod.wall_time()
        for peer, at in sorted(vouched.items()):
            book.handle(hb.Seen(peer, at), now)
        node.ledger.save_holders(book.records())
    return adopted


OPERATIONS: tuple[Operation, ...] = (
    Operation(c.MemberRepairCall, member_repair),
)


__all__ = ["LEASE_FOR", "OPERATIONS", "SETTLE", "STAGGER", "adopt", "foreign_placements", "leases", "member_repair"]
