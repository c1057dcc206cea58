"""``init``, ``key passwd``, ``peer`` and ``group`` operations, ``node info``: typed operations
(see node/app/__init__.py)."""

from __future__ import annotations

from corestate.node.app import Operation

OPERATIONS: tuple[Operation, ...] = ()
