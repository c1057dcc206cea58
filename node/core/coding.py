"""The erasure code of a backup's packs, and which local packs a push (re)codes.

Pure: no I/O, no clock. The runtime counts the trusted peers online and reads the ledger;
these functions decide.

Rules (README, "Defaults"):

- The code is k-of-n: n = the backup's ``--n``, else ``[mesh] n``, else min(4, trusted
  peers online); k = the backup's ``--k``, else ``[mesh] k``, else ⌈n/2⌉ (at least 1).
  Anything outside 1 <= k <= n <= 255 is refused (the share format's limit).
- A push codes every local pack not coded yet with the backup's code, and tops up a pack
  coded before but short of shares (placed < n) with its *own* code: its placed shares
  stay valid only under the code they were made with.
- A pack placed in full is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from corestate.errors import CoreStateError

MAX_N = 255  # share indexes are one byte


def choose_code(online: int, k: int, n: int, cfg_k: int, cfg_n: int) -> tuple[int, int]:
    """(k, n) for a backup: ``k``/``n`` asked for it (0: not asked), ``cfg_k``/``cfg_n``
    from ``[mesh]`` (0: not set), ``online`` trusted peers reachable now."""
    n = n or cfg_n or min(4, online)
    k = k or cfg_k or max(1, math.ceil(n / 2))
    if not 1 <= k <= n <= MAX_N:
        raise CoreStateError(f"erasure code k={k} n={n} is not possible",
                             hint="use 1 <= k <= n <= 255, e.g. `--k 2 --n 4`")
    return k, n


class Coded(Protocol):
    """What the ledger knows of a coded pack (node/ledger.py ``CodedPack``)."""

    @property
    def k(self) -> int: ...

    @property
    def n(self) -> int: ...

    @property
    def placed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ToCode:
    """Code ``pack`` k-of-n and place its shares; ``top_up``: it was coded before and is
    short of shares (its own code, only the missing shares find new holders)."""

    pack: bytes
    k: int
    n: int
    top_up: bool = False


def packs_to_code(local: Iterable[bytes], coded: Mapping[bytes, Coded], k: int, n: int) -> list[ToCode]:
    """The local packs a push (re)codes, in pack order (see the module rules)."""
    todo: list[ToCode] = []
    for pid in sorted(local):
        cp = coded.get(pid)
        if cp is None:
            todo.append(ToCode(pid, k, n))
        elif cp.placed < cp.n:
            todo.append(ToCode(pid, cp.k, cp.n, top_up=True))
    return todo


def by_code(todo: Iterable[ToCode]) -> list[tuple[tuple[int, int], list[bytes]]]:
    """The packs grouped by code, codes in order: one upload per code."""
    groups: dict[tuple[int, int], list[bytes]] = {}
    for t in todo:
        groups.setdefault((t.k, t.n), []).append(t.pack)
    return sorted(groups.items())
