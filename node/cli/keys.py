"""``init`` (new, or recovered from the 24 words) and ``key passwd``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from corestate.node import keystore
from corestate.node.cli.context import _group_round, _passphrase, _port
from corestate.node.cli.output import EXIT_OK, Out
from corestate.node.home import Home
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError

# -- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.local import init_home
    home = Home(args.home)
    if home.exists():
        from corestate.node.errors import HomeExists
        raise HomeExists(str(home.path))
    if args.recover:
        if args.phrase_file:
            try:
                phrase = Path(args.phrase_file).read_text()
            except OSError as exc:
                raise CoreStateError(f"cannot read the phrase file: {exc.strerror}: {args.phrase_file}")
        elif sys.stdin.isatty():
            import getpass
            phrase = getpass.getpass("Recovery phrase (24 words): ")
        else:
            raise CoreStateError("init --recover needs the phrase", hint="pass --phrase-file FILE")
        root = keystore.phrase_to_root(phrase)
    else:
        root = keystore.new_root()
    hsm = None
    if args.hsm_module or args.hsm_token:
        if not (args.hsm_module and args.hsm_token):
            raise CoreStateError("an HSM seal needs both --hsm-module and --hsm-token",
                                 hint="e.g. --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token mytoken")
        hsm = (args.hsm_module, args.hsm_token)
    passphrase = _passphrase(args, confirm=hsm is None)
    existed = home.path.exists()
    try:
        keys = init_home(home, root, passphrase, hsm=hsm, generation=args.generation)
    except CoreStateError:
        # Nothing half-made stays behind: a failed seal leaves no key; a home folder that
        # this init created goes too (one the user made is left as it was found).
        if not existed and not home.key_path.exists():
            import shutil
            shutil.rmtree(home.path, ignore_errors=True)
        raise
    phrase_out = keystore.root_to_phrase(root)
    recovered = None
    if args.recover and args.peer:
        with LocalNode.open(home, passphrase, hsm_module=args.hsm_module) as node:
            args.opened_node = node
            recovered = _recover_from_group(args, node, out)
    elif args.peer:
        raise CoreStateError("--peer is for `init --recover`", hint="a new node joins with `group join TOKEN`")
    if out.json:
        out.obj({"home": str(home.path), "peer_id": keys.peer_id,
                 "phrase": None if args.recover else phrase_out, "recovered": bool(args.recover),
                 "from_group": recovered})
        return EXIT_OK
    out.say(f"created node home {home.path}")
    out.say(f"peer id  {keys.peer_id}")
    if args.recover:
        out.say("keys recovered from the phrase; `corestate snapshots` lists what the store holds")
    else:
        out.say("")
        out.say("Recovery phrase — write it down and keep it offline. It is shown only now.")
        out.say("With it alone a fresh machine gets every key of this node back:")
        out.say("")
        words = phrase_out.split()
        for i in range(0, 24, 6):
            out.say("  " + "  ".join(f"{i + j + 1:2d}.{w:<9}" for j, w in enumerate(words[i:i + 6])))
        out.say("")
    out.say(f"protect paths with `corestate backup PATH`, or list them in {home.config_path}")
    return EXIT_OK


def _recover_from_group(args: argparse.Namespace, node: LocalNode, out: Out) -> dict[str, Any]:
    """A fresh home with the phrase's keys: fetch this node's own signed partition from
    the group, bump its epoch (a stale instance's later writes are then refused), rebuild
    the share ledger from its placement records, and bring back the index from the packs
    (every pack is fetched once; data packs are dropped again, metadata packs kept)."""
    from corestate.node.peers import split_peer_addr
    peer, transport = split_peer_addr(args.peer)
    node.book.add(peer, [transport] if transport else [], trusted=True)
    port = _port(args)
    assert port is not None
    out.say(f"asking {peer[-8:]} for this node's records ...")
    port.call(lambda mesh: mesh.groups.sync_with(peer, [transport] if transport else None))
    me = node.keys.peer_id
    if not node.group.in_group or not node.group.is_member(me):
        raise CoreStateError("that peer does not know this node as a member of its group",
                             hint="check the phrase (and the peer address); a removed identity "
                                  "re-joins with `group join` under a new invite")

    # The newest head may be at another member.
    others = [p for p in node.group.members() if p not in (me, peer)]
    port.call(lambda mesh: mesh.groups.sync_all(others))
    return _rebuild_from_partition(args, node, out)


def _rebuild_from_partition(args: argparse.Namespace, node: LocalNode, out: Out) -> dict[str, Any]:
    """Rebuild the share ledger and the index from this node's records in the catalog:
    its own partition, or (after a move to a new identity generation) the newest
    partition of one of its earlier identities."""
    import cbor2
    from corestate.node.runtime import meshops
    me = node.keys.peer_id
    port = _port(args)
    assert port is not None
    def has_records(author: str) -> bool:  # snapshots or packs, not just an address advert
        return any(k[:1] in (b"s", meshops.PACK_KEY) for k in node.group.catalog.entries(author))
    source = me
    if not has_records(me):
        source = next((old for old in node.earlier_ids if has_records(old)), me)
    head = node.group.catalog.head(me)
    entries = {k: v for k, v in node.group.catalog.entries(source).items()}
    entries = {k: e.value for k, e in entries.items() if e.value is not None}
    if source != me:
        # The old identity's sealed values are bound to its PeerID: re-seal for this one.
        from corestate.node.core import catalog as cat
        for k, v in list(entries.items()):
            if k[:1] == b"s":
                try:
                    plain = cat.open_value(node.keys.catalog_key, source, k, v)
                except CoreStateError:
                    del entries[k]
                    continue
                entries[k] = cat.seal_value(node.keys.catalog_key, me, k, plain)
        entries.pop(b"a", None)
    old_epoch = head[0] if head else 0
    node.group.set_epoch(old_epoch + 1)
    packs = 0
    for key, value in entries.items():
        if not key.startswith(meshops.PACK_KEY) or len(key) != 33:
            continue
        pid = key[1:]
        k, n, size, shares, *rest = cbor2.loads(value)
        owner = rest[0] if rest else ("" if source == me else source)
        node.ledger.begin_pack(pid, k, n, size, owner=owner)
        if owner and len(rest) == 0:
            # Carried into this identity's partition: say whose name the holders filed it under.
            entries[key] = cbor2.dumps([k, n, size, shares, owner], canonical=True)
        for index, holder, root, ssize in shares:
            node.ledger.record_share(pid, index, holder, root, ssize)
        node.ledger.set_local(pid, False)
        packs += 1
    out.say(f"found {packs} packs and {sum(1 for k in entries if k[:1] == b's')} snapshots; fetching the packs "
            "to rebuild the index ...")
    fetched = meshops.fetch(node, port, node.ledger.remote_only())
    problems = node.repo.sync()
    keep = node.metadata_packs()
    for pid in keep:
        node.ledger.set_local(pid, True)
    meshops.drop_fetched(node, [p for p in fetched if p not in keep])
    # The new epoch supersedes the old one: carry forward what this node still claims.
    node.group.write(entries)
    _group_round(args, node)
    for pid, reason in problems:
        out.warn(f"pack {pid.hex()[:16]}: {reason}")
    snaps = node.repo.snapshots()
    out.say(f"recovered {len(snaps)} snapshot(s) from the group; epoch {old_epoch} -> {old_epoch + 1}")
    return {"snapshots": len(snaps), "packs": packs, "epoch": old_epoch + 1}


def cmd_key_passwd(args: argparse.Namespace, out: Out) -> int:
    home = Home(args.home)
    home.require()
    home.lock()
    try:
        sealed = home.key_path.read_bytes()
        if keystore.is_hsm(sealed):
            raise CoreStateError("this node's key is sealed by an HSM token, not a passphrase",
                                 hint="change the token's user PIN with the token's own tools")
        root = keystore.unseal(sealed, _passphrase(args))
        new = keystore.read_passphrase(args.new_passphrase_file, confirm=True) if args.new_passphrase_file \
            else _prompt_new()
        keystore.write_key(home.key_path, root, new)
    finally:
        home.unlock()
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
