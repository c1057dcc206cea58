"""Health without a user on the in-process kit (virtual clock): audits, reputation, lost
holders, surplus shares, the repair rate cap, ``health``'s answer. The real-daemon stories
are in tests/node/test_health_daemons.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corestate.node.app import Local
from corestate.node.app import health as hmod
from corestate.node.local import LocalNode
from corestate.node.runtime.testkit import (
    KitPort,
    MemoryMesh,
    VirtualClock,
    memory_mesh,
    scratch_dir,
    small_tree,
)
from corestate.protocol import control as c

BUDGET = 30.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def homes() -> Iterator[Path]:
    with scratch_dir() as d:
        yield d


@pytest.fixture(autouse=True)
def timed(request: pytest.FixtureRequest) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    print(f"{request.node.name}: {took * 1000:.0f} ms")
    assert took < BUDGET, f"{request.node.name} took {took:.1f} s"


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
        return answer if isinstance(answer, c.HealthResult | c.AuditResult) else list(answer)
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
