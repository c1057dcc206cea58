"""Fixtures shared by every test folder (the helpers themselves live in helpers.py), and the
grouping of tests for a parallel run.

Parallel runs (pytest-xdist, ``./run-tests -n 3``; ``--dist loadgroup`` is set below
whenever ``-n`` is given) hand each worker whole groups of tests:

- a test module is one group, so its module-scoped fixtures (a mesh of real daemons, a
  daemon with a backup in it) are built once, on one worker;
- tests that use the machine's global resources share one group, and so one worker, and
  never run beside each other: network namespaces with bridges and iptables (the NAT lab,
  ``netmesh``: modules that import ``natlab`` or ``netmesh``) and loop devices with a real
  file system (the kernel tests' ``btrfs_mount``/``xfs_mount``, one mount per session);
- a test that names its own ``xdist_group`` keeps it.

Groups go to the workers heaviest first (the ones with the most ``slow`` tests, which start
daemons or build large trees), so no long group starts last and holds up the end of the
run. Without ``-n`` nothing changes: one process, the usual order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from helpers import PASSPHRASE, Cli, cheap_key

NETNS_HELPERS = ("natlab", "netmesh")
LOOP_DEVICE_FIXTURES = ("btrfs_mount", "xfs_mount")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    pw = tmp_path / "passphrase"
    pw.write_text(PASSPHRASE + "\n")
    c = Cli(tmp_path / "home", pw)
    c.run("init")
    cheap_key(c.home, PASSPHRASE)  # a setting, not what is tested: see cheap_key
    yield c


def _parallel(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) or hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        # A worker parses the command line afresh, without the controller's choice below:
        # it must still name each test's group to the controller.
        config.option.loadgroup = True
    elif _parallel(config):
        # Whole groups per worker, in the order collected (heaviest first, below).
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False


def _group(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    if isinstance(module, ModuleType) and any(
            isinstance(v, ModuleType) and v.__name__ in NETNS_HELPERS for v in vars(module).values()):
        return "netns"
    if set(LOOP_DEVICE_FIXTURES) & set(getattr(item, "fixturenames", ())):
        return "loop-devices"
    return item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _parallel(config):
        return
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is None:
            name = _group(item)
            item.add_marker(pytest.mark.xdist_group(name))
        else:
            name = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        groups.setdefault(name, []).append(item)
    # Heaviest first; sorted() is stable, so groups of equal weight keep their order.
    order = sorted(groups.values(), key=lambda g: -sum(i.get_closest_marker("slow") is not None for i in g))
    items[:] = [i for g in order for i in g]
