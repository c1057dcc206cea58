"""The node and the mesh a command works on: the daemon's, or opened here under the home lock."""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from typing import TYPE_CHECKING, cast

from corestate.node import keystore
from corestate.node.cli.output import Out
from corestate.node.home import Home
from corestate.node.local import LocalNode

if TYPE_CHECKING:
    from corestate.node.runtime.port import MeshPort


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes:
    return keystore.read_passphrase(getattr(args, "passphrase_file", None), confirm=confirm)


def _open(args: argparse.Namespace, out: Out | None = None) -> ContextManager[LocalNode]:
    """The node: the daemon's (already open, not closed here) or opened now under the
    home lock."""
    daemon = getattr(args, "daemon", None)
    if daemon is not None:
        return nullcontext(daemon.node)
    home = Home(args.home)
    home.require()
    node = LocalNode.open(home, _passphrase(args), hsm_module=getattr(args, "hsm_module", None))
    args.opened_node = node
    for pid, reason in node.problems:
        msg = f"pack {pid.hex()[:16]} could not be read: {reason} (run `corestate check`)"
        if out is not None:
            out.warn(msg)
        else:
            print(f"warning: {msg}", file=sys.stderr)
    return node


def _port(args: argparse.Namespace) -> MeshPort | None:
    """The way to the mesh: the daemon's, or a transient host started on first use."""
    daemon = getattr(args, "daemon", None)
    if daemon is not None:
        return cast("MeshPort", daemon.port())
    return cast("MeshPort | None", getattr(args, "mesh_port", None))


def _group_round(args: argparse.Namespace, node: LocalNode) -> None:
    """Tell the other members now (the daemon's anti-entropy would, within a minute)."""
    port = _port(args)
    if port is None or not node.group.in_group:
        return
    daemon = getattr(args, "daemon", None)
    if daemon is not None and daemon.mesh.groups is not None:
        daemon.mesh.groups.kick()
        return

    port.call(lambda mesh: mesh.groups.sync_all())
