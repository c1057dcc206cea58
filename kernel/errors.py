"""Errors of corestate.kernel; all derive from CoreStateError."""

from __future__ import annotations

from corestate.errors import CoreStateError


class KernelError(CoreStateError):
    """Root of the errors raised by corestate.kernel."""
