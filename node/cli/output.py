"""Where the CLI's words, JSON and progress go: the terminal, or a client of the daemon."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from corestate.node.app.ticker import every as _every


def _fs(b: bytes) -> str:
    return os.fsdecode(b)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"



class CancelledByUser(KeyboardInterrupt):
    """Ctrl-C while the daemon ran the call: it was asked to stop (``Cancel``, SPEC §8.6)."""

class Out:
    """Where words, JSON and progress go: this terminal, or a CLI client of the daemon.

    ``write(fd, text)`` carries text (fd 1 or 2); ``progress(label, done, total, unit)``,
    when set, carries progress to a client that draws the bar itself.
    """

    def __init__(self, as_json: bool, *, write: Callable[[int, str], None] | None = None,
                 tty: bool | None = None,
                 progress: Callable[[str, int, int, str], None] | None = None,
                 emit: Callable[[Any], None] | None = None, scheduled: bool = False) -> None:
        self.json = as_json
        self._write = write or _write_local
        self.tty = (sys.stderr.isatty() if tty is None else tty) and not as_json
        self.progress = progress
        # In a daemon: where typed events go (protocol/control.py), and whether the
        # daemon's schedule (not a user) asked for this command.
        self.emit = emit
        self.scheduled = scheduled

    def say(self, text: str = "") -> None:
        if not self.json:
            self._write(1, text + "\n")

    def warn(self, text: str) -> None:
        self._write(2, f"warning: {text}\n")

    def error(self, text: str) -> None:
        self._write(2, text + "\n")

    def obj(self, obj: Any) -> None:
        self._write(1, json.dumps(obj, sort_keys=True) + "\n")


def _write_local(fd: int, text: str) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.write(text)
    stream.flush()


Bar = Callable[[], tuple[str, int, "int | None", str]]  # description, done, total, detail


@contextmanager
def _ticker(out: Out, status: Callable[[], dict[str, Any]], bar: Bar | None) -> Iterator[None]:
    """Progress while a block runs: a rich bar with ETA on a terminal (drawn here, or by
    the CLI client when the daemon runs the command), JSON status lines every second with
    --json, nothing otherwise."""
    if out.json:
        with _every(1.0, lambda: out.obj({"type": "status", **status()})):
            yield
        return
    if not out.tty or bar is None:
        yield
        return
    if out.progress is not None:
        send = out.progress

        def tick() -> None:
            desc, done, total, detail = bar()
            send(f"{desc}  {detail}".strip(), done, -1 if total is None else total, "B")
        with _every(0.25, tick):
            yield
        return
    with progress_bar() as update, _every(0.2, lambda: update(*bar())):
        yield


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int | None, str], None]]:
    """A rich progress bar with rate and ETA on stderr; yields its update function."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"), TransferSpeedColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), transient=True, console=Console(stderr=True),
    )
    task = progress.add_task("working", total=None, detail="")

    def update(desc: str, done: int, total: int | None, detail: str) -> None:
        progress.update(task, description=desc, completed=done, total=total, detail=detail)
    with progress:
        yield update


EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
