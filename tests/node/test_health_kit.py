"""Health without a user on the in-process kit (virtual clock): audits, reputation, lost
holders, surplus shares, the repair rate cap, ``health``'s answer. The real-daemon stories
are in tests/node/test_health_daemons.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from corestate.node.app import Local
from corestate.node.app import health as hmod
from corestate.node.local import LocalNode
from corestate.node.runtime.testkit import (
    KitPort,
    MemoryMesh,
    VirtualClock,
    memory_mesh,
    small_tree,
)
from corestate.protocol import control as c

BUDGET = 30.0
pytestmark = pytest.mark.usefixtures("timed")  # tests/node/conftest.py, within BUDGET




@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The holder book's clock, moved by the test (the kit's clock is virtual)."""
    offset = [0.0]
    monkeypatch.setattr(hmod, "wall_time", lambda: time.time() + offset[0])
    yield offset


async def op(kit: MemoryMesh, i: int, call: Any, events: list[Any] | None = None) -> Any:
    def run(node: LocalNode, port: KitPort) -> Any:
        from corestate.node.app.registry import OPERATIONS
        ctx = Local(port=port, on_event=(events.append if events is not None else None))
        answer = OPERATIONS[type(call)].run(node, call, ctx)
        return answer if isinstance(answer, c.Message) else list(answer)
    return await kit.run_sync(i, run)


def alerts(events: list[Any], name: str) -> list[c.Alert]:
    return [e for e in events if isinstance(e, c.Alert) and e.alert == name]


def holder(res: c.HealthResult, peer: str) -> c.HolderHealth:
    return next(h for h in res.holders if h.peer == peer)


async def test_a_lost_holder_is_rebuilt_elsewhere_and_its_surplus_deleted_on_return(
        tmp_path: Path, homes: Path, clock: VirtualClock, wall: list[float]) -> None:
    async with memory_mesh(homes, 6, start=False) as kit:
        kit.edit_config(0, 'holder_lost_after = "3d"', 'holder_lost_after = "30s"')
        await kit.start()
        src = small_tree(tmp_path / "src", mib=3, files=4, seed=5)
        b = await kit.backup(0, [src], k=2, n=4)
        assert b.pushed is not None and b.pushed.safe
        victim = kit.nodes[1]
        held = [p for p, cp in kit.nodes[0].local().ledger.all().items()
                if any(r.peer == victim.peer_id for r in cp.shares)]
        assert held
        events: list[Any] = []
        res = await op(kit, 0, c.AuditCall(), events)
        assert res.code == 0 and res.failed == 0 and res.answered == 5
        await kit.kill(1)
        wall[0] += 20
        res = await op(kit, 0, c.AuditCall(), events)
        assert res.silent == 1 and res.changes == ()  # unreachable, not lost yet
        h = await op(kit, 0, c.HealthCall())
        assert holder(h, victim.peer_id).state == "ok" and h.packs.lost == 0
        wall[0] += 11
        res = await op(kit, 0, c.AuditCall(), events)
        assert [(x.peer, x.new) for x in res.changes] == [(victim.peer_id, "lost")]
        assert len(alerts(events, "holder-lost")) == 1
        h = await op(kit, 0, c.HealthCall())
        assert holder(h, victim.peer_id).state == "lost"
        assert h.packs.full + h.packs.degraded == len(kit.nodes[0].local().ledger.all())
        assert h.packs.degraded == len(held) and h.repair.shares == len(held)
        # repair rebuilds the lost holder's shares on others, none on it
        items = await op(kit, 0, c.RepairCall(dry_run=False), events)
        summary = items[-1]
        assert summary.complete, items
        h = await op(kit, 0, c.HealthCall())
        assert h.packs == c.PackLevels(full=h.packs.full, degraded=0, at_risk=0, lost=0)
        assert h.repair.packs == 0 and h.repair.eta_s == 0
        ledger = kit.nodes[0].local().ledger
        assert not any(r.peer == victim.peer_id for cp in ledger.all().values() for r in cp.shares)
        assert {(p, peer) for p, _, peer in ledger.doomed()} == {(p, victim.peer_id) for p in held}
        # it comes back: an audit sees it, the next repair deletes its surplus copies (signed)
        await kit.start(1)
        before = _share_count(victim.home)
        assert before >= len(held)
        res = await op(kit, 0, c.AuditCall(), events)
        assert [(x.peer, x.new) for x in res.changes] == [(victim.peer_id, "ok")]
        items = await op(kit, 0, c.RepairCall(dry_run=False), events)
        assert items[-1].shares_deleted == len(held) and ledger.doomed() == []
        assert _share_count(victim.home) == before - len(held)
        h = await op(kit, 0, c.HealthCall())
        assert h.packs.degraded == h.packs.lost == 0  # never counted twice: still just full


