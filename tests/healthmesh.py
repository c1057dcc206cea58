"""What the real-daemon health tests share (tests/node/test_health_daemons.py,
test_health_owner_away.py): the group's configuration and a few ways to look at it.

An owner (node 1) and four members in one group; audits every 5 s, repair every 10 s, a
holder counted lost after 30 s, an owner away after 20 s; backups coded k=2 of n=3, so each
pack leaves a member free for a rebuilt share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corestate.node.runtime.localmesh import LocalMesh
from meshutil import MeshShape, last_json

OWNER = 0

CONFIG = (
    ('repair_every = "1d"', 'repair_every = "10s"'),
    ('audit_every = "1h"', 'audit_every = "5s"'),
    ('holder_lost_after = "3d"', 'holder_lost_after = "30s"'),
    ('owner_away_after = "3d"', 'owner_away_after = "20s"'),
)


def shape(name: str) -> MeshShape:
    return MeshShape(name, 5, group="office", config=CONFIG)


def health(mesh: LocalMesh) -> dict:
    p = mesh.run(mesh.nodes[OWNER], "health", "--json", check=False)
    assert p.returncode in (0, 3), p.stdout + p.stderr
    return last_json(p)


def full(h: dict) -> bool:
    p = h["packs"]
    return p["full"] > 0 and p["degraded"] == p["at_risk"] == p["lost"] == 0


def when(h: dict, ok: Callable[[dict], bool]) -> dict | None:
    return h if ok(h) else None


def backup(mesh: LocalMesh, src: Path) -> dict:
    p = mesh.run(mesh.nodes[OWNER], "backup", str(src), "--k", "2", "--n", "3", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = last_json(p)
    assert out["mesh"]["safe"], out
    return out
