"""Exact answers for the validation models: the simulator is checked against these.

- :func:`loss_probability`: a pack coded k-of-n whose holders fail independently at rate
  ``lam`` (per day) and are replaced by empty nodes, repaired back to n shares at rate
  ``mu`` while it has ``repair_at`` or fewer live shares (and at least k), is an absorbing
  Markov chain on the live-share count n, n-1, ..., k and "lost" (k-1). The probability
  of loss by day T is the (n, lost) entry of ``expm(Q T)``, Q the chain's generator.
- :func:`availability`: with exponential churn, a node is online with probability
  ``p = on / (on + off)`` at any time in the stationary state, independently of the others;
  a pack is available while at least k of its n holders are online: the binomial tail.
- :func:`mttdl_birth_death`: the mean time to absorption of a birth-death chain (one step
  down at rate ``down[j]`` from j failures, one step back at rate ``up[j]``), the closed
  form sum of products; :func:`mttdl` solves the general chain (``-Q_T⁻¹ 1``) to cross-check.

Pure numpy; the matrix exponential is scaling and squaring with a Taylor series (the chains
are at most a few hundred states; tests compare it with scipy's).
"""

from __future__ import annotations

import math

import numpy as np


def generator(k: int, n: int, lam: float, mu: float, repair_at: int | None) -> np.ndarray:
    """The generator over states [n, n-1, ..., k, lost] (index 0 is n live shares)."""
    m = n - k + 2
    q = np.zeros((m, m))
    for idx in range(m - 1):
        live = n - idx
        q[idx, idx + 1] += live * lam  # one holder fails
        if repair_at is not None and mu > 0 and live <= repair_at and idx > 0:
            q[idx, 0] += mu  # repair restores all n
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def expm(a: np.ndarray) -> np.ndarray:
    """The matrix exponential by scaling and squaring (Taylor series of 30 terms)."""
    norm = float(np.abs(a).sum(axis=1).max()) if a.size else 0.0
    s = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0.5 else 0
    b = a / (2**s)
    out = np.eye(len(a))
    term = np.eye(len(a))
    for i in range(1, 30):
        term = term @ b / i
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def loss_probability(k: int, n: int, lam: float, mu: float, repair_at: int | None, days: float) -> float:
    """P(a pack is lost within ``days``), starting with n live shares."""
    q = generator(k, n, lam, mu, repair_at)
    return float(expm(q * days)[0, -1])


def availability(k: int, n: int, p_online: float) -> float:
    """P(at least k of n independent holders are online)."""
    return sum(math.comb(n, j) * p_online**j * (1 - p_online) ** (n - j) for j in range(k, n + 1))


def mttdl(k: int, n: int, lam: float, mu: float, repair_at: int | None) -> float:
    """Mean days to loss from n live shares, for the general chain (fundamental matrix)."""
    q = generator(k, n, lam, mu, repair_at)[:-1, :-1]
    return float(np.linalg.solve(-q, np.ones(len(q)))[0])


def mttdl_birth_death(down: list[float], up: list[float]) -> float:
    """Mean time to absorption of a birth-death chain started at 0 failures.

    ``down[j]`` is the rate from j to j+1 failures (the last step is the loss), ``up[j]``
    the rate from j back to j-1 (``up[0]`` is ignored). The time to go from j to j+1 is
    ``tau_j = 1/down[j] + (up[j]/down[j]) * tau_{j-1}``; the answer is the sum of the taus.
    """
    total = 0.0
    tau = 0.0
    for j, d in enumerate(down):
        tau = 1.0 / d + ((up[j] / d) * tau if j > 0 else 0.0)
        total += tau
    return total


__all__ = ["availability", "expm", "generator", "loss_probability", "mttdl", "mttdl_birth_death"]
