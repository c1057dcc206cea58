"""The chaos campaign's pytest entry (``-m chaos``) and the small parts it stands on.

``test_short_campaign`` runs ``python -m tests.chaos --profile short`` (real daemons in
network namespaces, faults throughout, every snapshot restored and compared; about four
minutes on a quiet machine) and fails on anything lost, any crash, any failed
``check --read-data``. It runs only when asked: ``pytest -m chaos tests/chaos`` or
``CORESTATE_CHAOS=1``; ``CORESTATE_CHAOS_SEED`` fixes the seed (else one is drawn and
printed).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.campaign import diff_manifests, manifest

ROOT = Path(__file__).resolve().parents[2]


def test_clock_offset_knob_is_read_once_from_the_environment() -> None:
    code = "from corestate.node import group; print(group._CLOCK_OFFSET_MS)"
    for env, want in (({}, 0), ({"CORESTATE_CLOCK_OFFSET": "3d"}, 3 * 86_400_000),
                      ({"CORESTATE_CLOCK_OFFSET": "-90m"}, -90 * 60_000)):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CORESTATE_")}
        p = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                           env={**clean, **env}, check=True)
        assert int(p.stdout) == want, (env, p.stdout)


def test_manifest_sees_content_mode_and_link_changes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 5000)
    (tmp_path / "l").symlink_to("d/a")
    (tmp_path / "loop").symlink_to("loop")
    before = manifest(tmp_path)
    assert set(before) == {"d", "d/a", "l", "loop"} and before["l"] == "l:d/a"
    assert diff_manifests(before, manifest(tmp_path)) == []
    data = bytearray((tmp_path / "d" / "a").read_bytes())
    data[4321] ^= 1
    (tmp_path / "d" / "a").write_bytes(bytes(data))
    (tmp_path / "l").unlink()
    (tmp_path / "l").symlink_to("d")
    (tmp_path / "e").write_bytes(b"")
    os.chmod(tmp_path / "e", 0o600)
    diff = diff_manifests(before, manifest(tmp_path), limit=10)
    assert sorted(diff) == sorted(["extra e", f"differs d/a: {before['d/a'][:40]} != "
                                   f"{manifest(tmp_path)['d/a'][:40]}", "differs l: l:d/a != l:d"]), diff


def _asked(config: pytest.Config) -> bool:
    return bool(os.environ.get("CORESTATE_CHAOS")) or "chaos" in (config.getoption("markexpr") or "")


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.root
def test_short_campaign(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    if not _asked(pytestconfig):
        pytest.skip("the chaos campaign runs only when asked: -m chaos or CORESTATE_CHAOS=1 (~4 min)")
    if os.geteuid() != 0:
        pytest.skip("the chaos campaign needs root (network namespaces, loop devices)")
    seed = int(os.environ.get("CORESTATE_CHAOS_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    out = tmp_path / "report"
    p = subprocess.run([sys.executable, "-m", "tests.chaos", "--profile", "short", "--seed", str(seed),
                        "--out", str(out), "--work", str(tmp_path / "work")],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(p.stdout[-20000:])
    assert (out / "REPORT.json").exists(), f"no report; exit {p.returncode}: {p.stderr[-3000:]}"
    rep = json.loads((out / "REPORT.json").read_text())
    summary = (f"seed {seed}: lost {rep['lost_detail']}, crashes {rep['crash_detail']}, "
               f"checks {rep['check_read_data']}")
    assert rep["lost"] == 0, summary
    assert rep["crashes"] == 0, summary
    assert rep["checks_failed"] == [], summary
    assert rep["snapshots_verified"] == rep["snapshots_recorded"] > 0, summary
    assert rep["faults_total"] >= 8, rep["faults"]
    assert p.returncode == 0, summary
