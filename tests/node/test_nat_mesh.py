"""Members behind NATs back up to each other (issue 17), with real daemons in the NAT lab
(tests/natlab.py, root): node 1 on the public host, node 2 (A) and node 3 (B) each behind
a home-router NAT that drops unsolicited packets silently.

Node 1 creates the group; A and B join through invites (which carry node 1's public
address). Within 60 s of joining, A and B each know they are private, hold a relay slot
on node 1 and reach each other (relayed at least). A backs up with k=1 n=2 onto node 1
and B; node 1's held shares are then removed and A restores from B alone. Behind
port-preserving (cone-like) NATs the A-B connection turns direct; behind --random-fully
(symmetric-like) NATs it stays relayed and the restore still works.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import natlab
import pytest
from meshutil import edit_config, last_json, random_tree, restored, share_files, wait_for

pytestmark = pytest.mark.slow


def _info(mesh: Any, i: int) -> dict[str, Any]:
    return last_json(mesh.run(mesh.nodes[i], "node", "info", "--json"))  # type: ignore[no-any-return]


def _connection(mesh: Any, i: int, peer: str) -> str:
    rows = last_json(mesh.run(mesh.nodes[i], "peer", "list", "--json"))
    rows = rows if isinstance(rows, list) else rows.get("peers", [])
    return next((r.get("connection", "none") for r in rows if r["peer"] == peer), "none")


@pytest.mark.parametrize("random", [False, True], ids=["cone", "symmetric"])
def test_members_behind_nat_back_up_and_restore_through_each_other(random: bool, tmp_path: Path) -> None:
    why = natlab.unavailable()
    if why:
        pytest.skip(why)
    with natlab.NatLab(random=random) as lab:
        mesh = natlab.nat_mesh(lab, tmp_path / "mesh")
        try:
            for n in mesh.nodes:
                edit_config(n.home, "pack_size = 16777216", "pack_size = 1048576")
            mesh.start()
            pub, a, b = mesh.nodes
            mesh.run(pub, "group", "create", "nat-lab")
            joined = time.monotonic()
            for n in (a, b):  # A as a second admin: its own invites must carry its circuits
                role = ["--admin"] if n is a else []
                token = mesh.run(pub, "group", "invite", *role).stdout.strip().splitlines()[-1]
                mesh.run(n, "group", "join", token)

            wait_for(lambda: _info(mesh, 0).get("reachability") == "public", 60, "node 1 to be public", every=0.5)
            for i in (1, 2):
                wait_for(lambda i=i: _info(mesh, i).get("reachability") == "private", 60,
                         f"node {i + 1} to know it is private", every=0.5)
                wait_for(lambda i=i: any("/p2p-circuit" in x for x in _info(mesh, i)["addrs"]), 60,
                         f"node {i + 1} to hold a relay slot", every=0.5)

            def a_b_connected() -> bool:
                mesh.run(a, "group", "sync", check=False, timeout=60)
                return _connection(mesh, 1, b.peer_id) != "none"
            wait_for(a_b_connected, 60, "A to reach B", every=1)
            reached_s = time.monotonic() - joined
            print(f"A reached B {reached_s:.1f} s after the joins began")
            assert reached_s < 60, f"A reached B {reached_s:.0f} s after the joins (issue 17: within 60 s)"

            # An invite from a member behind NAT carries its circuit addresses.
            from corestate.node.group import Invite
            token = mesh.run(a, "group", "invite").stdout.strip().splitlines()[-1]
            assert any("/p2p-circuit/p2p/" + a.peer_id in x for x in Invite.parse(token).addrs)

            src = random_tree(tmp_path / "src", 3, seed=17)
            p = mesh.run(a, "backup", str(src), "--k", "1", "--n", "2", "--json", timeout=300)
            assert last_json(p)["snapshot_id"]
            assert share_files(pub.home) and share_files(b.home)

            if random:
                time.sleep(8)  # DCUtR's attempts are spent by now
                assert _connection(mesh, 1, b.peer_id) == "relayed"
            else:
                wait_for(lambda: _connection(mesh, 1, b.peer_id) == "direct", 60,
                         "the A-B connection to turn direct", every=0.5)

            for f in share_files(pub.home):  # node 1's shares are gone: B alone must do
                f.unlink()
            target = tmp_path / "restore"
            mesh.run(a, "restore", "latest", "--target", str(target), timeout=300)
            got = restored(target, src)
            for f in sorted(src.rglob("*")):
                if f.is_file() and not f.is_symlink():
                    assert (got / f.relative_to(src)).read_bytes() == f.read_bytes(), f
        finally:
            mesh.close()
            for n in mesh.nodes:  # shown when the test fails
                log = n.log.read_text()[-4000:] if n.log and n.log.exists() else ""
                print(f"--- daemon log of node {n.index + 1} ---\n{log}")
            shutil.rmtree(tmp_path / "mesh", ignore_errors=True)


def test_upnp_makes_a_member_public_and_can_be_turned_off(tmp_path: Path) -> None:
    """Both routers offer UPnP (miniupnpd). A (``upnp = true``, the default) gets its port
    forwarded: members reach it at its router's address, it is public and needs no relay,
    and B connects to it directly. B (``upnp = false``) leaves its router alone: private."""
    why = natlab.unavailable(upnp=True)
    if why:
        pytest.skip(why)
    with natlab.NatLab(upnp=True) as lab:
        mesh = natlab.nat_mesh(lab, tmp_path / "mesh")
        try:
            pub, a, b = mesh.nodes
            edit_config(b.home, "upnp = true", "upnp = false")
            mesh.start()
            mesh.run(pub, "group", "create", "upnp-lab")
            for n in (a, b):
                token = mesh.run(pub, "group", "invite").stdout.strip().splitlines()[-1]
                mesh.run(n, "group", "join", token)
            mapped = f"/ip4/{lab.wan_ip('a')}/tcp/{natlab.MESH_PORT}/p2p/{a.peer_id}"
            wait_for(lambda: _info(mesh, 1).get("reachability") == "public", 60, "A to be public", every=0.5)
            info = _info(mesh, 1)
            assert mapped in info["addrs"] and not any("/p2p-circuit" in x for x in info["addrs"])
            wait_for(lambda: _info(mesh, 2).get("reachability") == "private", 60, "B to be private", every=0.5)
            assert not any(lab.wan_ip("b") in x for x in _info(mesh, 2)["addrs"])

            def b_reaches_a() -> bool:
                mesh.run(b, "group", "sync", check=False, timeout=60)
                return _connection(mesh, 2, a.peer_id) == "direct"
            wait_for(b_reaches_a, 60, "B to connect to A directly", every=1)
        finally:
            mesh.close()
            for n in mesh.nodes:
                log = n.log.read_text()[-4000:] if n.log and n.log.exists() else ""
                print(f"--- daemon log of node {n.index + 1} ---\n{log}")
            shutil.rmtree(tmp_path / "mesh", ignore_errors=True)