def _share_count(home: Path) -> int:
    return sum(1 for sub in (home / "shares").iterdir() if sub.is_dir() and len(sub.name) == 2
               for p in sub.iterdir() if len(p.name) == 64)


async def _lose(kit: MemoryMesh, wall: list[float], owner: int, victim: int, events: list[Any]) -> None:
    """Kill ``victim`` and let ``owner``'s audits count it lost."""
    await op(kit, owner, c.AuditCall(), events)
    await kit.kill(victim)
    wall[0] += 31
    res = await op(kit, owner, c.AuditCall(), events)
    assert [(x.peer, x.new) for x in res.changes] == [(kit.nodes[victim].peer_id, "lost")]


async def test_shares_rotting_on_a_holder_are_found_by_audits_and_rebuilt(
        tmp_path: Path, homes: Path, clock: VirtualClock, wall: list[float]) -> None:
    async with memory_mesh(homes, 6) as kit:
        src = small_tree(tmp_path / "src", mib=3, files=4, seed=6)
        b = await kit.backup(0, [src], k=2, n=4)
        assert b.pushed is not None and b.pushed.safe
        victim = kit.nodes[2]
        ledger = kit.nodes[0].local().ledger
        mine = [(p, r.index) for p, cp in ledger.all().items() for r in cp.shares if r.peer == victim.peer_id]
        assert len(mine) >= 2
        files = [f for sub in (victim.home / "shares").iterdir() if sub.is_dir() and len(sub.name) == 2
                 for f in sub.iterdir() if len(f.name) == 64]
        for f in files:  # the disk rots: a few bytes flipped in the middle of each share file
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF
            f.write_bytes(bytes(data))
        events: list[Any] = []
        res = await op(kit, 0, c.AuditCall(), events)
        assert res.failed >= 1 and res.code == 3
        h = await op(kit, 0, c.HealthCall())
        state = holder(h, victim.peer_id).state
        assert state == "suspect" and holder(h, victim.peer_id).audits_failed == 1  # one round, one audit
        assert alerts(events, "failed-audit") or res.failed  # the mesh raised it on the bus, too
        while holder(h, victim.peer_id).state != "evicted":
            await op(kit, 0, c.AuditCall(), events)
            h = await op(kit, 0, c.HealthCall())
        assert len(alerts(events, "holder-evicted")) == 1
        items = await op(kit, 0, c.RepairCall(dry_run=False), events)
        assert items[-1].complete, items
        placed = {peer for r in items if isinstance(r, c.Rebuilt) for _, peer in r.placed}
        assert placed and victim.peer_id not in placed  # an evicted holder gets no new shares
        h = await op(kit, 0, c.HealthCall())
        assert h.packs.degraded == h.packs.at_risk == h.packs.lost == 0
        assert holder(h, victim.peer_id).state == "evicted" and holder(h, victim.peer_id).shares == 0


async def test_a_holder_that_kept_only_a_few_blocks_is_caught(
        tmp_path: Path, homes: Path, clock: VirtualClock, wall: list[float]) -> None:
    """The holder throws away all but the first two blocks of every share and answers
    audits from what it kept: for any other block it can only send a proof of a block it
    has, which does not check (the block index is bound into the leaf)."""
    from corestate.node.errors import ShareNotFound
    async with memory_mesh(homes, 6) as kit:
        src = small_tree(tmp_path / "src", mib=6, files=3, seed=7)  # shares of 8+ blocks
        b = await kit.backup(0, [src], k=2, n=4)
        assert b.pushed is not None and b.pushed.safe
        victim = kit.nodes[3]
        vault = victim.mesh.vault  # type: ignore[union-attr]
        honest = vault.prove

        def prove(sender: str, pack: bytes, index: int, block: int) -> bytes:
            return honest(sender, pack, index, block if block < 2 else 0)

        def open_share(sender: str, pack: bytes, index: int, offset: int = 0, length: int = -1) -> Any:
            raise ShareNotFound(pack, index, "kept only two blocks")
        vault.prove = prove  # type: ignore[method-assign]
        vault.open_share = open_share  # type: ignore[method-assign]
        events: list[Any] = []
        rounds = 0
        h = await op(kit, 0, c.HealthCall())
        while holder(h, victim.peer_id).state != "evicted":
            rounds += 1
            assert rounds <= 30, h  # its tiny metadata shares (one block) pass: it takes a few rounds
            await op(kit, 0, c.AuditCall(), events)
            h = await op(kit, 0, c.HealthCall())
        items = await op(kit, 0, c.RepairCall(dry_run=False), events)
        assert items[-1].complete
        h = await op(kit, 0, c.HealthCall())
        assert h.packs.degraded == h.packs.at_risk == h.packs.lost == 0


