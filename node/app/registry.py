"""Every operation of the application layer, by the type of its call.

The daemon answers a typed call by looking it up here; the CLI runs the same entry in
place when no daemon runs. One line per operation. (``status`` is answered by the daemon
itself, which adds what only it knows: node/app/status.py.)
"""

from __future__ import annotations

from corestate.node.app import (
    Operation,
    advise,
    anomaly,
    backup,
    health,
    inspect,
    maintain,
    members,
    mount,
    rescue,
    restore,
    targets,
)
from corestate.protocol import control as c
from corestate.protocol.messages import Message

OPERATIONS: dict[type[Message], Operation] = {op.call: op for op in (
    Operation(c.SnapshotsCall, inspect.snapshots, page=c.SnapshotsPage),
    Operation(c.LsCall, inspect.ls, page=c.LsPage),
    Operation(c.DiffCall, inspect.diff, page=c.DiffPage),
    Operation(c.StatsCall, inspect.stats),
    *backup.OPERATIONS,
    *restore.OPERATIONS,
    *maintain.OPERATIONS,
    *members.OPERATIONS,
    *mount.OPERATIONS,
    *anomaly.OPERATIONS, *advise.OPERATIONS,
    *health.OPERATIONS, *rescue.OPERATIONS,
    *targets.OPERATIONS,
)}


__all__ = ["OPERATIONS"]
