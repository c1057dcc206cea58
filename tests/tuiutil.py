"""Helpers for the TUI's tests: run a Textual scenario from a synchronous test (the suite runs
trio; Textual runs asyncio), and wait for a screen to show something with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from textual.pilot import Pilot
from textual.widgets import Static

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def until(pilot: Pilot, pred: Callable[[], object], timeout: float, what: str) -> None:
    """Let the app run until ``pred()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def text_of(app: object, selector: str) -> str:
    """The plain text a Static shows."""
    w = app.query_one(selector, Static)  # type: ignore[attr-defined]
    return str(w.content)
