"""Arithmetic in GF(2^8) with reedsolo's conventions, plus the small matrix algebra we need.

Role: the scalar field the Reed-Solomon code lives in. Bulk work over whole shares is done by
:mod:`corestate.erasure.bulk`; this module only ever handles single symbols, polynomials of
degree < 256 and matrices of at most 255 x 255 symbols, so plain Python is fast enough.

Invariants (they make our parity byte-identical to ``reedsolo.RSCodec(n - k)``):
- The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1), i.e. primitive polynomial ``0x11d``;
  the generator (the "alpha" of the log/antilog tables) is ``2``; addition is XOR.
- Polynomials are lists of coefficients, highest degree first, as in reedsolo.
- The RS generator polynomial for ``nsym`` check symbols is prod_{i<nsym} (x - alpha^(i+fcr))
  with first consecutive root ``fcr = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

PRIM = 0x11D
GENERATOR = 2
FCR = 0
FIELD_SIZE = 256

Matrix = list[list[int]]


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 512
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        # Multiply by the generator (2): shift, then reduce by the primitive polynomial.
        x <<= 1
        if x & 0x100:
            x ^= PRIM
    # Doubled so that exp[log a + log b] needs no modulo (log a + log b <= 508).
    for i in range(255, 512):
        exp[i] = exp[i - 255]
    return tuple(exp), tuple(log)


EXP, LOG = _build_tables()
"""``EXP[i] = alpha^i`` for 0 <= i < 510; ``LOG[a]`` for a != 0 (``LOG[0]`` is meaningless)."""


def mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return EXP[255 - LOG[a]]


def div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by 0 in GF(2^8)")
    if a == 0:
        return 0
    return EXP[LOG[a] + 255 - LOG[b]]


def power(a: int, e: int) -> int:
    """``a ** e`` in the field; ``power(0, 0) == 1`` as in reedsolo's ``gf_pow``."""
    if e == 0:
        return 1
    if a == 0:
        return 0
    return EXP[(LOG[a] * e) % 255]


def poly_mul(p: Sequence[int], q: Sequence[int]) -> list[int]:
    out = [0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        if a == 0:
            continue
        for j, b in enumerate(q):
            out[i + j] ^= mul(a, b)
    return out


def generator_poly(nsym: int) -> list[int]:
    """reedsolo's ``rs_generator_poly(nsym, fcr=0, generator=2)``: monic, degree ``nsym``."""
    g = [1]
    for i in range(nsym):
        # (x - a) == (x + a) in characteristic 2.
        g = poly_mul(g, [1, power(GENERATOR, i + FCR)])
    return g


def x_power_remainders(gen: Sequence[int], count: int) -> list[list[int]]:
    """``[x^d mod gen for d in range(m, m + count)]`` with ``m = deg gen``.

    Each remainder has ``m`` coefficients, highest degree first. ``gen`` must be monic.
    """
    m = len(gen) - 1
    if m == 0:
        return [[] for _ in range(count)]
    out: list[list[int]] = []
    rem = list(gen[1:])  # x^m mod gen, because gen is monic
    for _ in range(count):
        out.append(rem)
        lead = rem[0]
        rem = [*rem[1:], 0]  # multiply by x ...
        if lead:  # ... and subtract lead * gen to drop the x^m term
            for i in range(m):
                rem[i] ^= mul(lead, gen[i + 1])
    return out


def mat_mul(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> Matrix:
    rows, inner, cols = len(a), len(b), len(b[0]) if b else 0
    out = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        row = out[i]
        for t in range(inner):
            c = a[i][t]
            if c == 0:
                continue
            lc = LOG[c]
            brow = b[t]
            for j in range(cols):
                v = brow[j]
                if v:
                    row[j] ^= EXP[lc + LOG[v]]
    return out


def mat_inv(a: Sequence[Sequence[int]]) -> Matrix:
    """Inverse of a square matrix by Gauss-Jordan elimination; ZeroDivisionError if singular."""
    size = len(a)
    work = [[*row, *(1 if i == j else 0 for j in range(size))] for i, row in enumerate(a)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if work[r][col]), None)
        if pivot is None:
            raise ZeroDivisionError("singular matrix over GF(2^8)")
        work[col], work[pivot] = work[pivot], work[col]
        prow = work[col]
        scale = inv(prow[col])
        if scale != 1:
            prow[:] = [mul(v, scale) for v in prow]
        for r in range(size):
            f = work[r][col]
            if r != col and f:
                row = work[r]
                lf = LOG[f]
                for j in range(col, 2 * size):
                    v = prow[j]
                    if v:
                        row[j] ^= EXP[lf + LOG[v]]
    return [row[size:] for row in work]
