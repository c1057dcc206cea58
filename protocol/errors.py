"""Errors of corestate.protocol; all derive from CoreStateError."""

from __future__ import annotations

from corestate.errors import CoreStateError


class ProtocolError(CoreStateError):
    """Root of the errors raised by corestate.protocol."""
