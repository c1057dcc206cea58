"""Engine invariants that the CLI tests cannot pin down."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from corestate.node.engine.backup import Backup, _Read, _stitch
from corestate.node.engine.inspect import check
from corestate.node.engine.repo import Repository
from corestate.node.engine.store import LocalPackStore
from corestate.node.home import Config
from corestate.protocol.keys import NodeKeys


def test_worker_processes_never_reuse_a_pack_salt(tmp_path: Path) -> None:
    # A tree emitted by the walking process before the workers are forked sits in its
    # open pack; a worker must start a pack of its own (fresh salt, fresh nonces).
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "link").symlink_to("nowhere")
    (src / "file").write_bytes(os.urandom(100_000))
    keys = NodeKeys.from_root(b"\5" * 32)
    store = LocalPackStore(tmp_path / "store")
    store.create()
    repo = Repository(keys, store, str(tmp_path / "db"))
    b = Backup(repo, Config(), skip_dirs=[], exclude=[], workers=2)
    b.max_pending = 0  # finish every directory as soon as it is walked
    b.run([src])
    salts = [salt for _, salt, _, _ in repo.packs()]
    assert len(salts) >= 3 and len(salts) == len(set(salts))
    assert check(repo, read_data=True).ok
    repo.close()


def _engine_repo(tmp_path: Path) -> Repository:
    store = LocalPackStore(tmp_path / "store")
    store.create()
    return Repository(NodeKeys.from_root(b"\6" * 32), store, str(tmp_path / "db"))


def _aged(path: Path) -> None:
    """Files older than the racy window, so the caches take them."""
    old = 1_700_000_000
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old), follow_symlinks=False)


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files just written count as settled (ctime cannot be set back; the workers are
    forked, so they see the patched value too)."""
    from corestate.node.engine import backup
    monkeypatch.setattr(backup, "RACY_NS", -1)


@pytest.mark.usefixtures("no_racy_window")
def test_caches_below_an_unlisted_folder_survive(tmp_path: Path) -> None:
    # Backup 2 (with a change journal) takes a/ whole from the cache without listing
    # a/b/c: the cache rows of a/b/c and its files must stay, or backup 3 re-reads a/b/c.
    from corestate.kernel.changes import ChangeSet
    src = tmp_path / "src"
    deep = src / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for i in range(20):
        (deep / f"f{i}").write_bytes(os.urandom(50_000))
    (src / "x").write_bytes(b"x")
    _aged(src)
    repo = _engine_repo(tmp_path)
    Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    (src / "x").write_bytes(b"xx")
    cs = ChangeSet(frozenset({src / "x"}), "t")
    second = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: cs).run([src])
    assert second.stats.paths_visited == 2  # src/a and src/x
    (deep / "f3").write_bytes(os.urandom(50_000))
    os.utime(deep / "f3", (1_700_000_100, 1_700_000_100))
    third = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    assert third.stats.bytes_read == 50_000
    assert third.stats.files == 21
    repo.close()


@pytest.mark.usefixtures("no_racy_window")
def test_change_journal_skips_unchanged_folders_and_counts_them(tmp_path: Path) -> None:
    # With a change set, folders it does not name are reused from the cache unlisted;
    # the snapshot still counts every file, and the tree is the one a full walk makes.
    from corestate.kernel.changes import ChangeSet
    src = tmp_path / "src"
    for d in range(10):
        for s in range(5):
            sub = src / f"d{d}" / f"s{s}"
            sub.mkdir(parents=True)
            for f in range(10):
                (sub / f"f{f}").write_bytes(f"{d}-{s}-{f}".encode())
    _aged(src)
    repo = _engine_repo(tmp_path)
    first = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    changed = src / "d3" / "s2" / "f7"
    changed.write_bytes(b"changed")
    os.utime(changed, (1_700_000_100, 1_700_000_100))
    cs = ChangeSet(frozenset({changed}), "t")
    journal = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: cs).run([src])
    assert journal.stats.journal == ("used", "1 changed path(s)")
    assert journal.stats.paths_visited < 40  # 10 + 5 + 10 entries listed, not 560
    assert journal.stats.files == first.stats.files == 500
    full = Backup(repo, Config(), skip_dirs=[], exclude=[]).run([src])
    assert full.snapshot.tree == journal.snapshot.tree != first.snapshot.tree
    # A change source that cannot vouch for the interval: a full walk, and it says why.
    gap = ChangeSet(None, "t", "queue overflow")
    again = Backup(repo, Config(), skip_dirs=[], exclude=[], changes=lambda: gap).run([src])
    assert again.stats.journal == ("full walk", "queue overflow")
    assert again.stats.paths_visited > 500
    repo.close()


def _part(span: tuple[int, int], offsets: list[int], failed: bool = False) -> _Read:
    return _Read(content=[b"%d" % o for o in offsets], size=100, span=span, offsets=offsets,
                 bytes_read=span[1] - span[0], failed=failed)


def test_parts_of_a_split_increment_join_only_on_a_common_cut() -> None:
    # Back-to-back parts join as they are.
    r = _stitch([_part((0, 40), [0, 20]), _part((40, 100), [40, 70])], 100)
    assert r is not None and r.content == [b"0", b"20", b"40", b"70"] and r.span is None
    # A part that ran past the next one's start joins it on a cut both made.
    r = _stitch([_part((0, 55), [0, 20, 40]), _part((40, 100), [40, 55, 80])], 100)
    assert r is not None and r.content == [b"0", b"20", b"40", b"55", b"80"]
    # ... but not inside a chunk of the next part, nor past its end.
    assert _stitch([_part((0, 60), [0, 20, 40]), _part((40, 100), [40, 55, 80])], 100) is None
    assert _stitch([_part((0, 70), [0, 40]), _part((40, 60), [40]), _part((60, 100), [60])], 100) is None
    # A part that could not read its bytes, or parts that do not reach the end: read it all.
    assert _stitch([_part((0, 40), [0]), _part((40, 100), [40], failed=True)], 100) is None
    assert _stitch([_part((0, 40), [0]), _part((40, 90), [40])], 100) is None


