"""Errors of corestate.erasure; all derive from CoreStateError."""

from __future__ import annotations

from corestate.errors import CoreStateError


class ErasureError(CoreStateError):
    """Root of the errors raised by corestate.erasure."""