async def test_repair_bandwidth_caps_the_rate(tmp_path: Path, homes: Path, clock: VirtualClock,
                                              wall: list[float]) -> None:
    async with memory_mesh(homes, 6, start=False) as kit:
        kit.edit_config(0, 'holder_lost_after = "3d"', 'holder_lost_after = "30s"')
        kit.edit_config(0, "repair_bandwidth = 0", 'repair_bandwidth = "1 MiB/s"')
        await kit.start()
        src = small_tree(tmp_path / "src", mib=4, files=4, seed=8)
        b = await kit.backup(0, [src], k=2, n=4)
        assert b.pushed is not None and b.pushed.safe
        events: list[Any] = []
        await _lose(kit, wall, 0, 1, events)
        h = await op(kit, 0, c.HealthCall())
        assert h.repair.bytes > 2 << 20  # more than two seconds' worth at the cap
        assert h.repair.eta_s is not None and h.repair.eta_s >= h.repair.bytes // (1 << 20)
        t0 = trio.current_time()
        items = await op(kit, 0, c.RepairCall(dry_run=False), events)
        took = trio.current_time() - t0
        assert items[-1].complete
        moved = h.repair.bytes
        assert took >= 0.95 * moved / (1 << 20), (took, moved)
        assert took <= 3 * moved / (1 << 20) + 10


# -- repair by any member ----------------------------------------------------------------------


async def _group_with_a_backup(kit: MemoryMesh, tmp_path: Path, wall: list[float]) -> tuple[Path, str, set[bytes]]:
    """Nodes 0..5 in one group; node 0 backs up (k=2, n=3); returns the tree, the PeerID of
    a holder of some of node 0's shares, and the packs it holds."""
    for i in range(len(kit.nodes)):
        kit.edit_config(i, 'owner_away_after = "3d"', 'owner_away_after = "20s"')
        kit.edit_config(i, 'holder_lost_after = "3d"', 'holder_lost_after = "30s"')
    await kit.start()
    await kit.form_group(0)
    src = small_tree(tmp_path / "src", mib=3, files=4, seed=9)
    b = await kit.backup(0, [src], k=2, n=3)
    assert b.pushed is not None and b.pushed.safe
    await kit.sync_round()
    await kit.sync_round()  # everyone's address advert reaches everyone
    ledger = kit.nodes[0].local().ledger
    counts: dict[str, int] = {}
    for cp in ledger.all().values():
        for r in cp.shares:
            counts[r.peer] = counts.get(r.peer, 0) + 1
    victim = max(sorted(counts), key=lambda p: counts[p])
    held = {p for p, cp in ledger.all().items() if any(r.peer == victim for r in cp.shares)}
    return src, victim, held


def _member_records(kit: MemoryMesh, reader: int, owner: str) -> dict[str, dict[bytes, Any]]:
    """author -> pack -> Placement, for the placements members wrote for ``owner``."""
    from corestate.node.core import records
    cat = kit.nodes[reader].local().group.catalog
    out: dict[str, dict[bytes, Any]] = {}
    for author in cat.authors():
        if author == owner:
            continue
        for key, e in cat.entries(author).items():
            if e.value is not None and records.kind(key) is records.Kind.PLACEMENT:
                rec = records.Placement.decode(key, e.value)
                if rec.owner == owner:
                    out.setdefault(author, {})[rec.pack] = rec
    return out