def test_an_increment_is_split_only_in_wide_gaps_between_changes(tmp_path: Path) -> None:
    repo = _engine_repo(tmp_path)
    b = Backup(repo, Config(), skip_dirs=[], exclude=[], workers=3)
    mib = 1 << 20
    old = [(i * mib, mib, bytes(32)) for i in range(400)]  # a 400 MiB file in 1 MiB chunks
    size = 400 * mib
    far = [(20 * mib, 3 * mib), (200 * mib, 3 * mib), (380 * mib, 3 * mib)]
    parts = b._split_plan(size, old, far)
    assert parts is not None and len(parts) == 3
    spans = [p[2][:2] for p in parts]
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(a[1] == c[0] for a, c in itertools.pairwise(spans))
    assert [r for p in parts for r in p[1]] == far  # every change in exactly one part
    for i, (_, ranges, (start, stop, _)) in enumerate(parts):
        assert all(start <= o and o + n <= stop for o, n in ranges)
        if i < len(parts) - 1:  # room to find the old cuts again before the next part
            assert all(o + n + 16 * mib <= stop for o, n in ranges)
    # Changes close together, or too little to read, stay in one worker.
    assert b._split_plan(size, old, [(20 * mib, 3 * mib), (30 * mib, 3 * mib)]) is None
    assert b._split_plan(size, old, [(20 * mib, mib), (300 * mib, mib)]) is None
    repo.close()


def test_prune_keeps_what_an_earlier_identity_s_snapshots_need(tmp_path: Path) -> None:
    # After a stolen-laptop re-join the index holds snapshots recorded under the earlier
    # PeerID (same data keys). `snapshots` lists this identity's; prune must see them all.
    from corestate.node.engine import prune

    root = b"\7" * 32
    store = LocalPackStore(tmp_path / "store")
    store.create()
    old_src, new_src = tmp_path / "old", tmp_path / "new"
    for src in (old_src, new_src):
        src.mkdir()
        (src / "f").write_bytes(os.urandom(300_000))
    repo = Repository(NodeKeys.from_root(root, generation=0), store, str(tmp_path / "db"))
    Backup(repo, Config(), skip_dirs=[], exclude=[], workers=1).run([old_src])
    repo.close()
    repo = Repository(NodeKeys.from_root(root, generation=1), store, str(tmp_path / "db"))
    Backup(repo, Config(), skip_dirs=[], exclude=[], workers=1).run([new_src])
    assert len(repo.snapshots()) == 1  # the listing shows this identity's only
    p = prune.plan(repo, ())
    assert p.delete == [] and p.repack == []
    assert check(repo, read_data=True).ok
    repo.close()


def test_prune_refuses_while_a_pack_in_the_store_is_not_indexed(tmp_path: Path) -> None:
    from corestate.node.engine import prune

    repo = _engine_repo(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    Backup(repo, Config(), skip_dirs=[], exclude=[], workers=1).run([src])
    record_pack = next(pid for pid, in repo.db.execute(
        "SELECT pack FROM blobs WHERE kind = 2"))  # the snapshot record's pack
    repo.db.execute("DELETE FROM blobs WHERE pack = ?", (record_pack,))
    repo.db.execute("DELETE FROM packs WHERE id = ?", (record_pack,))
    repo.db.execute("DELETE FROM snapshots")
    with pytest.raises(prune.PruneUnsafe):
        prune.plan(repo, ())  # else every pack would look unused
    repo.sync()  # indexed again from the pack itself
    assert prune.plan(repo, ()).delete == []
    repo.close()


def test_whole_file_reads_cut_as_the_stream_does_and_fall_back_when_a_file_grew(
    tmp_path: Path,
) -> None:
    # Files that take chunking are read whole into a reused buffer and cut in place; the
    # chunks must be those of the stream chunker. A file larger than the buffer (it grew
    # past its size at lstat) falls back to the stream from where it was, losing nothing.
    from corestate.node.engine import backup as engine

    repo = _engine_repo(tmp_path)
    cfg = Config()
    b = Backup(repo, cfg, skip_dirs=[], exclude=[], workers=1)
    mid = os.urandom(3 * cfg.max_size)  # several chunks, within the buffer
    big = os.urandom(engine.WHOLE_READ_BYTES + cfg.max_size + 12345)  # past the buffer
    for name, data, hint in (("mid", mid, len(mid)), ("grown", big, cfg.min_size)):
        path = tmp_path / name
        path.write_bytes(data)
        with path.open("rb") as f:
            ids, size = b._read_chunks(f.fileno(), hint)
        from pyfastcdc import FastCDC

        cdc = FastCDC(cfg.avg_size, min_size=cfg.min_size, max_size=cfg.max_size,
                      seed=repo.keys.chunker_seed)
        want = [repo.keys.chunk_id(c.data) for c in cdc.cut_buf(data)]
        assert size == len(data) and ids == want and len(ids) >= 3, name
    assert len(b._local.read_buffer) == engine.WHOLE_READ_BYTES + 1  # one buffer, reused
    for w in b._writers:
        w.finish()
    repo.close()
