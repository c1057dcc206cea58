"""Fixtures of the in-process test kit's modules (corestate.node.runtime.testkit): a virtual
clock, a scratch folder for the homes, and a bound on the real time a test may take (the
module's ``BUDGET``, in seconds, for modules that ask with ``usefixtures("timed")``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.runtime.testkit import VirtualClock, scratch_dir


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def homes() -> Iterator[Path]:
    with scratch_dir() as d:
        yield d


@pytest.fixture
def timed(request: pytest.FixtureRequest) -> Iterator[None]:
    budget = request.module.BUDGET
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    print(f"{request.node.name}: {took * 1000:.0f} ms")
    assert took < budget, f"{request.node.name} took {took:.1f} s"
