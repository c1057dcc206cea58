"""Errors of corestate.node; all derive from CoreStateError."""

from __future__ import annotations

from corestate.errors import CoreStateError


class NodeError(CoreStateError):
    """Root of the errors raised by corestate.node."""
