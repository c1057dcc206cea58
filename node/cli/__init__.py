"""The ``corestate`` command line: the only place that turns errors into words.

Exit codes: 0 done and safe; 3 done but incomplete (files that could not be read); 1 failed;
2 usage error. ``--json`` prints machine-readable output: for long commands, status lines
while working and one result object on the last line of stdout.

Every command is parse -> a typed call of the application layer -> render. ``context.invoke``
sends the call to the daemon of the home when one runs (the control protocol, SPEC 8.6),
else runs the same operation here under the home lock (a transient libp2p host starts
when it asks for the mesh).

Layout: ``parser`` builds the argument parser; ``output`` is where words, JSON and progress
go; ``context`` opens the node, the way to the mesh, and ``invoke``; one module per command
group (``keys``, ``backup``, ``restore``, ``inspect``, ``maintain``, ``nodecmd``, ``peer``,
``group``).
"""

from __future__ import annotations

import argparse
import sys

from corestate.node.cli.output import (
    EXIT_FAIL,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    CancelledByUser,
    Out,
)
from corestate.node.cli.parser import build_parser
from corestate.node.home import default_home

from corestate.errors import CoreStateError

# Commands that may need peers when run without a daemon (a transient host starts lazily).
NETWORKED = {"backup", "restore", "check", "repair", "forget", "prune", "peer add", "group join", "group remove", "group leave",
             "group sync", "init", "audit"}


def _command_name(args: argparse.Namespace) -> str:
    sub = (getattr(args, "node_command", None) or getattr(args, "peer_command", None)
           or getattr(args, "group_command", None) or getattr(args, "sim_command", None))
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        if args.command in ("node", "peer", "key", "group", "sim", "target"):
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
        if name in NETWORKED:
            from corestate.node.runtime.port import TransientMeshPort
            port = args.mesh_port = TransientMeshPort(lambda: getattr(args, "opened_node", None))
            try:
                return execute(args, out)
            finally:
                port.close()
        return execute(args, out)
    except CancelledByUser:
        print("cancelled; what was stored so far is kept and reused next time", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; what was stored so far is kept and reused next time", file=sys.stderr)
        return 130


__all__ = ["EXIT_FAIL", "EXIT_INCOMPLETE", "EXIT_OK", "EXIT_USAGE", "Out", "build_parser", "execute", "main"]
