"""Mesh, repair, group and application-layer behaviour on the in-process test kit.

The same stories as the real-daemon tests (test_mesh.py, test_repair.py, test_group.py,
test_control_api.py), told on ``node.runtime.testkit``: real nodes (homes, keys,
repositories, ledgers, group replicas, the runtime's ``Mesh`` and ``GroupService``) over
memory streams on a virtual clock, in one process. Those tests stay the truth about
processes, sockets and the CLI; these run in a fraction of a second each (the budget
asserted below is generous for a loaded machine), so they can tell many more stories.

- a backup coded k=2 of n=4 restores identical with n-k holders down, and is full again
  once they are back;
- a holder killed in the middle of a share upload: its shares go elsewhere, and the
  owner's ledger names it only for shares it really stored;
- a holder that lost every share: audits find them missing, repair rebuilds them, and
  the data restores with another holder down;
- a group: create, invite and join, a backup's records converge everywhere, a removal
  spreads and the removed node is refused;
- ``status`` (the application layer) with a live view: peers online, the last backup,
  redundancy, and an alert after a corrupt share;
- a hostile peer with its own identity gets errors, and the node serves on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blake3
import pytest
import trio
from corestate.node.ledger import ShareRow
from corestate.node.runtime.testkit import (
    MemoryMesh,
    VirtualClock,
    memory_mesh,
    small_tree,
)
from corestate.node.runtime.vault import ShareVault
from corestate.node.treecompare import differences
from corestate.protocol import messages as m
from corestate.protocol.streams import Channel, Stream

# Real seconds a test may take. Each takes a few hundred milliseconds here; the margin is
# for a machine shared with other test runs.
BUDGET = 10.0
pytestmark = pytest.mark.usefixtures("timed")  # tests/node/conftest.py, within BUDGET




def restored(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def placements(kit: MemoryMesh, owner: int) -> dict[bytes, dict[int, str]]:
    """pack -> share index -> holder, from the owner's ledger."""
    return {p: {r.index: r.peer for r in rows} for p, rows in ledger_rows(kit, owner).items()}


def ledger_rows(kit: MemoryMesh, owner: int) -> dict[bytes, list[ShareRow]]:
    return {p: list(c.shares) for p, c in kit.nodes[owner].local().ledger.all().items()}


def assert_fully_placed(kit: MemoryMesh, owner: int, n: int) -> None:
    """Each pack: n rows, for n distinct indexes on n distinct holders, none the owner."""
    for pack, rows in ledger_rows(kit, owner).items():
        assert sorted(r.index for r in rows) == list(range(n)), (pack.hex(), rows)
        holders = {r.peer for r in rows}
        assert len(holders) == n and kit.nodes[owner].peer_id not in holders, rows


def share_files(home: Path) -> list[Path]:
    return [p for sub in (home / "shares").iterdir() if sub.is_dir() and len(sub.name) == 2
            for p in sub.iterdir() if len(p.name) == 64]


async def test_restore_identical_with_n_minus_k_holders_down(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=3, files=6)
        b = await kit.backup(0, [src], k=2, n=4)
        pushed = b.pushed
        assert pushed is not None and pushed.safe and (pushed.k, pushed.n) == (2, 4)
        assert sorted(pushed.online) == sorted(kit.nodes[i].peer_id for i in (1, 2, 3, 4))
        assert pushed.dropped_local >= 3  # the data packs left the owner
        assert len(placements(kit, 0)) >= 5
        assert_fully_placed(kit, 0, 4)

        await kit.kill(1, 2)
        survey = await kit.survey(0)
        assert survey.shares.get("unreachable", 0) >= len(placements(kit, 0))
        assert set(survey.per_pack.values()) <= {"full", "degraded"}, survey.per_pack
        assert "degraded" in survey.per_pack.values()

        stats = await kit.restore(0, b.snapshot_id.hex(), tmp_path / "out")
        assert stats.errors == []
        assert differences(src, restored(tmp_path / "out", src)) == []

        await kit.start(1, 2)
        survey = await kit.survey(0)
        assert set(survey.per_pack.values()) == {"full"}, survey.per_pack


