"""``corestate tui``: the terminal UI for the daemon of a home (``tui/``, a Textual app).

The TUI talks to the daemon over the control socket only; this module finds the socket of
the home and hands it over. It starts even when no daemon runs: the screen then says
``disconnected`` with how to start one, and connects when a daemon appears.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from corestate.node.cli.output import EXIT_OK, Out
from corestate.node.runtime.client import socket_path

from corestate.errors import CoreStateError


def cmd_tui(args: argparse.Namespace, out: Out) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CoreStateError("the TUI needs a terminal",
                             hint="run it in a terminal; scripts use `corestate status --json`")
    home = Path(args.home).expanduser()
    term = os.environ.get("TERM", "")
    if term in ("", "dumb", "unknown") or term.startswith(("vt", "linux")):
        # A terminal that says little of itself gets the 16 standard colours, never
        # true colour (Textual's own guess); one that says more is trusted.
        os.environ.setdefault("TEXTUAL_COLOR_SYSTEM", "standard")
    from corestate.tui.app import run
    run(socket_path(home), home)
    return EXIT_OK