async def test_members_repair_an_absent_owners_packs_and_it_adopts_them(
        tmp_path: Path, homes: Path, clock: VirtualClock, wall: list[float]) -> None:
    from corestate.node.app import rescue
    async with memory_mesh(homes, 6, trusted=False, start=False) as kit:
        src, victim, held = await _group_with_a_backup(kit, tmp_path, wall)
        owner = kit.nodes[0].peer_id
        vi = next(kn.index for kn in kit.nodes if kn.peer_id == victim)
        members = [i for i in range(1, 6) if i != vi]
        await kit.kill(0)
        # The owner away but not long enough: nobody touches its packs.
        wall[0] += 10
        res = await op(kit, members[0], c.MemberRepairCall())
        assert res.owners_away == () and res.packs_repaired == 0
        await kit.kill(vi)
        wall[0] += 15  # owner away 25 s > 20 s; the dead holder not lost yet (30 s)
        res = await op(kit, members[0], c.MemberRepairCall())
        assert res.owners_away == (owner,) and res.packs_repaired == 0 and res.shares_placed == 0
        wall[0] += 10
        for i in members:  # each member's scheduled run, one after the other
            await op(kit, i, c.MemberRepairCall())
        await kit.sync_round()
        recs = _member_records(kit, members[0], owner)
        repaired = {p for by in recs.values() for p in by}
        assert repaired == held
        for pack in held:  # one member repaired each pack; the dead holder is out of its record
            authors = [a for a, by in recs.items() if pack in by]
            assert len(authors) == 1
            rec = recs[authors[0]][pack]
            assert victim not in {h.peer for h in rec.holders}
            assert sorted(h.index for h in rec.holders) == list(range(3))
        # The owner comes back with its repair schedule at a day: a sync, the adoption, and
        # full redundancy at once; then it restores with the dead holder still dead.
        # (The catalog's HLC runs on the real clock, which the test did not move: back to it,
        # so that the records' times and the holder book's agree.)
        wall[0] = 0
        await kit.start(0)
        await kit.sync_round(0)
        n = await kit.run_sync(0, lambda node, port: rescue.adopt(node))
        assert n == len(held)
        h = await op(kit, 0, c.HealthCall())
        assert h.packs.degraded == h.packs.at_risk == h.packs.lost == 0  # each index counts once
        stats = await kit.restore(0, "latest", tmp_path / "out")
        assert stats.errors == []
        from corestate.node.treecompare import differences
        assert differences(src, tmp_path / "out" / str(src).lstrip("/")) == []
        # Adopted once: a second pass takes nothing again.
        assert await kit.run_sync(0, lambda node, port: rescue.adopt(node)) == 0


