"""A storage target answering the share service (node/runtime/targethost.py), in one process.

Each test drives a ``TargetHolder`` over a real backend (the folder store here; the factory
``make_target`` is the one place that says which) with the messages the mesh sends, and
checks the replies the way the mesh does: proofs against the root recorded at upload,
errors as ``PeerRefused`` codes or as an unreachable holder (``TargetDown``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import trio
from corestate.erasure import share as sharefmt
from corestate.node.runtime.mesh import PeerRefused
from corestate.node.runtime.targethost import TargetDown, TargetHolder, leaves_key, share_key
from corestate.node.targets.registry import TargetSpec, open_store
from corestate.node.targets.store import ObjectStore, TargetAuthError
from corestate.protocol import messages as m

# The backend the tests run on: a TargetSpec for a fresh, empty target named ``name``.
TargetFactory = Callable[[Path, str], TargetSpec]


def folder_target(tmp: Path, name: str) -> TargetSpec:
    root = tmp / f"target-{name}"
    root.mkdir(parents=True, exist_ok=True)
    return TargetSpec(name, f"file://{root}")


@pytest.fixture(params=[folder_target], ids=["folder"])
def make_target(request: pytest.FixtureRequest) -> TargetFactory:
    factory: TargetFactory = request.param
    return factory


def _shares(size: int, k: int = 2, n: int = 3, block: int = 1 << 12) -> tuple[bytes, list[bytes]]:
    data = os.urandom(size)
    pack = blake3.blake3(data).digest()
    return pack, sharefmt.make_shares(data, k, n, pack_id=pack, block_size=block)


def _put(share: bytes, pack: bytes, index: int) -> m.PutShare:
    return m.PutShare(pack=pack, index=index, size=len(share), digest=blake3.blake3(share).digest())


def _holder(spec: TargetSpec, used: Callable[[], int] = lambda: 0, timeout: float = 10.0,
            store: ObjectStore | None = None) -> TargetHolder:
    return TargetHolder(spec, store or open_store(spec), used, timeout)


def _run(fn: Callable[[], Any]) -> Any:
    return trio.run(fn)


def test_put_get_has_audit_delete_round_trip(tmp_path: Path, make_target: TargetFactory) -> None:
    spec = make_target(tmp_path, "nas")
    th = _holder(spec)
    pack, shares = _shares(200_000)
    root = sharefmt.read_header(shares[1]).root

    async def main() -> None:
        reply, _ = await th.request(_put(shares[1], pack, 1), bulk=shares[1])
        assert isinstance(reply, m.Ok)
        reply, data = await th.request(m.GetShare(pack=pack, index=1, offset=0, length=-1),
                                       expect_size=len(shares[1]))
        assert data == shares[1] and reply.size == len(shares[1])
        _, part = await th.request(m.GetShare(pack=pack, index=1, offset=100, length=50), expect_size=50)
        assert part == shares[1][100:150]
        reply, _ = await th.request(m.HasShares(items=((pack, 1), (pack, 2))))
        assert reply.sizes == (len(shares[1]), -1)
        blocks = sharefmt.read_header(shares[1]).block_count
        assert blocks > 10
        for block in (0, blocks // 2, blocks - 1):
            reply, _ = await th.request(m.AuditShare(pack=pack, index=1, block=block))
            assert sharefmt.verify_proof(root, block, reply.proof)
        with pytest.raises(PeerRefused) as info:
            await th.request(m.AuditShare(pack=pack, index=1, block=blocks))
        assert info.value.code == "bad-block"
        reply, _ = await th.request(m.DeleteShare(pack=pack, index=1, holder=spec.holder,
                                                  nonce=bytes(16), signature=bytes(64)))
        assert isinstance(reply, m.Ok)
        reply, _ = await th.request(m.HasShares(items=((pack, 1),)))
        assert reply.sizes == (-1,)
        with pytest.raises(PeerRefused) as info:
            await th.request(m.GetShare(pack=pack, index=1, offset=0, length=-1))
        assert info.value.code == "not-found"
    _run(main)
    assert list(open_store(spec).list()) == []  # the share and its leaves are gone


def test_a_put_is_checked_before_it_is_stored(tmp_path: Path, make_target: TargetFactory) -> None:
    spec = make_target(tmp_path, "nas")
    th = _holder(spec)
    pack, shares = _shares(50_000)

    async def main() -> None:
        wrong = bytearray(shares[0])
        wrong[-1] ^= 1
        with pytest.raises(PeerRefused, match="digest"):  # bytes other than announced
            await th.request(_put(shares[0], pack, 0), bulk=bytes(wrong))
        with pytest.raises(PeerRefused, match="not a valid share"):  # a payload its root does not cover
            await th.request(_put(bytes(wrong), pack, 0), bulk=bytes(wrong))
        with pytest.raises(PeerRefused, match="another pack or index"):
            await th.request(_put(shares[0], pack, 1), bulk=shares[0])
    _run(main)
    assert list(open_store(spec).list()) == []


def test_audit_fails_for_a_changed_block_header_or_leaves(tmp_path: Path, make_target: TargetFactory) -> None:
    """What the target returns now is what is proved: a flipped byte in the block asked,
    in the share's header or in the leaves object makes the proof fail against the
    recorded root. A missing leaves object falls back to the whole share (still honest)."""
    spec = make_target(tmp_path, "nas")
    store = open_store(spec)
    th = _holder(spec, store=store)
    pack, shares = _shares(100_000)
    share = shares[0]
    root = sharefmt.read_header(share).root
    hdr = sharefmt.read_header(share)
    lo, _ = sharefmt.merkle.block_bounds(3, hdr.payload_length, hdr.block_size)

    def flip(key: str, at: int) -> bytes:
        before = store.get(key)
        data = bytearray(before)
        data[at] ^= 0x40
        store.put(key, bytes(data), len(data))
        return before

    async def proved(block: int) -> bool:
        """Whether the audit passes, as Mesh.audit_round judges it (a ``bad-block``
        refusal is a failed audit too)."""
        try:
            reply, _ = await th.request(m.AuditShare(pack=pack, index=0, block=block))
        except PeerRefused as exc:
            assert exc.code == "bad-block"
            return False
        return sharefmt.verify_proof(root, block, reply.proof)

    async def main() -> None:
        await th.request(_put(share, pack, 0), bulk=share)
        assert await proved(3)
        good = flip(share_key(pack, 0), sharefmt.HEADER_SIZE + lo + 7)  # the block asked
        assert not await proved(3)
        assert await proved(4)  # another block still proves: spot checks are per block
        store.put(share_key(pack, 0), good, len(good))
        for at in (5, 20, 40):  # the header: k, the data length, the pack id
            good = flip(share_key(pack, 0), at)
            assert not await proved(3)
            store.put(share_key(pack, 0), good, len(good))
        good = flip(leaves_key(pack, 0), 32 * 2 + 5)  # a sibling hash on block 3's path
        assert not await proved(3)
        store.put(leaves_key(pack, 0), good, len(good))
        assert await proved(3)
        store.delete(leaves_key(pack, 0))
        assert await proved(3)  # proved from the whole share
        flip(share_key(pack, 0), sharefmt.HEADER_SIZE + lo + 1)
        assert not await proved(3)
    _run(main)


def test_quota_refuses_past_it_with_the_vaults_error(tmp_path: Path, make_target: TargetFactory) -> None:
    """Quota 1 MiB, shares of about 400 KiB: two fit, the third is refused (code
    ``quota``), and Capacity says what is left. Used = what the ledger records there."""
    recorded: list[int] = []
    spec = make_target(tmp_path, "nas")
    spec = dataclasses.replace(spec, quota=1 << 20)
    th = _holder(spec, used=lambda: sum(recorded))
    pack, shares = _shares(800_000, k=2, n=4)
    assert 390_000 < len(shares[0]) < 420_000

    async def main() -> None:
        for i in (0, 1):
            await th.request(_put(shares[i], pack, i), bulk=shares[i])
            recorded.append(len(shares[i]))
        cap, _ = await th.request(m.Capacity())
        assert cap.quota_left == (1 << 20) - sum(recorded)
        assert cap.free <= cap.quota_left
        with pytest.raises(PeerRefused) as info:
            await th.request(_put(shares[2], pack, 2), bulk=shares[2])
        assert info.value.code == "quota" and "quota exceeded" in str(info.value)
    _run(main)
    assert {k for k, _ in open_store(spec).list()} == {share_key(pack, i) for i in (0, 1)} | {
        leaves_key(pack, i) for i in (0, 1)}


class _Counting:
    """A backend that counts its lookups and listings."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.name = inner, inner.name
        self.sizes = self.lists = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def size(self, key: str) -> int | None:
        self.sizes += 1
        return self.inner.size(key)

    def list(self, prefix: str = "") -> Any:
        self.lists += 1
        return self.inner.list(prefix)


