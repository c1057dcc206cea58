"""Shared fixtures of tests/node.

- The in-process test kit's modules (corestate.node.runtime.testkit): a virtual clock, a
  scratch folder for the homes, and a bound on the real time a test may take (the module's
  ``BUDGET``, in seconds, for modules that ask with ``usefixtures("timed")``).
- Real-daemon modules: ``mesh``, one mesh of real daemons for the whole module, built as the
  module's ``MESH`` (a ``meshutil.MeshShape``) says, and ``mesh_up``, which a module asks
  for around each test (``usefixtures("mesh_up")``) so that every test starts and ends with
  all daemons up. A module's own ``mesh`` fixture overrides this one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.runtime.localmesh import LocalMesh
from corestate.node.runtime.testkit import VirtualClock, scratch_dir
from meshutil import MeshShape, all_up, shared_mesh


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


@pytest.fixture(scope="module")
def mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    shape: MeshShape = request.module.MESH
    with shared_mesh(tmp_path_factory.mktemp(shape.name), shape) as lm:
        yield lm


@pytest.fixture
def mesh_up(mesh: LocalMesh) -> Iterator[LocalMesh]:
    with all_up(mesh):
        yield mesh