async def test_a_holder_killed_mid_upload_is_replaced(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        owner, victim = kit.nodes[0], kit.nodes[1]
        # Dies once it took a share and a half: in the middle of a share's body.
        kit.kill_after_bytes(1, 800 << 10)
        src = small_tree(tmp_path / "src", mib=6, files=6)
        b = await kit.backup(0, [src], k=2, n=3)
        assert not victim.up
        pushed = b.pushed
        assert pushed is not None and pushed.report is not None
        failures = [f for pr in pushed.report.packs for f in pr.failures]
        assert any(victim.peer_id[-8:] in f or victim.peer_id in f for f in failures), failures
        # Every share meant for the dead holder found another home.
        assert pushed.safe, (pushed.degraded, pushed.problems)
        assert_fully_placed(kit, 0, 3)
        # Nothing recorded as stored that is not: each row naming the victim is a whole
        # share in its vault (read from its home, as after a real crash).
        rows = ledger_rows(kit, 0)
        mine = [r for pack_rows in rows.values() for r in pack_rows if r.peer == victim.peer_id]
        assert len(mine) < len(rows), "the victim got everything: it died too late"
        with ShareVault(victim.home / "shares") as vault:
            for r in mine:
                assert len(vault.get(owner.peer_id, r.pack, r.index)) == r.size
        # Back up, every holder has what the ledger says.
        await kit.start(1)
        survey = await kit.survey(0)
        assert survey.bad_holders == {} and set(survey.per_pack.values()) == {"full"}


async def test_repair_after_a_holder_lost_its_shares(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=3, files=4, seed=11)
        b = await kit.backup(0, [src], k=2, n=3)
        assert b.pushed is not None and b.pushed.safe
        victim = kit.nodes[2]
        lost = {(p, i) for p, shares in placements(kit, 0).items() for i, h in shares.items()
                if h == victim.peer_id}
        assert lost, "holder 2 holds nothing"
        for f in share_files(victim.home):  # its disk was replaced, by a full one
            f.unlink()
        assert victim.mesh is not None
        victim.mesh.vault.set_quota(kit.nodes[0].peer_id, 0)

        survey = await kit.survey(0)
        assert len(survey.bad_holders[victim.peer_id]) == len(lost)
        plan = await kit.repair(0, dry_run=True)
        assert {r.pack for r in plan.rebuilt if r.shares} == {p for p, _ in lost}
        res = await kit.repair(0)
        assert res.complete, res.failed
        assert sum(len(v) for v in res.placed.values()) == len(lost)
        # The rebuilt shares went elsewhere (the victim refused them), and the ledger
        # forgot what the victim lost: each share has its one holder again.
        assert victim.peer_id not in {h for placed in res.placed.values() for h in placed.values()}
        assert res.forgotten == len(lost)
        assert_fully_placed(kit, 0, 3)
        assert not any(h == victim.peer_id for shares in placements(kit, 0).values() for h in shares.values())
        survey = await kit.survey(0)
        assert survey.bad_holders == {} and set(survey.per_pack.values()) == {"full"}

        # The data is whole: it restores with another holder down.
        await kit.kill(3)
        stats = await kit.restore(0, "latest", tmp_path / "out")
        assert stats.errors == []
        assert differences(src, restored(tmp_path / "out", src)) == []


async def test_a_group_forms_converges_and_a_removal_spreads(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    # Nobody trusts anybody beforehand: the invites make the group.
    async with memory_mesh(homes, 4, trusted=False, anti_entropy=True) as kit:
        ids = [kn.peer_id for kn in kit.nodes]
        gid = await kit.form_group(0, [1, 2, 3])
        for kn in kit.nodes:
            g = kn.local().group
            assert g.group == gid and sorted(g.members()) == sorted(ids)
        # Members are trusted peers: a member's backup goes to the others, and its records
        # (snapshot, placements) reach every replica.
        src = small_tree(tmp_path / "src", mib=1, files=2)
        b = await kit.backup(1, [src], k=2, n=3)
        assert b.pushed is not None and b.pushed.safe
        assert sorted(b.pushed.online) == sorted(ids[:1] + ids[2:])

        def vectors() -> list[dict[str, Any]]:
            return [kn.local().group.catalog.version_vector() for kn in kit.nodes]
        await kit.until(lambda: all(v == vectors()[0] for v in vectors()), what="catalogs converge")
        assert ids[1] in vectors()[0]

        # The admin removes node 3: the others learn it from the admin's sync round, and
        # from then on refuse node 3's syncs.
        await kit.remove_member(0, 3)
        await kit.until(lambda: all(ids[3] in kit.nodes[i].local().group.removed() for i in (0, 1, 2)),
                        what="the removal reaches every member")
        results = (await kit.sync_round(3))[3]
        assert results and all(r != "ok" for r in results.values()), results


async def test_status_with_a_live_view(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 4) as kit:
        st = kit.status(0)
        assert st.daemon and st.last_backup is None and st.redundancy.packs == 0
        assert sorted(p.peer_id for p in st.peers) == sorted(kn.peer_id for kn in kit.nodes[1:])

        src = small_tree(tmp_path / "src", mib=2, files=2)
        b = await kit.backup(0, [src], k=2, n=3)
        await kit.kill(3)
        st = kit.status(0)
        assert st.last_backup is not None and st.last_backup.snapshot_id == b.snapshot_id.hex()
        assert {p.peer_id: p.online for p in st.peers} == {
            kit.nodes[1].peer_id: True, kit.nodes[2].peer_id: True, kit.nodes[3].peer_id: False}
        coded = len(kit.nodes[0].local().ledger.all())
        assert st.redundancy.full == coded and st.redundancy.at_risk == 0
        assert st.alerts == ()

        # A holder turns liar (its key taken over, say): it serves a data share with a byte
        # flipped and a digest that matches the lie. The restore routes around it, and an
        # alert names it.
        await kit.start(3)
        ledger = kit.nodes[0].local().ledger
        pack = min(ledger.remote_only())
        liar = next(kn for kn in kit.nodes if kn.peer_id == placements(kit, 0)[pack][0])
        await kit.kill(liar.index)
        vault = ShareVault(liar.home / "shares")

        async def lie(stream: Stream) -> None:
            ch = Channel(stream, timeout=5)
            msg = await ch.receive()
            if not isinstance(msg, m.GetShare):
                await ch.send(m.Error(code="not-found", message="no", retryable=False))
                return
            data = bytearray(vault.get(stream.remote_peer, msg.pack, msg.index))
            data[-1] ^= 0xFF
            await ch.send(m.ShareData(size=len(data), digest=blake3.blake3(data).digest()))
            await ch.send_bulk(bytes(data))

        try:
            async with kit.net.host(liar.identity_seed, liar.addr).serving() as host:
                host.set_handler("/corestate/share/1", lie)
                await kit.restore(0, "latest", tmp_path / "out")
        finally:
            vault.close()
        assert differences(src, restored(tmp_path / "out", src)) == []
        # (one per data share of the liar's that the restore asked for)
        assert {a.alert for a in kit.status(0).alerts} == {"corrupt-share"}
        events = kit.nodes[0].events
        assert events is not None
        assert {a.details.get("peer") for a in events.recent_alerts} == {liar.peer_id}


async def test_a_hostile_peer_gets_errors_and_the_node_serves_on(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 2) as kit:
        node = kit.nodes[1]
        assert node.host is not None
        async with kit.net.host().serving() as evil:  # an identity nobody trusts
            stream = await evil.open_stream(node.peer_id, "/corestate/share/1", addrs=[node.full_addr])
            await stream.send_all(b"\xff" * 64)  # a frame far over any limit
            reply = await Channel(stream, timeout=5).receive()
            assert isinstance(reply, m.Error) and reply.code == "protocol", reply
            # A lying PUT: the bytes do not hash to the announced digest; nothing is kept.
            body = b"x" * 1000
            ch = Channel(await evil.open_stream(node.peer_id, "/corestate/share/1"), timeout=5)
            await ch.send(m.PutShare(pack=bytes(32), index=0, size=len(body),
                                     digest=blake3.blake3(b"other").digest()))
            await ch.send_bulk(body)
            with trio.move_on_after(30):
                reply = await ch.receive_or_eof()
            assert not isinstance(reply, m.Ok)
            assert share_files(node.home) == []
        assert node.host.failures == []
        # The node serves its trusted peer as before.
        src = small_tree(tmp_path / "src", mib=0.5, files=1)
        b = await kit.backup(0, [src], k=1, n=1)
        assert b.pushed is not None and b.pushed.safe


async def test_a_partitioned_holder_costs_virtual_seconds_only(tmp_path: Path, homes: Path,
                                                              clock: VirtualClock) -> None:
    async with memory_mesh(homes, 4) as kit:
        kit.partition(3)  # silent: its capacity request times out, it is not refused
        src = small_tree(tmp_path / "src", mib=1, files=2)
        start = trio.current_time()
        b = await kit.backup(0, [src])
        pushed = b.pushed
        assert pushed is not None and pushed.safe
        assert pushed.offline == [kit.nodes[3].peer_id]
        assert (pushed.k, pushed.n) == (1, 2)  # n = the peers online, k = ceil(n / 2)
        # The capacity request waited for its whole timeout (5 s), on the virtual clock
        # (the test's real time is checked by the ``timed`` fixture).
        assert trio.current_time() - start >= 5
        kit.heal(3)
        b = await kit.backup(0, [src])
        assert b.pushed is not None and b.pushed.offline == []
