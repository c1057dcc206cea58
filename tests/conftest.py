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

Groups go to the workers heaviest first (``HEAVIEST``, measured; then the groups with the
most tests marked ``slow`` or using the ``cli`` fixture), so no long group starts last and
holds up the end of the run. Without ``-n`` nothing changes: one process, the usual order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from helpers import PASSPHRASE, Cli, cheap_key

NETNS_HELPERS = ("natlab", "netmesh")
LOOP_DEVICE_FIXTURES = ("btrfs_mount", "xfs_mount")
# The groups that cost the most wall time, most first (measured: tests/bench/suite_cost.py
# over a whole run). Any other group follows, those with more tests that start processes first. A
# group missing here only risks starting late; keep the list to the top fifteen or so.
HEAVIEST = (
    "tests/node/test_anomaly_node.py",
    "netns",
    "tests/node/test_group.py",
    "loop-devices",
    "tests/node/test_repair.py",
    "tests/node/test_health_daemons.py",
    "tests/node/test_crash_and_bad_input.py",
    "tests/node/test_daemon.py",
    "tests/node/test_backup_restore.py",
    "tests/node/test_group_join.py",
    "tests/node/test_stream_daemons.py",
    "tests/node/test_mesh.py",
    "tests/node/test_restore_safety.py",
    "tests/node/test_cancel_api.py",
    "tests/node/test_mount.py",
    "tests/node/test_share_hostile.py",
    "tests/node/test_control_api.py",
)


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
            (v.__name__ if isinstance(v, ModuleType) else getattr(v, "__module__", None)) in NETNS_HELPERS
            for v in vars(module).values()):
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
    def weight(name: str) -> tuple[int, int]:
        rank = HEAVIEST.index(name) if name in HEAVIEST else len(HEAVIEST)
        return rank, -sum(_spawns(i) for i in groups[name])
    items[:] = [i for name in sorted(groups, key=weight) for i in groups[name]]


def _spawns(item: pytest.Item) -> bool:
    """Does the test start processes (daemons, CLI commands)? Those take seconds each where
    the others take milliseconds."""
    return item.get_closest_marker("slow") is not None or "cli" in getattr(item, "fixturenames", ())