def test_a_large_has_is_answered_from_one_listing(tmp_path: Path, make_target: TargetFactory) -> None:
    """Past LIST_ABOVE (64) shares, HAS lists the target once (kept for the round's next
    batches) instead of one lookup per share; what the listing lacks is looked up, so a
    share put after it is not reported missing; a share deleted is."""
    from corestate.node.runtime.targethost import LIST_ABOVE
    spec = make_target(tmp_path, "nas")
    store = _Counting(open_store(spec))
    th = _holder(spec, store=store)  # type: ignore[arg-type]
    made = [_shares(3_000, k=1, n=1, block=1 << 10) for _ in range(LIST_ABOVE + 6)]

    async def main() -> None:
        for pack, (share,) in made[:-1]:
            await th.request(_put(share, pack, 0), bulk=share)
        items = tuple((pack, 0) for pack, _ in made)
        reply, _ = await th.request(m.HasShares(items=items[:-1]))
        assert reply.sizes == tuple(len(sh[0]) for _, sh in made[:-1])
        assert (store.lists, store.sizes) == (1, 0)
        pack, (share,) = made[-1]
        await th.request(_put(share, pack, 0), bulk=share)  # newer than the listing
        gone = made[0][0]
        await th.request(m.DeleteShare(pack=gone, index=0, holder=spec.holder, nonce=bytes(16),
                                       signature=bytes(64)))
        reply, _ = await th.request(m.HasShares(items=items))
        assert reply.sizes == (-1, *(len(sh[0]) for _, sh in made[1:]))
        assert store.lists == 1 and store.sizes == 2  # the new share and the deleted one, looked up
    _run(main)


