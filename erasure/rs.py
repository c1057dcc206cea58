"""Systematic Reed-Solomon k-of-n over GF(2^8), bit-compatible with reedsolo.

Role: turn a byte string into ``n`` equal-length share payloads such that any ``k`` of them
give the bytes back. Share headers, hashes and proofs live in :mod:`.share`; the bulk
arithmetic lives in :mod:`.bulk`.

Layout and invariants:
- ``L = ceil(len(data) / k)``. Data share ``i < k`` is ``data[i*L:(i+1)*L]``, the last ones
  zero padded to ``L``. So concatenating the first ``k`` shares and trimming to ``len(data)``
  gives ``data`` back: with all data shares present, decoding is a copy.
- Column ``c`` is ``(share_0[c], ..., share_{n-1}[c])``. For every ``c`` it is exactly the
  codeword ``reedsolo.RSCodec(n - k).encode(bytes(share_0[c], ..., share_{k-1}[c]))``:
  primitive polynomial 0x11d, generator 2, fcr 0 (see :mod:`.gf`), message bytes first,
  then the ``n - k`` check bytes. reedsolo is the oracle in the tests.
- Parity is therefore a fixed linear map of a column: ``parity = P @ column`` with ``P`` the
  ``(n-k) x k`` matrix whose column ``j`` is ``x^(n-1-j) mod g(x)``. Any ``k`` rows of
  ``[I; P]`` are invertible (the code is MDS), which is why any ``k`` shares decode.
- Parameters are checked when a :class:`Codec` is built: ``1 <= k <= n <= 255``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from . import bulk, gf
from .errors import CorruptShare, InvalidParameters, NotEnoughShares

BytesLike = bytes | bytearray | memoryview
MAX_N = 255

Coeffs = tuple[tuple[int, ...], ...]


def check_parameters(k: object, n: object) -> tuple[int, int]:
    """Validate ``k`` and ``n``; return them as ints or raise :class:`InvalidParameters`."""
    if (
        not isinstance(k, int)
        or isinstance(k, bool)
        or not isinstance(n, int)
        or isinstance(n, bool)
    ):
        raise InvalidParameters("k and n must be integers", k=k, n=n)
    if k < 1:
        raise InvalidParameters("k must be at least 1", k=k, n=n)
    if n > MAX_N:
        raise InvalidParameters(f"n must be at most {MAX_N} in GF(2^8)", k=k, n=n)
    if k > n:
        raise InvalidParameters("k must not exceed n", k=k, n=n)
    return k, n


def share_length(size: int, k: int) -> int:
    """Length of every share payload for ``size`` bytes of data: ``ceil(size / k)``."""
    return -(-size // k)


@lru_cache(maxsize=256)
def parity_matrix(k: int, n: int) -> Coeffs:
    """The ``(n-k) x k`` matrix ``P`` with ``parity column = P @ data column``.

    reedsolo's codeword is ``msg(x) * x^m + (msg(x) * x^m mod g(x))`` with ``msg[j]`` the
    coefficient of ``x^(k-1-j)``; so data byte ``j`` contributes ``x^(m+k-1-j) mod g`` and
    parity byte ``i`` is the coefficient of ``x^(m-1-i)``.
    """
    k, n = check_parameters(k, n)
    m = n - k
    rems = gf.x_power_remainders(gf.generator_poly(m), k)  # x^m ... x^(m+k-1) mod g
    return tuple(tuple(rems[k - 1 - j][i] for j in range(k)) for i in range(m))


@lru_cache(maxsize=1024)
def rebuild_matrix(k: int, n: int, used: tuple[int, ...], want: tuple[int, ...]) -> Coeffs:
    """Coefficients giving shares ``want`` from shares ``used`` (k sorted, distinct indices).

    With D the used data rows, E the missing data rows and Q the used parity rows
    (``|Q| = |E|``), the parity equations restricted to Q give
    ``P[Q,E] d_E = y_Q + P[Q,D] d_D``, so only an ``|E| x |E|`` matrix is inverted.
    """
    p = parity_matrix(k, n)
    data_used = [i for i in used if i < k]
    parity_used = [i - k for i in used if i >= k]
    missing = [j for j in range(k) if j not in set(data_used)]
    pos = {idx: col for col, idx in enumerate(used)}
    # Row for each data index, as coefficients over ``used``.
    data_rows: dict[int, list[int]] = {}
    for j in data_used:
        row = [0] * k
        row[pos[j]] = 1
        data_rows[j] = row
    if missing:
        a_inv = gf.mat_inv([[p[q][j] for j in missing] for q in parity_used])
        pqd = [[p[q][j] for j in data_used] for q in parity_used]
        over_d = gf.mat_mul(a_inv, pqd)  # |E| x |D|
        for a, j in enumerate(missing):
            row = [0] * k
            for b, d in enumerate(data_used):
                row[pos[d]] = over_d[a][b]
            for b, q in enumerate(parity_used):
                row[pos[q + k]] = a_inv[a][b]
            data_rows[j] = row
    out: list[tuple[int, ...]] = []
    for w in want:
        if w in pos:
            row = [0] * k
            row[pos[w]] = 1
        elif w < k:
            row = data_rows[w]
        else:
            # A parity share is P[w] applied to the (now known) data rows.
            row = [0] * k
            for j, c in enumerate(p[w - k]):
                if c:
                    for col, v in enumerate(data_rows[j]):
                        if v:
                            row[col] ^= gf.mul(c, v)
        out.append(tuple(row))
    return tuple(out)


def _as_u8(buf: BytesLike) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8)


class Codec:
    """A k-of-n systematic RS code; cheap to build, safe to share between threads."""

    __slots__ = ("k", "n")

    def __init__(self, k: int, n: int) -> None:
        self.k, self.n = check_parameters(k, n)
        parity_matrix(self.k, self.n)  # build (and cache) the matrix now, not mid-backup

    def __repr__(self) -> str:
        return f"Codec(k={self.k}, n={self.n})"

    @property
    def parity_count(self) -> int:
        return self.n - self.k

    @property
    def parity_matrix(self) -> Coeffs:
        return parity_matrix(self.k, self.n)

    # -- encoding ------------------------------------------------------------------------

    def encode(self, data: BytesLike, *, threads: int | None = None) -> list[bytes]:
        """The ``n`` share payloads of ``data`` (equal length, data shares first)."""
        return [bytes(v) for v in self.encode_views(data, threads=threads)]

    def encode_views(self, data: BytesLike, *, threads: int | None = None) -> list[memoryview]:
        """Like :meth:`encode`, but views instead of copies, for callers that copy anyway.

        Data shares are views of ``data`` (zero-padded tail rows are small copies); parity
        shares are views of this thread's scratch and stay valid only until the calling
        thread's next encode, decode or rebuild. Saves a copy per share byte when the
        payloads are written straight into something else (a share with its header).
        """
        k, n = self.k, self.n
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        size = len(view)  # in bytes, also for a memoryview of wider items
        length = share_length(size, k)
        payloads: list[memoryview] = []
        rows: list[np.ndarray] = []
        for i in range(k):
            lo, hi = i * length, min(size, (i + 1) * length)
            if hi - lo == length:
                payloads.append(view[lo:hi])
            else:  # a tail row: zero padded
                padded = bytes(view[lo:hi]) + bytes(length - max(0, hi - lo))
                payloads.append(memoryview(padded))
            rows.append(_as_u8(payloads[-1]))
        if n > k:
            parity = bulk.output(n - k, length)
            bulk.apply(parity_matrix(k, n), rows, parity, threads=threads)
            payloads.extend(memoryview(parity[i]) for i in range(n - k))
        return payloads

    # -- decoding ------------------------------------------------------------------------

    def choose(self, available: Iterable[int]) -> tuple[int, ...]:
        """The k share indices to decode from: data shares first, then the lowest parity.

        Data shares first because with a systematic code they *are* the data: every one
        present is a row we copy instead of compute.
        """
        indices = set(available)
        for i in indices:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n:
                raise InvalidParameters(f"share index {i!r} out of range", k=self.k, n=self.n)
        present = sorted(indices)
        if len(present) < self.k:
            raise NotEnoughShares(len(present), self.k)
        data = [i for i in present if i < self.k]
        parity = [i for i in present if i >= self.k]
        return tuple(data + parity[: self.k - len(data)])

    def rebuild(
        self,
        shares: Mapping[int, BytesLike],
        want: Iterable[int],
        *,
        threads: int | None = None,
    ) -> dict[int, bytes]:
        """Compute the payloads of shares ``want`` from any ``k`` of ``shares``.

        Used by repair (rebuild lost shares on new peers: ciphertext only, no key needed)
        and by :meth:`decode`. All given shares must have the same length.
        """
        want_t = tuple(dict.fromkeys(want))
        for w in want_t:
            if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w < self.n:
                raise InvalidParameters(f"share index {w!r} out of range", k=self.k, n=self.n)
        used = self.choose(shares)
        lengths = {len(shares[i]) for i in used}
        if len(lengths) != 1:
            raise InvalidParameters(
                f"shares differ in length: {sorted(lengths)}", k=self.k, n=self.n
            )
        (length,) = lengths
        out: dict[int, bytes] = {w: bytes(shares[w]) for w in want_t if w in shares}
        todo = tuple(w for w in want_t if w not in shares)
        if todo:
            coeffs = rebuild_matrix(self.k, self.n, used, todo)
            result = bulk.output(len(todo), length)
            bulk.apply(coeffs, [_as_u8(shares[i]) for i in used], result, threads=threads)
            for r, w in enumerate(todo):
                out[w] = result[r].tobytes()
        return out

    def decode(
        self,
        shares: Mapping[int, BytesLike],
        size: int,
        *,
        threads: int | None = None,
    ) -> bytes:
        """The original ``size`` bytes from any ``k`` of the share payloads.

        A share of the wrong length (for ``size``) is reported as :class:`CorruptShare`;
        fewer than ``k`` shares raise :class:`NotEnoughShares`. This checks no hashes: use
        :func:`corestate.erasure.share.decode_shares` for shares that came from peers.
        """
        k = self.k
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidParameters(
                f"size must be a non-negative integer, not {size!r}", k=k, n=self.n
            )
        length = share_length(size, k)
        used = self.choose(shares)
        for i in sorted(shares):
            if len(shares[i]) != length:
                raise CorruptShare(
                    i, f"payload is {len(shares[i])} bytes, expected {length} for {size} bytes"
                )
        missing = tuple(j for j in range(k) if j not in shares)
        rebuilt: dict[int, BytesLike] = {}
        if missing:
            coeffs = rebuild_matrix(k, self.n, used, missing)
            result = bulk.output(len(missing), length)
            bulk.apply(coeffs, [_as_u8(shares[i]) for i in used], result, threads=threads)
            for r, j in enumerate(missing):
                rebuilt[j] = memoryview(result[r])
        # One copy: join views of the data rows, the last ones trimmed to ``size``.
        pieces: list[BytesLike] = []
        left = size
        for j in range(k):
            if left <= 0:
                break
            row = rebuilt[j] if j in rebuilt else shares[j]
            take = min(left, length)
            pieces.append(memoryview(row)[:take] if take < length else row)
            left -= take
        return b"".join(pieces)


@lru_cache(maxsize=64)
def codec(k: int, n: int) -> Codec:
    """A shared :class:`Codec` for ``(k, n)`` (validated once, matrices cached)."""
    return Codec(k, n)


def _codec(k: object, n: object) -> Codec:
    kk, nn = check_parameters(k, n)
    return codec(kk, nn)


def encode(data: BytesLike, k: int, n: int, *, threads: int | None = None) -> list[bytes]:
    """``n`` equal-length share payloads of ``data``; any ``k`` rebuild it (systematic)."""
    return _codec(k, n).encode(data, threads=threads)


def decode(
    shares: Mapping[int, BytesLike],
    k: int,
    n: int,
    size: int,
    *,
    threads: int | None = None,
) -> bytes:
    """The ``size`` original bytes from a mapping share index -> payload (any ``k``)."""
    return _codec(k, n).decode(shares, size, threads=threads)


def rebuild(
    shares: Mapping[int, BytesLike],
    k: int,
    n: int,
    want: Sequence[int],
    *,
    threads: int | None = None,
) -> dict[int, bytes]:
    """Payloads of shares ``want`` computed from any ``k`` of ``shares`` (for repair)."""
    return _codec(k, n).rebuild(shares, want, threads=threads)
