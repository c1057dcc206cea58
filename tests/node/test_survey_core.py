"""How a survey judges a holder's answers, keeps the best per share, and picks the
block to audit (node/core/repair.py)."""

from __future__ import annotations

import random

import pytest
from corestate.node.core.repair import (
    VERDICTS,
    Audit,
    Verdict,
    audit_block,
    best,
    judge_share,
    share_blocks,
)


def test_verdict_values_are_the_strings_the_cli_prints() -> None:
    assert VERDICTS == ("ok", "missing", "corrupt", "unreachable")
    assert Verdict("corrupt") is Verdict.CORRUPT


@pytest.mark.parametrize(("has", "audit", "verdict"), [
    (None, None, Verdict.UNREACHABLE),  # HAS unanswered
    (99, None, Verdict.MISSING),  # a wrong size is no copy
    (99, Audit.PROVED, Verdict.MISSING),
    (100, None, Verdict.OK),  # not audited: the right size is enough
    (100, Audit.PROVED, Verdict.OK),
    (100, Audit.FAILED, Verdict.CORRUPT),
    (100, Audit.REFUSED, Verdict.MISSING),
    (100, Audit.UNREACHABLE, Verdict.UNREACHABLE),
])
def test_a_holder_is_judged_by_its_has_then_its_audit(has: int | None, audit: Audit | None,
                                                      verdict: Verdict) -> None:
    assert judge_share(100, has, audit) is verdict


def test_the_best_verdict_over_holders_wins() -> None:
    order = [Verdict.OK, Verdict.CORRUPT, Verdict.MISSING, Verdict.UNREACHABLE]
    for i, a in enumerate(order):
        assert best(None, a) is a
        for b in order[i:]:
            assert best(a, b) is a and best(b, a) is a


def test_block_count_of_a_share() -> None:
    assert share_blocks(10, 10, 4) == 1  # an empty body still has one block
    assert share_blocks(14, 10, 4) == 1
    assert share_blocks(15, 10, 4) == 2


def test_the_audited_block_comes_from_the_rng_and_stays_in_range() -> None:
    picks = [audit_block(7, random.Random(3)) for _ in range(3)]
    assert len(set(picks)) == 1  # a seeded rng: the same block every time
    rng = random.Random(5)
    seen = {audit_block(7, rng) for _ in range(500)}
    assert seen == set(range(7))  # every block can be asked for, and none outside
    assert audit_block(1, random.SystemRandom()) == 0
    with pytest.raises(ValueError):
        audit_block(0, rng)