def test_a_missing_folder_is_an_unreachable_holder_not_lost_shares(tmp_path: Path) -> None:
    """An unmounted NAS share: HAS does not answer "none of them" (every share would be
    rebuilt); the target is down, with the store's hint for the person."""
    spec = folder_target(tmp_path, "nas")
    th = _holder(spec)
    pack, shares = _shares(50_000)

    async def main() -> None:
        await th.request(_put(shares[0], pack, 0), bulk=shares[0])
        os.rename(tmp_path / "target-nas", tmp_path / "unmounted")
        with pytest.raises(TargetDown) as info:
            await th.request(m.HasShares(items=((pack, 0),)))
        assert "mount" in info.value.hint
        with pytest.raises(TargetDown):
            await th.request(m.Capacity())
        with pytest.raises(TargetDown):
            await th.request(_put(shares[1], pack, 1), bulk=shares[1])
    _run(main)


class _Refused:
    """A backend whose credentials are refused (a revoked key)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.name = inner, inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def check(self) -> None:
        raise TargetAuthError(self.name, "the access key was refused (403)",
                              hint="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_refused_credentials_make_an_unreachable_holder_with_the_stores_hint(tmp_path: Path) -> None:
    """Capacity proves the target takes writes now: refused credentials make it no
    candidate, counted unreachable, and the hint reaches whoever reports it."""
    spec = folder_target(tmp_path, "nas")
    th = _holder(spec, store=_Refused(open_store(spec)))  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(TargetDown) as info:
            await th.request(m.Capacity())
        assert "refused" in str(info.value) and "AWS_ACCESS_KEY_ID" in info.value.hint
    _run(main)


class _Broken:
    """A backend that lets its client library's own error through."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.name = inner, inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def size(self, key: str) -> int | None:
        raise KeyError("endpoint_url")


def test_a_backends_stray_error_makes_the_target_unreachable_not_the_caller_fail(tmp_path: Path) -> None:
    spec = folder_target(tmp_path, "nas")
    th = _holder(spec, store=_Broken(open_store(spec)))  # type: ignore[arg-type]
    pack, _ = _shares(10_000)

    async def main() -> None:
        with pytest.raises(TargetDown, match="KeyError"):
            await th.request(m.HasShares(items=((pack, 0),)))
    _run(main)


