"""The share vault: verified, durable, quota-bound storage of shares held for peers."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import tracemalloc
from pathlib import Path

import blake3
import pytest
from corestate.erasure import make_shares, read_header
from corestate.node.errors import QuotaExceeded, ShareNotFound, ShareRejected, StoreError
from corestate.node.runtime.vault import ShareVault
from hypothesis import given, settings
from hypothesis import strategies as st

RNG = random.Random(7)
DATA = RNG.randbytes(6000)
PACK = blake3.blake3(DATA).digest()
SHARES = make_shares(DATA, 2, 4, pack_id=PACK, block_size=1024)
SIZE = len(SHARES[0])
OTHER_DATA = RNG.randbytes(6000)
OTHER = blake3.blake3(OTHER_DATA).digest()
OTHER_SHARES = make_shares(OTHER_DATA, 2, 4, pack_id=OTHER, block_size=1024)

ALICE = "12D3KooWAlice"
BOB = "12D3KooWBob"
CAROL = "12D3KooWCarol"

FANOUT = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}$")


def flip(buf: bytes, pos: int) -> bytes:
    out = bytearray(buf)
    out[pos] ^= 1
    return bytes(out)


def share_files(root: Path) -> list[str]:
    """Every file under the vault except the database, as paths relative to root."""
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if not rel.startswith("vault.db"):
                out.append(rel)
    return sorted(out)


@pytest.fixture
def vault(tmp_path: Path):
    v = ShareVault(tmp_path / "shares")
    yield v
    v.close()


# -- the basics ---------------------------------------------------------------------------


def test_put_get_range_sizes_delete(vault: ShareVault) -> None:
    for i, s in enumerate(SHARES):
        vault.put(ALICE, PACK, i, s)
    assert vault.get(ALICE, PACK, 2) == SHARES[2]
    assert vault.get(ALICE, PACK, 1, 100, 50) == SHARES[1][100:150]
    assert vault.get(ALICE, PACK, 1, 100) == SHARES[1][100:]
    assert vault.get(ALICE, PACK, 1, SIZE + 5, 10) == b""
    assert vault.get(ALICE, PACK, 1, 0, SIZE * 2) == SHARES[1]
    assert vault.sizes(ALICE, [(PACK, 0), (PACK, 3), (OTHER, 0), (PACK, 9), (b"x", 0)]) == [
        SIZE, SIZE, -1, -1, -1
    ]
    assert vault.used(ALICE) == 4 * SIZE
    assert vault.stats() == {"shares": 4, "bytes": 4 * SIZE, "senders": 1}
    assert vault.delete(ALICE, PACK, 0) is True
    assert vault.delete(ALICE, PACK, 0) is False
    with pytest.raises(ShareNotFound) as exc:
        vault.get(ALICE, PACK, 0)
    assert exc.value.retryable is False and exc.value.hint
    assert vault.sizes(ALICE, [(PACK, 0)]) == [-1]
    assert vault.used(ALICE) == 3 * SIZE
    assert len(share_files(vault.root)) == 3
    assert vault.free_bytes() > 0
    with pytest.raises(ValueError):
        vault.get(ALICE, PACK, 1, -1)


def test_shares_are_kept_apart_per_sender(vault: ShareVault) -> None:
    vault.put(ALICE, PACK, 0, SHARES[0])
    with pytest.raises(ShareNotFound):
        vault.get(BOB, PACK, 0)
    assert vault.sizes(BOB, [(PACK, 0)]) == [-1]
    assert vault.delete(BOB, PACK, 0) is False
    vault.put(BOB, PACK, 0, SHARES[0])
    assert vault.delete(BOB, PACK, 0) is True
    assert vault.get(ALICE, PACK, 0) == SHARES[0]
    assert vault.stats()["senders"] == 1


@given(offset=st.integers(0, SIZE + 10), length=st.integers(-1, SIZE + 10))
@settings(max_examples=60, deadline=None)
def test_ranges_read_like_slices(tmp_path_factory: pytest.TempPathFactory, offset: int,
                                 length: int) -> None:
    with ShareVault(tmp_path_factory.mktemp("v")) as v:
        v.put(ALICE, PACK, 3, SHARES[3])
        end = None if length == -1 else offset + length
        assert v.get(ALICE, PACK, 3, offset, length) == SHARES[3][offset:end]


# -- verification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pos", [0, 10, 70, 95, 2000, SIZE - 1], ids=["magic", "k-n", "root", "payload", "mid", "last"]
)
def test_a_share_that_fails_verification_is_rejected_and_nothing_written(
    vault: ShareVault, pos: int
) -> None:
    with pytest.raises(ShareRejected) as exc:
        vault.put(ALICE, PACK, 1, flip(SHARES[1], pos))
    assert exc.value.retryable is False and exc.value.hint
    assert share_files(vault.root) == []
    assert vault.stats() == {"shares": 0, "bytes": 0, "senders": 0}
    assert vault.quota_left(ALICE) == 256 << 20  # the reservation was given back


def test_a_share_offered_under_the_wrong_pack_or_index_is_rejected(vault: ShareVault) -> None:
    for pack, index, share in [
        (PACK, 0, SHARES[1]),
        (OTHER, 1, SHARES[1]),
        (PACK, 1, SHARES[1][:-1]),
        (PACK, 1, SHARES[1] + b"\0"),
        (PACK, 300, SHARES[1]),
        (PACK[:31], 1, SHARES[1]),
        (PACK, 1, b""),
    ]:
        with pytest.raises(ShareRejected):
            vault.put(ALICE, pack, index, share)
    assert share_files(vault.root) == []


def test_rot_on_disk_is_caught_on_read(vault: ShareVault) -> None:
    vault.put(ALICE, PACK, 2, SHARES[2])
    [rel] = share_files(vault.root)
    path = vault.root / rel
    path.write_bytes(flip(path.read_bytes(), 3000))
    with pytest.raises(ShareNotFound, match="corrupt on disk"):
        vault.get(ALICE, PACK, 2, 0, 10)
    assert vault.sizes(ALICE, [(PACK, 2)]) == [-1]
    assert share_files(vault.root) == []
    assert vault.used(ALICE) == 0


# -- quotas -------------------------------------------------------------------------------


def test_a_trusted_sender_has_its_own_quota(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=SIZE) as v:
        v.set_quota(ALICE, 2 * SIZE + 10)
        assert v.quota_left(ALICE) == 2 * SIZE + 10
        v.put(ALICE, PACK, 0, SHARES[0])
        v.put(ALICE, PACK, 1, SHARES[1])
        assert v.quota_left(ALICE) == 10
        with pytest.raises(QuotaExceeded) as exc:
            v.put(ALICE, PACK, 2, SHARES[2])
        assert exc.value.retryable is False
        assert exc.value.left == 10 and exc.value.needed == SIZE
        assert "10 bytes are left" in str(exc.value)
        # Alice's bytes do not draw on the pool that unknown senders share.
        v.put(BOB, PACK, 0, SHARES[0])
        assert v.quota_left(BOB) == 0
        # Back to the pool: Alice now shares it with Bob, and it is overdrawn.
        v.set_quota(ALICE, None)
        assert v.quota_left(ALICE) == 0 and v.quota_left(BOB) == 0
        with pytest.raises(QuotaExceeded):
            v.put(ALICE, PACK, 3, SHARES[3])
        with pytest.raises(ValueError):
            v.set_quota(ALICE, -1)


def test_unknown_senders_share_one_pool(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=3 * SIZE) as v:
        v.put(BOB, PACK, 0, SHARES[0])
        v.put(BOB, PACK, 1, SHARES[1])
        assert v.quota_left(CAROL) == SIZE
        v.put(CAROL, PACK, 0, SHARES[0])
        with pytest.raises(QuotaExceeded, match="0 bytes are left"):
            v.put(CAROL, PACK, 1, SHARES[1])
        v.delete(BOB, PACK, 1)
        v.put(CAROL, PACK, 1, SHARES[1])
        assert v.used(CAROL) == 2 * SIZE
        assert v.stats() == {"shares": 3, "bytes": 3 * SIZE, "senders": 2}


def test_quotas_survive_a_restart(tmp_path: Path) -> None:
    with ShareVault(tmp_path) as v:
        v.set_quota(ALICE, 5)
    with ShareVault(tmp_path) as v:
        assert v.quota_left(ALICE) == 5


def test_concurrent_puts_do_not_overshoot_a_quota(tmp_path: Path) -> None:
    shares = [(p, i, s) for p, ss in ((PACK, SHARES), (OTHER, OTHER_SHARES)) for i, s in enumerate(ss)]
    with ShareVault(tmp_path, global_quota=3 * SIZE) as v:
        outcomes: list[str] = []
        lock = threading.Lock()

        def one(pack: bytes, index: int, share: bytes) -> None:
            try:
                v.put(BOB, pack, index, share)
                result = "ok"
            except QuotaExceeded:
                result = "full"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=one, args=a) for a in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["full"] * 5 + ["ok"] * 3
        assert v.used(BOB) == 3 * SIZE
        assert len(share_files(v.root)) == 3


# -- idempotence, names, crashes -------------------------------------------------------------


def test_putting_the_same_share_again_is_a_no_op(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=SIZE) as v:
        v.put(BOB, PACK, 0, SHARES[0])
        [rel] = share_files(v.root)
        before = (v.root / rel).stat()
        v.put(BOB, PACK, 0, SHARES[0])  # the pool is full: a no-op needs no room
        v.put(BOB, PACK, 0, bytearray(SHARES[0]))
        after = (v.root / rel).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert v.stats() == {"shares": 1, "bytes": SIZE, "senders": 1}
        assert share_files(v.root) == [rel]


def test_names_are_never_derived_from_peer_input(vault: ShareVault) -> None:
    weird = b"../../etc/passwd\0/..\\" + b"/" * 11
    assert len(weird) == 32
    shares = make_shares(DATA, 2, 3, pack_id=weird, block_size=1024)
    sender = "../../../tmp/x\0/"
    vault.put(sender, weird, 1, shares[1])
    files = share_files(vault.root)
    assert len(files) == 1 and FANOUT.match(files[0]), files
    assert not set(os.listdir(vault.root)) - {"vault.db", "vault.db-wal", "vault.db-shm",
                                                 files[0][:2]}
    assert vault.get(sender, weird, 1) == shares[1]
    name = files[0].split("/")[1]
    assert weird.hex() not in name and PACK.hex() not in name


def test_crash_leftovers_are_cleaned_at_open(tmp_path: Path) -> None:
    with ShareVault(tmp_path) as v:
        for i in range(3):
            v.put(ALICE, PACK, i, SHARES[i])
        files = share_files(tmp_path)
    # A crash mid-write leaves a temp file; a lost file leaves a row; a crash between the
    # rename and the commit leaves a file without a row.
    tmp = tmp_path / files[0][:2] / ".tmp-0123456789abcdef-cafe"
    tmp.write_bytes(b"half a share")
    lost = tmp_path / files[1]
    lost.unlink()
    stray = tmp_path / "ab" / ("ab" + "0" * 62)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(SHARES[3])
    with ShareVault(tmp_path) as v:
        assert v.reconciled == {"temp_files": 1, "rows": 1, "files": 1}
        assert not tmp.exists() and not stray.exists()
        assert v.stats() == {"shares": 2, "bytes": 2 * SIZE, "senders": 1}
        assert sorted(v.sizes(ALICE, [(PACK, i) for i in range(3)])) == [-1, SIZE, SIZE]
    with ShareVault(tmp_path) as v:
        assert v.reconciled == {"temp_files": 0, "rows": 0, "files": 0}


def test_a_truncated_file_is_dropped_at_open(tmp_path: Path) -> None:
    with ShareVault(tmp_path) as v:
        v.put(ALICE, PACK, 0, SHARES[0])
    [rel] = share_files(tmp_path)
    with open(tmp_path / rel, "r+b") as f:
        f.truncate(100)
    with ShareVault(tmp_path) as v:
        assert v.reconciled == {"temp_files": 0, "rows": 1, "files": 1}
        assert share_files(tmp_path) == []


def test_a_nonce_replay_is_refused_even_after_a_restart(tmp_path: Path) -> None:
    nonce = bytes(range(16))
    with ShareVault(tmp_path) as v:
        assert v.check_nonce(ALICE, nonce) is True
        assert v.check_nonce(ALICE, nonce) is False
        assert v.check_nonce(BOB, nonce) is True  # nonces are per sender
    with ShareVault(tmp_path) as v:
        assert v.check_nonce(ALICE, nonce) is False
        assert v.check_nonce(ALICE, bytes(16)) is True
    db = sqlite3.connect(tmp_path / "vault.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_a_closed_vault_refuses_work(tmp_path: Path) -> None:
    v = ShareVault(tmp_path)
    v.close()
    v.close()
    with pytest.raises(StoreError):
        v.put(ALICE, PACK, 0, SHARES[0])
    with pytest.raises(StoreError):
        v.stats()


def test_put_of_a_big_share_makes_no_copy(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(32 << 20)
    pack = blake3.blake3(data).digest()
    share = make_shares(data, 2, 3, pack_id=pack)[0]
    assert len(share) >= 16 << 20
    with ShareVault(tmp_path) as v:
        tracemalloc.start()
        try:
            v.put(ALICE, pack, 0, share)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak  # verify and write work on views of the caller's bytes
        assert read_header(v.get(ALICE, pack, 0)).root == read_header(share).root


# -- issue 11: reservations, streaming, counters, nonces ------------------------------------


def test_a_quota_check_costs_no_scan_of_the_share_table(tmp_path: Path) -> None:
    """Usage is counted as shares come and go: asking what is left runs no SQL at all, and
    a reservation one primary-key lookup, however many shares are held."""
    with ShareVault(tmp_path, global_quota=1 << 30) as v:
        v.set_quota(ALICE, 1 << 30)
        for i, s in enumerate(SHARES):
            v.put(BOB, PACK, i, s)
            v.put(ALICE, PACK, i, s)
        statements: list[str] = []
        v._conn().set_trace_callback(statements.append)
        try:
            assert v.quota_left(BOB) == (1 << 30) - 4 * SIZE
            assert v.quota_left(ALICE) == (1 << 30) - 4 * SIZE
            assert v.used(ALICE) == 4 * SIZE
            assert v.stats() == {"shares": 8, "bytes": 8 * SIZE, "senders": 2}
            assert statements == []
            res = v.reserve(CAROL, OTHER, 0, SIZE)
            assert len(statements) == 1 and "WHERE name = " in statements[0], statements
            v.release(res)
        finally:
            v._conn().set_trace_callback(None)


def test_counters_follow_puts_deletes_quota_moves_and_restarts(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=10 * SIZE) as v:
        v.put(BOB, PACK, 0, SHARES[0])
        v.put(ALICE, PACK, 1, SHARES[1])
        assert v.quota_left(CAROL) == 8 * SIZE
        v.set_quota(ALICE, 5 * SIZE)  # Alice leaves the pool, and takes her bytes with her
        assert v.quota_left(CAROL) == 9 * SIZE and v.quota_left(ALICE) == 4 * SIZE
        v.set_quota(ALICE, None)
        assert v.quota_left(CAROL) == 8 * SIZE
        v.put(BOB, PACK, 0, SHARES[0])  # the same share again: no double count
        assert v.quota_left(CAROL) == 8 * SIZE
        v.delete(BOB, PACK, 0)
        assert v.quota_left(CAROL) == 9 * SIZE and v.used(BOB) == 0
    with ShareVault(tmp_path, global_quota=10 * SIZE) as v:
        assert v.quota_left(CAROL) == 9 * SIZE
        assert v.stats() == {"shares": 1, "bytes": SIZE, "senders": 1}


def test_a_reservation_holds_room_until_committed_or_released(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=3 * SIZE) as v:
        res = v.reserve(BOB, PACK, 0, 2 * SIZE)
        assert v.quota_left(CAROL) == SIZE
        with pytest.raises(QuotaExceeded):
            v.reserve(CAROL, PACK, 1, 2 * SIZE)  # together they would pass the pool
        v.release(res)
        v.release(res)  # idempotent
        assert v.quota_left(CAROL) == 3 * SIZE
        # A replacement of a held share needs only the difference.
        v.put(BOB, PACK, 0, SHARES[0])
        again = v.reserve(BOB, PACK, 0, SIZE)
        assert again.amount == 0 and v.quota_left(BOB) == 2 * SIZE
        v.release(again)


def test_a_streamed_share_is_kept_only_once_committed(tmp_path: Path) -> None:
    with ShareVault(tmp_path, global_quota=3 * SIZE) as v:
        res = v.reserve(BOB, PACK, 2, SIZE)
        inc = v.incoming(res)
        for at in range(0, SIZE, 1000):
            inc.write(SHARES[2][at:at + 1000])
        with pytest.raises(ShareRejected):
            inc.write(b"x")  # not a byte beyond the announced size
        [tmp] = share_files(v.root)
        assert os.path.basename(tmp).startswith(".tmp-")
        assert v.sizes(BOB, [(PACK, 2)]) == [-1]
        v.commit(inc)
        assert v.sizes(BOB, [(PACK, 2)]) == [SIZE] and v.get(BOB, PACK, 2) == SHARES[2]
        assert v.quota_left(BOB) == 2 * SIZE  # the reservation became the share
        # A short body, or bytes that are not the share announced: nothing kept.
        for body in (SHARES[3][:-1], flip(SHARES[3], 500)):
            res = v.reserve(BOB, PACK, 3, SIZE)
            inc = v.incoming(res)
            inc.write(body)
            with pytest.raises(ShareRejected):
                v.commit(inc)
            assert v.quota_left(BOB) == 2 * SIZE
        assert len(share_files(v.root)) == 1


def test_reads_and_proofs_go_through_the_file_in_slices(tmp_path: Path) -> None:
    from corestate.erasure.share import prove, verify_proof
    with ShareVault(tmp_path) as v:
        v.put(ALICE, PACK, 1, SHARES[1])
        root = read_header(SHARES[1]).root
        for block in range(read_header(SHARES[1]).block_count):
            proof = v.prove(ALICE, PACK, 1, block)
            assert proof == prove(SHARES[1], block).to_bytes()
            assert verify_proof(root, block, proof)
        with v.open_share(ALICE, PACK, 1, 100, 2000) as held:
            assert held.size == 2000
            assert held.digest == blake3.blake3(SHARES[1][100:2100]).digest()
            assert held.read(700) + held.read(5000) + held.read() == SHARES[1][100:2100]
        [rel] = share_files(v.root)
        path = v.root / rel
        path.write_bytes(flip(path.read_bytes(), SIZE - 3))
        with pytest.raises(ShareNotFound, match="corrupt on disk"):
            v.prove(ALICE, PACK, 1, 0)
        assert v.sizes(ALICE, [(PACK, 1)]) == [-1] and v.used(ALICE) == 0


def nonces_held(v: ShareVault) -> list[tuple[str, bytes]]:
    return [(s, bytes(n)) for s, n in v._conn().execute(
        "SELECT sender, nonce FROM delete_nonces ORDER BY seq")]


def test_a_delete_of_a_share_never_held_records_no_nonce(tmp_path: Path) -> None:
    with ShareVault(tmp_path) as v:
        for i in range(20):
            assert v.delete_signed(ALICE, os.urandom(32), 0, bytes([i]) * 16) == "absent"
        assert nonces_held(v) == []
        v.put(ALICE, PACK, 0, SHARES[0])
        assert v.delete_signed(ALICE, PACK, 0, bytes(16)) == "deleted"
        assert v.sizes(ALICE, [(PACK, 0)]) == [-1] and share_files(v.root) == []
        v.put(ALICE, PACK, 0, SHARES[0])
        assert v.delete_signed(ALICE, PACK, 0, bytes(16)) == "replay"
        assert v.sizes(ALICE, [(PACK, 0)]) == [SIZE]
        assert nonces_held(v) == [(ALICE, bytes(16))]


def test_delete_nonces_are_bounded_oldest_first(tmp_path: Path) -> None:
    with ShareVault(tmp_path, max_nonces_per_sender=3, max_nonces=4) as v:
        for i in range(5):
            v.put(ALICE, PACK, 0, SHARES[0])
            assert v.delete_signed(ALICE, PACK, 0, bytes([i]) * 16) == "deleted"
        assert nonces_held(v) == [(ALICE, bytes([i]) * 16) for i in (2, 3, 4)]
        for i in range(2):
            v.put(BOB, PACK, 0, SHARES[0])
            assert v.delete_signed(BOB, PACK, 0, bytes([i]) * 16) == "deleted"
        assert len(nonces_held(v)) == 4 and (ALICE, bytes([2]) * 16) not in nonces_held(v)
    with ShareVault(tmp_path, max_nonces_per_sender=3, max_nonces=4) as v:
        v.put(ALICE, PACK, 0, SHARES[0])
        assert v.delete_signed(ALICE, PACK, 0, bytes([4]) * 16) == "replay"


def test_nonces_of_an_older_vault_are_kept(tmp_path: Path) -> None:
    ShareVault(tmp_path).close()
    db = sqlite3.connect(tmp_path / "vault.db")
    db.execute("CREATE TABLE nonces (sender TEXT NOT NULL, nonce BLOB NOT NULL,"
               " PRIMARY KEY (sender, nonce)) WITHOUT ROWID")
    db.execute("INSERT INTO nonces VALUES (?, ?)", (ALICE, bytes(16)))
    db.commit()
    db.close()
    with ShareVault(tmp_path) as v:
        assert v.check_nonce(ALICE, bytes(16)) is False
        assert v.check_nonce(ALICE, bytes([1]) * 16) is True
