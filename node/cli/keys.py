"""``init`` (new, or recovered from the 24 words) and ``key passwd``: parse, run the
application layer's workflow (node/app/keys.py: neither goes to a daemon), render."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corestate.node import keystore
from corestate.node.app import Local
from corestate.node.app import keys as app
from corestate.node.cli.context import _passphrase, _port
from corestate.node.cli.output import EXIT_OK, Out
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

# -- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    hsm = app.check_init(args.home, args.hsm_module, args.hsm_token)
    phrase = None
    if args.recover:
        phrase = _read_phrase(args)
        keystore.phrase_to_root(phrase)  # 24 valid words, before a passphrase is asked for
    passphrase = _passphrase(args, confirm=hsm is None)

    def opened(node: LocalNode) -> None:
        args.opened_node = node  # the transient mesh port's host runs under its identity
    ctx = Local(on_event=out.emit, on_warn=out.warn, port=_port(args), scheduled=out.scheduled)
    res = app.init(app.InitRequest(home=args.home, passphrase=passphrase, phrase=phrase, hsm=hsm,
                                   generation=args.generation, peer=args.peer), ctx, opened)
    rec = res.from_group
    if rec is not None:
        out.say(f"asking {(res.asked or '')[-8:]} for this node's records ...")
        say_rebuilt(out, rec)
    if out.json:
        out.obj({"home": str(res.home), "peer_id": res.peer_id,
                 "phrase": None if res.recovered else res.phrase, "recovered": res.recovered,
                 "from_group": None if rec is None else {"snapshots": rec.snapshots, "packs": rec.packs,
                                                          "epoch": rec.epoch,
                                                          "bytes_fetched": rec.bytes_fetched}})
        return EXIT_OK
    out.say(f"created node home {res.home}")
    out.say(f"peer id  {res.peer_id}")
    if res.recovered:
        out.say("keys recovered from the phrase; `corestate snapshots` lists what the store holds")
    else:
        out.say("")
        out.say("Recovery phrase — write it down and keep it offline. It is shown only now.")
        out.say("With it alone a fresh machine gets every key of this node back:")
        out.say("")
        words = res.phrase.split()
        for i in range(0, 24, 6):
            out.say("  " + "  ".join(f"{i + j + 1:2d}.{w:<9}" for j, w in enumerate(words[i:i + 6])))
        out.say("")
    out.say(f"protect paths with `corestate backup PATH`, or list them in {res.config_path}")
    return EXIT_OK


def say_rebuilt(out: Out, rec: c.Recovered) -> None:
    """What came back from the group, as the recovery said it while it worked."""
    out.say(f"found {rec.packs} packs and {rec.found_snapshots} snapshots; fetching the packs "
            "to rebuild the index ...")
    for line in rec.problems:
        out.warn(line)
    out.say(f"recovered {rec.snapshots} snapshot(s) from the group; epoch {rec.epoch - 1} -> {rec.epoch}")


def _read_phrase(args: argparse.Namespace) -> str:
    if args.phrase_file:
        try:
            return Path(args.phrase_file).read_text()
        except OSError as exc:
            raise CoreStateError(f"cannot read the phrase file: {exc.strerror}: {args.phrase_file}")
    if sys.stdin.isatty():
        import getpass
        return getpass.getpass("Recovery phrase (24 words): ")
    raise CoreStateError("init --recover needs the phrase", hint="pass --phrase-file FILE")


def cmd_key_passwd(args: argparse.Namespace, out: Out) -> int:
    def new() -> bytes:
        if args.new_passphrase_file:
            return keystore.read_passphrase(args.new_passphrase_file, confirm=True)
        return _prompt_new()
    app.key_passwd(args.home, lambda: _passphrase(args), new)
    out.say("passphrase changed")
    if out.json:
        out.obj({"changed": True})
    return EXIT_OK


def _prompt_new() -> bytes:
    if not sys.stdin.isatty():
        raise CoreStateError("the new passphrase is needed", hint="pass --new-passphrase-file FILE")
    import getpass
    a = getpass.getpass("New passphrase: ").encode()
    if not a or getpass.getpass("New passphrase again: ").encode() != a:
        raise CoreStateError("the new passphrases are empty or differ", hint="run the command again")
    return a