def test_another_owners_share_is_refused(tmp_path: Path) -> None:
    th = _holder(folder_target(tmp_path, "nas"))
    pack, _ = _shares(20_000)

    async def main() -> None:
        with pytest.raises(PeerRefused) as info:
            await th.request(m.GetShare(pack=pack, index=0, offset=0, length=-1, owner="12D3KooWother"))
        assert info.value.code == "refused"
    _run(main)


class _Stalled:
    """A backend whose reads hang (a NAS that stopped answering)."""

    def __init__(self, inner: ObjectStore, seconds: float) -> None:
        self.inner, self.seconds, self.name = inner, seconds, inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def size(self, key: str) -> int | None:
        time.sleep(self.seconds)
        return self.inner.size(key)


def test_a_stalled_target_is_given_up_on_at_the_deadline(tmp_path: Path) -> None:
    """Timeout 0.5 s (x REQUEST_BASE 2 = 1 s): a store call that hangs 4 s is abandoned
    after about 1 s and the target counted unreachable."""
    spec = folder_target(tmp_path, "nas")
    th = _holder(spec, timeout=0.5, store=_Stalled(open_store(spec), 4.0))  # type: ignore[arg-type]
    pack, _ = _shares(10_000)

    async def main() -> tuple[float, float]:
        t0 = time.monotonic()
        with pytest.raises(TargetDown, match="no answer within"):
            await th.request(m.HasShares(items=((pack, 0),)))
        t1 = time.monotonic()
        # Within DOWN_FOR (30 s) of that, the next request fails at once (one deadline per
        # backup, not one per pack), with what went wrong.
        with pytest.raises(TargetDown, match=r"unreachable 0 s ago: .*no answer within"):
            await th.request(m.Capacity())
        return t1 - t0, time.monotonic() - t1
    took, then = _run(main)
    assert 0.9 < took < 3.0
    assert then < 0.2


# -- in the mesh: the in-process kit (node/runtime/testkit.py) ----------------------------------


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The holder book's clock, moved by the test (the kit's clock is virtual)."""
    from corestate.node.app import health as hmod
    offset = [0.0]
    monkeypatch.setattr(hmod, "wall_time", lambda: time.time() + offset[0])
    return offset


async def test_members_leave_an_absent_owners_target_alone(
        tmp_path: Path, homes: Path, clock: Any, wall: list[float]) -> None:
    """An owner away with shares on its own target ``nas``; a member has a target of the
    same name. The members cannot reach the owner's target: its shares count as there
    (nothing is rebuilt for them, however long the owner is away), no member's holder
    book learns anything of ``target:nas``, and the member's own target gets nothing."""
    from corestate.node.app import Local
    from corestate.node.app.registry import OPERATIONS
    from corestate.node.runtime.testkit import memory_mesh, small_tree
    from corestate.node.targets import registry
    from corestate.protocol import control as c

    async def op(kit: Any, i: int, call: Any) -> Any:
        def run(node: Any, port: Any) -> Any:
            answer = OPERATIONS[type(call)].run(node, call, Local(port=port))
            return answer if isinstance(answer, c.Message) else list(answer)
        return await kit.run_sync(i, run)

    async with memory_mesh(homes, 4, trusted=False, start=False) as kit:
        for i in range(4):
            kit.edit_config(i, 'owner_away_after = "3d"', 'owner_away_after = "20s"')
            kit.edit_config(i, 'holder_lost_after = "3d"', 'holder_lost_after = "30s"')
        owner_nas = folder_target(tmp_path / "owner", "nas")
        member_nas = folder_target(tmp_path / "member", "nas")
        registry.save(kit.nodes[0].home, [owner_nas])
        registry.save(kit.nodes[1].home, [member_nas])
        await kit.start()
        await kit.form_group(0)
        src = small_tree(tmp_path / "src", mib=3, files=6, seed=4)
        b = await kit.backup(0, [src], k=2, n=4)  # three peers and the target: every pack on it
        assert b.pushed is not None and b.pushed.safe
        owner = kit.nodes[0].peer_id
        on_target = {r.pack for cp in kit.nodes[0].local().ledger.all().values() for r in cp.shares
                     if r.peer == "target:nas"}
        assert on_target and len(list(open_store(owner_nas).list("shares/"))) == 2 * len(on_target)
        await kit.sync_round()
        await kit.sync_round()
        await kit.kill(0)
        wall[0] += 100  # the owner away 100 s (> 20 s); its target unheard of for as long
        for i in (1, 2, 3):
            res = await op(kit, i, c.MemberRepairCall())
            assert res.owners_away == (owner,)
            assert res.packs_repaired == 0 and res.shares_placed == 0, res
        wall[0] += 100
        for i in (1, 2, 3):
            res = await op(kit, i, c.MemberRepairCall())
            assert res.packs_repaired == 0 and res.shares_placed == 0, res
            assert "target:nas" not in {r.peer for r in kit.nodes[i].local().ledger.holders()}
        assert list(open_store(member_nas).list()) == []


