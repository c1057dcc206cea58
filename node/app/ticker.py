"""A ticker: call a function from a background thread every few seconds while a block runs.

The operations tick their progress events with it (``backup.ticking``), the CLI its bar and
JSON status lines; operations run in worker threads, so the ticker is a thread too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def every(seconds: float, tick: Callable[[], None]) -> Iterator[None]:
    """Call ``tick`` every ``seconds`` while the block runs (not at its start or end)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            tick()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


__all__ = ["every"]
