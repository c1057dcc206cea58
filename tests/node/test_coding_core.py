"""The code of a backup and which local packs a push (re)codes (node/core/coding.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from corestate.node.core.coding import ToCode, by_code, choose_code, packs_to_code

from corestate.errors import CoreStateError


@pytest.mark.parametrize(("online", "n", "k"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (4, 4, 2), (9, 4, 2)])
def test_the_default_code_follows_the_peers_online(online: int, n: int, k: int) -> None:
    # n = min(4, trusted peers online), k = ⌈n/2⌉ (README).
    assert choose_code(online, 0, 0, 0, 0) == (k, n)


def test_a_backup_overrides_the_config_which_overrides_the_default() -> None:
    assert choose_code(9, 0, 0, 3, 6) == (3, 6)  # [mesh] k, n
    assert choose_code(9, 0, 0, 0, 6) == (3, 6)  # k follows the configured n
    assert choose_code(9, 2, 5, 3, 6) == (2, 5)  # --k/--n beat [mesh]
    assert choose_code(9, 0, 5, 3, 6) == (3, 5)  # only --n: k from [mesh]


@pytest.mark.parametrize(("k", "n"), [(3, 2), (1, 256), (0, 0)])
def test_an_impossible_code_is_refused_with_a_hint(k: int, n: int) -> None:
    with pytest.raises(CoreStateError) as exc:
        choose_code(0, k, n, 0, 0)  # (0, 0) with nobody online: n = 0
    assert exc.value.hint


@dataclass
class Coded:
    k: int
    n: int
    placed: int


def test_new_packs_take_the_backup_code_and_short_ones_keep_their_own() -> None:
    coded = {b"b": Coded(1, 3, 2), b"c": Coded(2, 4, 4), b"d": Coded(2, 2, 0)}
    todo = packs_to_code([b"d", b"c", b"b", b"a"], coded, 2, 4)
    assert todo == [ToCode(b"a", 2, 4), ToCode(b"b", 1, 3, top_up=True), ToCode(b"d", 2, 2, top_up=True)]
    # A pack placed in full (c) is left alone; the upload goes code by code, packs in order.
    assert by_code(todo) == [((1, 3), [b"b"]), ((2, 2), [b"d"]), ((2, 4), [b"a"])]


def test_nothing_local_means_nothing_to_code() -> None:
    assert packs_to_code([], {b"x": Coded(1, 2, 1)}, 2, 4) == [] and by_code([]) == []