async def test_a_target_counts_toward_n_and_is_a_domain_of_its_own(
        tmp_path: Path, homes: Path, clock: Any) -> None:
    """Two trusted peers and a target, no code asked: n = 3 (the target counts like a
    trusted peer), k = 2; every pack has one share on the target and the others on the
    two peers; with a peer down, the pack comes back from the target and the other."""
    from corestate.node.runtime.testkit import memory_mesh, small_tree
    from corestate.node.targets import registry
    async with memory_mesh(homes, 3, start=False) as kit:
        nas = folder_target(tmp_path, "nas")
        registry.save(kit.nodes[0].home, [nas])
        await kit.start()
        src = small_tree(tmp_path / "src", mib=3, files=6, seed=2)
        b = await kit.backup(0, [src])
        assert b.pushed is not None and b.pushed.safe
        assert (b.pushed.k, b.pushed.n) == (2, 3)
        peers = {kit.nodes[1].peer_id, kit.nodes[2].peer_id}
        coded = kit.nodes[0].local().ledger.all()
        for cp in coded.values():
            assert sorted(r.peer for r in cp.shares) == sorted([*peers, "target:nas"])
        remote = [p for p, cp in coded.items() if not cp.local]
        assert remote
        await kit.kill(1)
        stats = await kit.restore(0, "latest", tmp_path / "out")
        assert stats.files >= 6
        out = tmp_path / "out" / str(src).lstrip("/")
        for f in src.rglob("*"):
            if f.is_file():
                assert (out / f.relative_to(src)).read_bytes() == f.read_bytes()


def test_a_target_never_shares_a_failure_domain_with_peers() -> None:
    """The mesh gives a target the domains ``("target:NAME",)``: at the most general level
    it is a site of its own, so with two peers of one site, n = 2 always puts one share on
    the target (a new site before a second share in any site), whatever the pack."""
    from corestate.node.core.placement import Candidate, place
    cands = [Candidate("peer-1", 1 << 30, ("home", "host-1")), Candidate("peer-2", 1 << 30, ("home", "host-2")),
             Candidate("target:nas", 1 << 30, ("target:nas",))]
    for i in range(200):
        plan = place(blake3.blake3(i.to_bytes(4, "big")).digest(), 2, cands)
        assert "target:nas" in plan.peers and len(set(plan.peers)) == 2


async def test_metrics_count_a_target_holder_online_until_it_is_lost(
        tmp_path: Path, homes: Path, clock: Any) -> None:
    from corestate.node.runtime.metrics import read_gauges
    from corestate.node.runtime.testkit import memory_mesh, small_tree
    from corestate.node.targets import registry
    async with memory_mesh(homes, 1, start=False) as kit:
        nas = folder_target(tmp_path, "nas")
        registry.save(kit.nodes[0].home, [nas])
        await kit.start()
        b = await kit.backup(0, [small_tree(tmp_path / "src", mib=1, files=2, seed=1)])
        assert b.pushed is not None and b.pushed.safe
        g = await kit.run_sync(0, lambda node, port: read_gauges(node, frozenset(), {}))
        assert g.holders == {"online": 1, "offline": 0}

        def lose(node: Any, port: Any) -> Any:
            from corestate.node.core.holders import HolderRecord
            node.ledger.save_holders([HolderRecord("target:nas", 1.0, 0.0, 0, 0, 0.0, False, True)])
            return read_gauges(node, frozenset(), {})
        g = await kit.run_sync(0, lose)
        assert g.holders == {"online": 0, "offline": 1}
