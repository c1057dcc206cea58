"""The ``corestate`` command line: the only place that turns errors into words.

Exit codes: 0 done and safe; 3 done but incomplete (files that could not be read); 1 failed;
2 usage error. ``--json`` prints machine-readable output: for long commands, status lines
while working and one result object on the last line of stdout.

Layout: ``parser`` builds the argument parser; ``output`` is where words, JSON and progress
go; ``context`` opens the node and the way to the mesh; one module per command group
(``keys``, ``backup``, ``restore``, ``inspect``, ``maintain``, ``nodecmd``, ``peer``,
``group``); here, ``main`` routes a command to the running daemon or runs it in place.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from corestate.node.cli.output import (
    EXIT_FAIL,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    Out,
    progress_bar,
)
from corestate.node.cli.parser import build_parser
from corestate.node.home import default_home

from corestate.errors import CoreStateError

# Commands a running daemon executes for the CLI; the others run here.
# (Commands that are typed operations — snapshots, ls, diff, stats, status — reach the
# daemon through ``context.invoke`` instead.)
ROUTED = {"backup", "restore", "check", "repair", "forget", "prune", "peer", "node info", "group"}
# Commands that may need peers when run without a daemon (a transient host starts lazily).
NETWORKED = {"backup", "restore", "check", "repair", "forget", "prune", "peer add", "group join", "group remove", "group leave",
             "group sync", "init"}


def _command_name(args: argparse.Namespace) -> str:
    sub = (getattr(args, "node_command", None) or getattr(args, "peer_command", None)
           or getattr(args, "group_command", None))
    return f"{args.command} {sub}" if sub else args.command


def execute(args: argparse.Namespace, out: Out) -> int:
    """Run a parsed command; the one place errors become words and exit codes."""
    try:
        return int(args.fn(args, out))
    except CoreStateError as exc:
        out.error(f"error: {exc}")
        if exc.hint:
            out.error(f"hint: {exc.hint}")
        return EXIT_FAIL
    except OSError as exc:
        out.error(f"error: {exc.strerror or exc}: {exc.filename or ''}")
        return EXIT_FAIL


def _remote(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Hand the command to the daemon of the home, if one runs; None otherwise."""
    from corestate.node.runtime.client import connect, run_remote
    s = connect(Path(args.home))
    if s is None:
        return None
    with s, _LazyBar() as bar:
        return run_remote(s, argv, os.getcwd(), bar.update if sys.stderr.isatty() else None)


class _LazyBar:
    """The client's progress bar, drawn only once the daemon reports progress."""

    def __init__(self) -> None:
        self._cm: Any = None
        self._update: Any = None

    def __enter__(self) -> _LazyBar:
        return self

    def update(self, label: str, done: int, total: int, unit: str) -> None:
        if self._update is None:
            self._cm = progress_bar()
            self._update = self._cm.__enter__()
        self._update(label, done, None if total < 0 else total, "")

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        if args.command in ("node", "peer", "key", "group"):
            parser.parse_args([args.command, "--help"])  # prints that command's help, exits 0
        parser.print_help()
        return EXIT_USAGE
    if args.home is None:
        args.home = default_home()
    out = Out(getattr(args, "json", False))
    # The long-lived objects (caches, indexes, trees) are many and acyclic: scanning them
    # again and again in the cyclic collector costs seconds on large trees.
    import gc
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    name = _command_name(args)
    try:
        if name in ROUTED or args.command in ROUTED:
            code = _remote(args, list(sys.argv[1:] if argv is None else argv))
            if code is not None:
                return code
        if name in NETWORKED:
            from corestate.node.runtime.port import TransientMeshPort
            port = args.mesh_port = TransientMeshPort(lambda: getattr(args, "opened_node", None))
            try:
                return execute(args, out)
            finally:
                port.close()
        return execute(args, out)
    except KeyboardInterrupt:
        print("interrupted; what was stored so far is kept and reused next time", file=sys.stderr)
        return 130


__all__ = ["EXIT_FAIL", "EXIT_INCOMPLETE", "EXIT_OK", "EXIT_USAGE", "Out", "build_parser", "execute", "main"]