async def test_two_members_racing_for_one_pack_repair_it_once(
        tmp_path: Path, homes: Path, clock: VirtualClock, wall: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No turns (stagger 0): every member claims every pack at once; the leases' tie-break
    leaves one repairer per pack, and no share index is placed twice."""
    from corestate.node.app import rescue
    monkeypatch.setattr(rescue, "STAGGER", 0.0)
    async with memory_mesh(homes, 6, trusted=False, start=False) as kit:
        _, victim, held = await _group_with_a_backup(kit, tmp_path, wall)
        owner = kit.nodes[0].peer_id
        vi = next(kn.index for kn in kit.nodes if kn.peer_id == victim)
        members = [i for i in range(1, 6) if i != vi]
        await kit.kill(0, vi)
        wall[0] += 40
        results: dict[int, Any] = {}

        async def run(i: int) -> None:
            results[i] = await op(kit, i, c.MemberRepairCall())
        async with trio.open_nursery() as nursery:
            for i in members[:2]:
                nursery.start_soon(run, i)
        a, b = (results[i] for i in members[:2])
        assert a.packs_repaired + b.packs_repaired == len(held), (a.problems, b.problems, a, b)
        assert a.packs_deferred + b.packs_deferred == len(held)  # the losers yielded
        await kit.sync_round()
        recs = _member_records(kit, members[2], owner)
        for pack in held:
            assert len([x for x in recs.values() if pack in x]) == 1
        # On the holders: every share index of every pack is held once (the dead one aside).
        files: dict[tuple[bytes, int], int] = {}
        for kn in kit.nodes:
            if kn.index in (0, vi) or kn.mesh is None:
                continue
            for pack in held:
                for idx in range(3):
                    if kn.mesh.vault.sizes(owner, [(pack, idx)])[0] >= 0:
                        files[(pack, idx)] = files.get((pack, idx), 0) + 1
        assert all(v == 1 for v in files.values()), files
        assert len(files) == 3 * len(held)


async def test_packs_below_k_are_lost_and_alerted_once(tmp_path: Path, homes: Path, clock: VirtualClock,
                                                      wall: list[float]) -> None:
    async with memory_mesh(homes, 5, start=False) as kit:
        kit.edit_config(0, 'holder_lost_after = "3d"', 'holder_lost_after = "30s"')
        await kit.start()
        src = small_tree(tmp_path / "src", mib=3, files=4, seed=10)
        b = await kit.backup(0, [src], k=2, n=3)
        assert b.pushed is not None and b.pushed.safe
        events: list[Any] = []
        await op(kit, 0, c.AuditCall(), events)
        ledger = kit.nodes[0].local().ledger
        remote = {p: cp for p, cp in ledger.all().items() if not cp.local}
        pack, cp = sorted(remote.items())[0]
        dead = sorted({r.peer for r in cp.shares})[:2]  # two of its three holders
        await kit.kill(*(kn.index for kn in kit.nodes if kn.peer_id in dead))
        wall[0] += 31
        res = await op(kit, 0, c.AuditCall(), events)
        assert sorted(x.peer for x in res.changes if x.new == "lost") == dead
        lost_alerts = alerts(events, "pack-lost")
        named = {v for a in lost_alerts for key, v in a.details.items() if key.startswith("pack") and len(v) == 64}
        assert pack.hex() in named
        assert all(a.severity == "critical" for a in lost_alerts)
        counted = sum(int(a.details.get("packs", "1")) for a in lost_alerts)  # one alert for many
        h = await op(kit, 0, c.HealthCall())
        assert h.packs.lost == counted and h.repair.unrepairable == h.packs.lost
        assert len(lost_alerts) <= hmod.ALERTS_PER_KIND or len(lost_alerts) == 1
        assert kit.status(0).redundancy.lost == h.packs.lost
        low = alerts(events, "redundancy-low")  # the packs left with exactly k
        assert sum(int(a.details.get("packs", "1")) for a in low) == h.packs.at_risk > 0
        assert len(low) <= hmod.ALERTS_PER_KIND or len(low) == 1
        await op(kit, 0, c.AuditCall(), events)  # still lost: no second alert
        assert len(alerts(events, "pack-lost")) == len(lost_alerts)


async def test_shares_for_another_owner_are_taken_from_members_for_members_only(
        tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    """``PutShare.owner``: a member may file a share under another member (repair for an
    absent owner); for a non-member owner, or outside a group, the holder refuses."""
    import blake3
    from corestate.erasure import share as sharefmt
    from corestate.node.runtime.mesh import PeerRefused
    from corestate.protocol import messages as m
    data = bytes(range(256)) * 300
    pack = blake3.blake3(data).digest()
    share = sharefmt.make_shares(data, 2, 3, pack_id=pack)[1]

    def put(owner: str) -> m.PutShare:
        return m.PutShare(pack=pack, index=1, size=len(share), digest=blake3.blake3(share).digest(), owner=owner)
    async with memory_mesh(homes, 4, start=True) as kit:  # trusted, not yet a group
        holder, sender = kit.nodes[0], kit.nodes[1]
        assert sender.mesh is not None and holder.mesh is not None
        with pytest.raises(PeerRefused) as no_group:
            await sender.mesh.request(holder.peer_id, put(kit.nodes[2].peer_id), bulk=share)
        assert no_group.value.code == "refused"
        await kit.form_group(0, [1, 2])  # node 3 stays outside
        with pytest.raises(PeerRefused) as outsider:
            await sender.mesh.request(holder.peer_id, put(kit.nodes[3].peer_id), bulk=share)
        assert outsider.value.code == "refused"
        assert holder.mesh.vault.sizes(kit.nodes[3].peer_id, [(pack, 1)]) == [-1]
        await sender.mesh.request(holder.peer_id, put(kit.nodes[2].peer_id), bulk=share)
        # Filed under the owner: the owner sees it as its own, the sender has nothing there.
        assert holder.mesh.vault.sizes(kit.nodes[2].peer_id, [(pack, 1)]) == [len(share)]
        assert holder.mesh.vault.sizes(sender.peer_id, [(pack, 1)]) == [-1]
