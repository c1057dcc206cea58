"""Reading packs in parts, on the in-process test kit (real nodes, memory streams).

- a ranged read of a pack through its data shares (``Mesh.open_view``/``read_view``)
  gives exactly the pack's bytes, across share boundaries;
- the index of a node's remote packs is rebuilt from their sealed headers alone
  (``meshops.fetch_headers``): the same blob locations as before, with a small fraction
  of the data read, and only metadata packs fetched whole;
- with the holders of a data share down, the header is not read in parts and the pack
  is fetched whole from parity instead;
- the application layer's backup streams its packs out and its restore brings them back
  in memory, wave by wave with a one-pack buffer, identical and with nothing staged; a
  restore whose packs cannot be had fails and leaves no fetcher behind;
- a backup cancelled once a pack has left: the packs placed stay placed, their placements
  are in the catalog, and the next backup reuses them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from corestate.node.runtime import meshops
from corestate.node.runtime.testkit import VirtualClock, memory_mesh, small_tree
from corestate.node.treecompare import differences
from corestate.protocol import control as c
from corestate.protocol import pack as packfmt

from corestate.errors import CoreStateError


async def test_ranged_reads_give_the_pack_bytes(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=3, files=3)
        assert (await kit.backup(0, [src], k=3, n=4)).pushed.safe
        mesh = kit.nodes[0].mesh
        assert mesh is not None
        ledger = kit.nodes[0].local().ledger
        # The largest packs (data), and the smallest (a snapshot record: its share 0
        # holds fewer bytes than the head asked for).
        by_size = sorted(ledger.remote_only(), key=lambda p: ledger.get(p).size)  # type: ignore[union-attr]
        assert len(by_size) >= 3
        for pack in by_size[-2:] + by_size[:1]:
            whole = await mesh.fetch(pack)
            view, head = await mesh.open_view(pack, 100)
            assert view.size == len(whole) and head == whole[:min(100, view.payload)]
            L = view.payload
            for a, b in [(0, len(whole)), (L - 7, L + 9), (2 * L - 1, len(whole)), (5, 5)]:
                assert await mesh.read_view(view, a, b) == whole[a:b], (a, b)
            with pytest.raises(ValueError):
                await mesh.read_view(view, 0, len(whole) + 1)


async def test_index_rebuilt_from_headers_alone(tmp_path: Path, homes: Path, clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=6, files=6)
        assert (await kit.backup(0, [src], k=2, n=4)).pushed.safe
        node = kit.nodes[0].local()
        remote = node.ledger.remote_only()
        before = {k: v for k, v in node.repo.locations().items() if v.pack in remote}
        assert len(remote) >= 3 and before
        data_bytes = sum(node.ledger.get(p).size for p in remote)  # type: ignore[union-attr]
        with node.repo.db:
            node.repo.db.executemany("DELETE FROM blobs WHERE pack = ?", [(p,) for p in remote])
            node.repo.db.executemany("DELETE FROM packs WHERE id = ?", [(p,) for p in remote])
        node.repo.refresh()
        got = await kit.run_sync(0, lambda n, port: meshops.fetch_headers(n, port, remote))
        assert got.indexed == len(remote) and got.whole == []
        assert 0 < got.bytes_fetched <= 0.05 * data_bytes, (got.bytes_fetched, data_bytes)
        node.repo.refresh()
        after = {k: v for k, v in node.repo.locations().items() if v.pack in remote}
        assert after == before
        target = tmp_path / "r"
        stats = await kit.restore(0, "latest", target)
        assert not stats.errors


async def test_header_with_a_data_share_away_comes_from_parity(tmp_path: Path, homes: Path,
                                                               clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=2, files=2)
        assert (await kit.backup(0, [src], k=2, n=4)).pushed.safe
        node = kit.nodes[0].local()
        pack = sorted(node.ledger.remote_only())[0]
        coded = node.ledger.get(pack)
        assert coded is not None
        away = next(r.peer for r in coded.shares if r.index == 0)
        await kit.kill(next(i for i, kn in enumerate(kit.nodes) if kn.peer_id == away))
        with node.repo.db:
            node.repo.db.execute("DELETE FROM blobs WHERE pack = ?", (pack,))
            node.repo.db.execute("DELETE FROM packs WHERE id = ?", (pack,))
        got = await kit.run_sync(0, lambda n, port: meshops.fetch_headers(n, port, [pack]))
        assert got.whole == [pack] and got.indexed == 0
        data = node.repo.store.get(pack)
        assert packfmt.pack_id_of(data) == pack and got.bytes_fetched >= len(data)


def _app_backup(node: Any, port: Any, src: Path, k: int, n: int) -> c.BackupSummary:
    from corestate.node.app import Local
    from corestate.node.app.backup import backup
    items = list(backup(node, c.BackupCall(paths=(os.fsencode(src),), exclude=(), k=k, n=n, estimate=False,
                                           skipped=False), Local(port=port)))
    summary = items[-1]
    assert isinstance(summary, c.BackupSummary)
    return summary


def _app_restore(node: Any, port: Any, target: Path) -> c.RestoreSummary:
    from corestate.node.app import Local
    from corestate.node.app.restore import restore
    items = list(restore(node, c.RestoreCall(snapshot="latest", target=os.fsencode(target), paths=(),
                                             dry_run=False), Local(port=port)))
    summary = items[-1]
    assert isinstance(summary, c.RestoreSummary)
    return summary


async def test_streamed_backup_and_restore_with_a_one_pack_buffer(tmp_path: Path, homes: Path,
                                                                  clock: VirtualClock) -> None:
    """The application layer's backup (packs streamed) and restore (packs in memory, in
    waves of at most one 1 MiB pack, files ordered by pack): identical, nothing staged."""
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=6, files=12)
        backed = await kit.run_sync(0, lambda node, port: _app_backup(node, port, src, 2, 4))
        assert backed.mesh is not None and backed.mesh.safe and backed.mesh.dropped_local >= 4
        node = kit.nodes[0].local()
        node.cfg.restore_buffer = 1 << 20
        local_before = node.repo.store.local_ids()
        target = tmp_path / "r"
        done = await kit.run_sync(0, lambda node, port: _app_restore(node, port, target))
        assert done.code == 0 and done.errors == 0
        assert differences(src, target / str(src).lstrip("/")) == []
        assert node.repo.store.local_ids() == local_before  # nothing staged, nothing left


async def test_a_restore_that_cannot_get_its_packs_fails_and_stops(tmp_path: Path, homes: Path,
                                                                   clock: VirtualClock) -> None:
    async with memory_mesh(homes, 5) as kit:
        src = small_tree(tmp_path / "src", mib=3, files=4)
        backed = await kit.run_sync(0, lambda node, port: _app_backup(node, port, src, 2, 4))
        assert backed.mesh is not None and backed.mesh.safe
        await kit.kill(1, 2, 3)  # 1 holder of 4 left, k = 2
        with pytest.raises(CoreStateError, match="shares needed could be fetched"):
            await kit.run_sync(0, lambda node, port: _app_restore(node, port, tmp_path / "r"))
        assert not [t for t in threading.enumerate() if t.name == "pack-feed"]


async def test_a_cancelled_backup_in_a_group_records_where_its_streamed_packs_went(
        tmp_path: Path, homes: Path, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs that left during a backup that then failed stay placed, and their placements
    reach the catalog (the next backup reuses their chunks, a recovery must find them)."""
    from corestate.node.app import Local
    from corestate.node.app import backup as app_backup
    from corestate.node.core.records import placement_key
    from corestate.node.errors import Cancelled
    async with memory_mesh(homes, 5) as kit:
        await kit.form_group(0)
        node = kit.nodes[0].local()
        before = set(node.ledger.all())
        # 4 MiB files, a job each: the walk is still going when the first pack is placed.
        src = small_tree(tmp_path / "src", mib=48, files=12)
        ctx = Local(port=kit.port(0))
        drop = app_backup._Stream._drop

        def drop_then_cancel(self: Any, pack: bytes) -> None:
            drop(self, pack)
            ctx.stop.set()  # the user cancels once a pack has left
        monkeypatch.setattr(app_backup._Stream, "_drop", drop_then_cancel)

        def run(node: Any, port: Any) -> None:
            list(app_backup.backup(node, c.BackupCall(paths=(os.fsencode(src),), exclude=(), k=2, n=4,
                                                      estimate=False, skipped=False), ctx))
        with pytest.raises(Cancelled):
            await kit.run_sync(0, run)
        monkeypatch.undo()
        left = [p for p, cp in node.ledger.all().items() if p not in before and cp.placed >= cp.n]
        assert left and node.repo.snapshots() == []
        listed = node.group.catalog.entries(node.keys.peer_id)
        assert all(placement_key(p) in listed for p in left)
        # The next backup completes, sends those packs no more, and restores identical.
        rows = {p: node.ledger.get(p) for p in left}
        done = await kit.run_sync(0, lambda node, port: _app_backup(node, port, src, 2, 4))
        assert done.mesh is not None and done.mesh.safe
        assert {p: node.ledger.get(p) for p in left} == rows
        restored = await kit.run_sync(0, lambda node, port: _app_restore(node, port, tmp_path / "r"))
        assert restored.code == 0
        assert differences(src, tmp_path / "r" / str(src).lstrip("/")) == []
