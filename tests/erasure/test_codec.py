"""The RS codec against its oracle, reedsolo: same field, same parity, any k shares decode."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import reedsolo
from corestate.erasure import (
    Codec,
    CorruptShare,
    ErasureError,
    InvalidParameters,
    NotEnoughShares,
    bulk,
    decode,
    encode,
    gf,
    parity_matrix,
    rebuild,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corestate.errors import CoreStateError

# -- the field --------------------------------------------------------------------------


def test_field_tables_are_reedsolos() -> None:
    log, exp, _ = reedsolo.init_tables(prim=0x11D, generator=2, c_exp=8)
    assert list(gf.EXP[:255]) == list(exp[:255])
    assert [gf.LOG[a] for a in range(1, 256)] == [log[a] for a in range(1, 256)]


def test_field_operations() -> None:
    reedsolo.init_tables(0x11D, 2, 8)  # reedsolo's tables are global: never rely on another test's
    for a in range(256):
        for b in (0, 1, 2, 3, 0x1D, 0x80, 0xFF, a):
            assert gf.mul(a, b) == reedsolo.gf_mul(a, b)
        if a:
            assert gf.mul(a, gf.inv(a)) == 1
            assert gf.div(gf.mul(a, 0x53), a) == 0x53
    assert gf.power(2, 8) == 0x1D  # x^8 = x^4 + x^3 + x^2 + 1 under 0x11d
    with pytest.raises(ZeroDivisionError):
        gf.inv(0)


@pytest.mark.parametrize("nsym", [0, 1, 2, 6, 10, 32, 254])
def test_generator_poly_is_reedsolos(nsym: int) -> None:
    reedsolo.init_tables(0x11D, 2, 8)
    assert gf.generator_poly(nsym) == list(reedsolo.rs_generator_poly(nsym, fcr=0, generator=2))


def test_matrix_inverse() -> None:
    rng = random.Random(7)
    for size in (1, 2, 5, 17):
        while True:
            m = [[rng.randrange(256) for _ in range(size)] for _ in range(size)]
            try:
                mi = gf.mat_inv(m)
                break
            except ZeroDivisionError:
                continue
        ident = [[int(i == j) for j in range(size)] for i in range(size)]
        assert gf.mat_mul(m, mi) == ident
        assert gf.mat_mul(mi, m) == ident
    with pytest.raises(ZeroDivisionError):
        gf.mat_inv([[1, 2], [2, 4]])


# -- golden vector (guards against a silent change of field, layout or code) ------------

GOLDEN_DATA = b"CoreState erasure golden vector, 4-of-6."
GOLDEN_SHARES = [
    "436f7265537461746520",
    "6572617375726520676f",
    "6c64656e20766563746f",
    "722c20342d6f662d362e",
    "1450d48711dfee7b0bea",
    "2c0582cb3ac0e9614be4",
]


def test_golden_vector() -> None:
    assert [s.hex() for s in encode(GOLDEN_DATA, 4, 6)] == GOLDEN_SHARES
    assert parity_matrix(4, 6) == ((31, 15, 7, 3), (30, 14, 6, 2))


# -- property tests against reedsolo -----------------------------------------------------


def check_columns_match_reedsolo(shares: list[bytes], k: int, n: int, columns: list[int]) -> None:
    rs = reedsolo.RSCodec(n - k)
    for c in columns:
        column = bytes(s[c] for s in shares[:k])
        assert bytes(rs.encode(column)) == bytes(s[c] for s in shares), (k, n, c)


@st.composite
def code_and_data(draw: st.DrawFn, max_n: int = 255, max_len: int = 700) -> tuple[int, int, bytes]:
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, n))
    data = draw(st.binary(max_size=max_len))
    return k, n, data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code_and_data(), st.randoms(use_true_random=False))
def test_encode_matches_reedsolo_and_any_k_decode(
    case: tuple[int, int, bytes], rnd: random.Random
) -> None:
    k, n, data = case
    shares = encode(data, k, n)
    length = -(-len(data) // k)
    assert len(shares) == n
    assert all(len(s) == length for s in shares)
    # Systematic: the data shares are the data, zero padded.
    assert b"".join(shares[:k]) == data + bytes(k * length - len(data))
    if length:
        # reedsolo is slow in pure Python: a sample of columns, always the first and last.
        cols = sorted({0, length - 1, *rnd.sample(range(length), min(4, length))})
        check_columns_match_reedsolo(shares, k, n, cols)
    # Random erasures: any k of the n shares, in any order, give the data back.
    for _ in range(3):
        kept = rnd.sample(range(n), rnd.randint(k, n))
        rnd.shuffle(kept)
        assert decode({i: shares[i] for i in kept}, k, n, len(data)) == data


@settings(max_examples=40, deadline=None)
@given(code_and_data(max_n=40, max_len=300), st.randoms(use_true_random=False))
def test_rebuild_any_share_from_any_k(case: tuple[int, int, bytes], rnd: random.Random) -> None:
    k, n, data = case
    shares = encode(data, k, n)
    kept = rnd.sample(range(n), k)
    want = rnd.sample(range(n), rnd.randint(1, n))
    got = rebuild({i: shares[i] for i in kept}, k, n, want)
    assert got == {w: shares[w] for w in want}


@pytest.mark.parametrize("n", range(1, 10))
def test_every_set_of_k_shares_decodes_exhaustively(n: int) -> None:
    rng = random.Random(n)
    for k in range(1, n + 1):
        data = rng.randbytes(rng.randrange(1, 40) * k + rng.randrange(k))
        shares = encode(data, k, n)
        for kept in itertools.combinations(range(n), k):
            assert decode({i: shares[i] for i in kept}, k, n, len(data)) == data, (k, n, kept)


def test_every_erasure_pattern_of_10_of_16_decodes() -> None:
    # The project's default-like shape: all C(16, 10) = 8008 choices would be slow-ish in
    # one test; every pattern of lost *data* shares with parity filling in is exhaustive
    # for what decoding computes, plus a random sample of the rest.
    rng = random.Random(1016)
    k, n = 10, 16
    data = rng.randbytes(10 * 97 + 3)
    shares = encode(data, k, n)
    patterns = list(itertools.combinations(range(n), k))
    for kept in [p for p in patterns if p[-1] >= k][::7] + rng.sample(patterns, 200):
        assert decode({i: shares[i] for i in kept}, k, n, len(data)) == data, kept


def test_reedsolo_decodes_our_columns_with_erasures() -> None:
    # The other direction of compatibility: reedsolo repairs our codewords.
    rng = random.Random(3)
    k, n = 5, 9
    shares = encode(rng.randbytes(5 * 20), k, n)
    rs = reedsolo.RSCodec(n - k)
    for c in range(20):
        word = bytearray(s[c] for s in shares)
        lost = rng.sample(range(n), n - k)
        for p in lost:
            word[p] = 0
        msg, _, _ = rs.decode(word, erase_pos=lost, only_erasures=True)
        assert bytes(msg) == bytes(s[c] for s in shares[:k])


# -- edge cases ------------------------------------------------------------------------------


def test_edge_shapes() -> None:
    assert encode(b"", 3, 5) == [b""] * 5
    assert decode({4: b"", 1: b"", 2: b""}, 3, 5, 0) == b""
    assert encode(b"abc", 3, 3) == [b"a", b"b", b"c"]  # no parity at all
    one = encode(b"hello", 1, 4)  # k = 1: every share determines the data
    for i in range(4):
        assert decode({i: one[i]}, 1, 4, 5) == b"hello"
    s = encode(b"x", 4, 6)  # shorter than k: three zero rows
    assert s[1:4] == [b"\0"] * 3
    assert decode({5: s[5], 4: s[4], 2: s[2], 3: s[3]}, 4, 6, 1) == b"x"
    wide = encode(bytes(range(200)), 200, 255)
    assert decode({i: wide[i] for i in range(55, 255)}, 200, 255, 200) == bytes(range(200))


def test_all_data_shares_present_is_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 41
    shares = encode(data, 4, 6)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoding with all data shares must not compute")

    monkeypatch.setattr(bulk, "apply", boom)
    assert decode({i: shares[i] for i in (5, 0, 1, 2, 3)}, 4, 6, len(data)) == data


def test_encode_views_are_the_shares() -> None:
    data = bytes(range(256)) * 9 + b"tail"
    c = Codec(5, 8)
    assert [bytes(v) for v in c.encode_views(data)] == c.encode(data)
    assert [bytes(v) for v in c.encode_views(memoryview(data))] == encode(data, 5, 8)


def test_decode_accepts_other_bytes_likes() -> None:
    data = bytes(range(100))
    shares = encode(memoryview(data), 3, 5)
    assert shares == encode(bytearray(data), 3, 5) == encode(data, 3, 5)
    got = decode({0: bytearray(shares[0]), 3: memoryview(shares[3]), 4: shares[4]}, 3, 5, 100)
    assert got == data


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n"), [(0, 3), (-1, 3), (4, 3), (1, 256), (300, 300), (True, 3), (2.0, 3), (2, "3")]
)
def test_bad_parameters_rejected_at_construction(k: object, n: object) -> None:
    with pytest.raises(InvalidParameters) as info:
        Codec(k, n)
    assert info.value.k == k and info.value.n == n
    assert isinstance(info.value, ErasureError) and isinstance(info.value, CoreStateError)
    assert isinstance(info.value, ValueError)
    assert info.value.retryable is False
    with pytest.raises(InvalidParameters):
        encode(b"x", k, n)


def test_not_enough_shares() -> None:
    shares = encode(b"0123456789", 4, 6)
    with pytest.raises(NotEnoughShares) as info:
        decode({0: shares[0], 5: shares[5], 2: shares[2]}, 4, 6, 10)
    assert (info.value.have, info.value.need) == (3, 4)
    assert info.value.retryable is True


def test_wrong_length_share_is_named() -> None:
    shares = encode(b"0123456789ab", 4, 6)
    with pytest.raises(CorruptShare) as info:
        decode({0: shares[0], 1: shares[1][:-1], 4: shares[4], 5: shares[5]}, 4, 6, 12)
    assert info.value.index == 1
    with pytest.raises(CorruptShare):
        decode({i: shares[i] for i in range(4)}, 4, 6, 13)  # size inconsistent with length


@pytest.mark.parametrize("bad", [-1, 6, 99, "2"])
def test_share_index_out_of_range(bad: int) -> None:
    shares = encode(b"0123456789ab", 4, 6)
    with pytest.raises(InvalidParameters):
        decode({0: shares[0], 1: shares[1], 2: shares[2], bad: shares[3]}, 4, 6, 12)
    with pytest.raises(InvalidParameters):
        rebuild({i: shares[i] for i in range(4)}, 4, 6, [bad])
    with pytest.raises(InvalidParameters):
        rebuild({i: shares[i] for i in range(4)}, 4, 6, [True])


# -- the bulk kernel -------------------------------------------------------------------------


def reference_apply(coeffs: list[list[int]], inputs: list[bytes]) -> list[bytes]:
    return [
        bytes(
            _xor_all(gf.mul(c, inputs[j][col]) for j, c in enumerate(row))
            for col in range(len(inputs[0]))
        )
        for row in coeffs
    ]


def _xor_all(values: object) -> int:
    acc = 0
    for v in values:  # type: ignore[attr-defined]
        acc ^= v
    return acc


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 12),
    st.integers(0, 90),
    st.integers(1, 40),
    st.randoms(use_true_random=False),
)
def test_bulk_apply_matches_scalar_reference(
    rows: int, width: int, length: int, block: int, rnd: random.Random
) -> None:
    coeffs = [
        [rnd.choice([0, 1, 2, 0x80, 0xFF, rnd.randrange(256)]) for _ in range(width)]
        for _ in range(rows)
    ]
    inputs = [rnd.randbytes(length) for _ in range(width)]
    out = np.full((rows, length), 0xAA, dtype=np.uint8)  # garbage: every byte must be written
    bulk.apply(coeffs, [np.frombuffer(x, np.uint8) for x in inputs], out, block=block)
    assert [out[i].tobytes() for i in range(rows)] == reference_apply(coeffs, inputs)


def test_bulk_threads_and_blocks_do_not_change_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    length = 3 * (1 << 16) + 12345  # long enough to be split across threads
    inputs = [rng.integers(0, 256, length, dtype=np.uint8) for _ in range(6)]
    coeffs = parity_matrix(6, 10)
    monkeypatch.setattr(bulk, "_THREAD_MIN_WORK", 0)  # split even this small input
    ranges: list[tuple[int, int]] = []
    real_run = bulk._run

    def spy(prog: object, ins: object, out: object, lo: int, hi: int, block: int) -> None:
        ranges.append((lo, hi))
        real_run(prog, ins, out, lo, hi, block)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "_run", spy)
    outs = []
    for threads, block in ((1, None), (2, None), (3, 7777), (1, 1 << 20)):
        ranges.clear()
        out = np.empty((4, length), dtype=np.uint8)
        bulk.apply(coeffs, inputs, out, threads=threads, block=block)
        assert len(ranges) == threads  # the column ranges really were split
        assert sorted(ranges)[0][0] == 0 and max(hi for _, hi in ranges) == length
        outs.append(out)
    for other in outs[1:]:
        assert np.array_equal(outs[0], other)
    sample = [0, 1, length // 2, length - 1]
    shares = [x.tobytes() for x in inputs] + [o.tobytes() for o in outs[0]]
    check_columns_match_reedsolo(shares, 6, 10, sample)


def test_bulk_blocks_keep_their_working_set_within_the_cache_budget() -> None:
    # A block touches its slice of every input, every combination and two arrays per row:
    # together they must fit the L2 budget unless the block is already at its floor, and
    # the block never leaves its bounds (wide codes hit the floor, one row the ceiling).
    budget = bulk._cache_bytes()
    assert 256 << 10 <= budget <= 8 << 20
    seen = set()
    for k, n in ((2, 3), (4, 6), (10, 16), (20, 30), (50, 60)):
        coeffs = parity_matrix(k, n)
        prog = bulk._compile(coeffs, k)
        combos = sum(len(m) for m in prog.masks)
        assert bulk._MIN_BLOCK <= prog.block <= bulk._MAX_BLOCK
        assert prog.block % 4096 == 0
        if prog.block > bulk._MIN_BLOCK:
            assert prog.block * (k + combos + 2 * prog.rows) <= budget
        seen.add(prog.block)
    assert bulk._MIN_BLOCK in seen  # 50-of-60 needs more than the budget even at the floor
    assert len(seen) >= 3


def test_bulk_cache_budget_falls_back_when_sysfs_is_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_open = builtins.open

    def no_sysfs(path: object, *args: object, **kwargs: object) -> object:
        if str(path).startswith("/sys/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    bulk._cache_bytes.cache_clear()
    monkeypatch.setattr(builtins, "open", no_sysfs)
    try:
        assert bulk._cache_bytes() == bulk._DEFAULT_CACHE
    finally:
        bulk._cache_bytes.cache_clear()


def test_xor_only_codes() -> None:
    # n = k + 1: the parity is the XOR of the data shares, and rebuilding uses XOR only.
    rng = random.Random(11)
    for k in (1, 2, 3, 7):
        data = rng.randbytes(k * 1000 + 1)
        shares = encode(data, k, k + 1)
        parity = bytearray(len(shares[0]))
        for s in shares[:k]:
            parity = bytearray(a ^ b for a, b in zip(parity, s, strict=True))
        assert shares[k] == bytes(parity)
        for lost in range(k + 1):
            kept = {i: shares[i] for i in range(k + 1) if i != lost}
            assert decode(kept, k, k + 1, len(data)) == data


def test_large_input_round_trip_threaded() -> None:
    rng = random.Random(9)
    data = rng.randbytes((3 << 20) + 17)
    k, n = 10, 16
    shares = encode(data, k, n, threads=2)
    assert shares == encode(data, k, n, threads=1)
    kept = {i: shares[i] for i in (0, 2, 3, 5, 6, 7, 9, 11, 13, 15)}
    assert decode(kept, k, n, len(data), threads=2) == data
