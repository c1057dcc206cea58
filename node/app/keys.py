"""``init`` (a new node, or one recovered from its 24 words) and ``key passwd``.

Neither is a call to a daemon: a new home has none, and a passphrase change re-seals the
key file under the home lock, which a running daemon holds (so ``key passwd`` with a daemon
up fails with HomeBusy, as it always did). Both are plain functions taking what they need
as parameters — never control messages, so a passphrase or a phrase never crosses the
control socket and no request type exists that could carry one:

- ``init(InitRequest, ctx, on_open)``: the home path, the passphrase (or HSM PIN) as bytes,
  the phrase as text. ``check_init`` makes the checks that need no secret (a home that
  exists, a half-given HSM option), so the CLI can make them before it asks for one. With
  ``peer``, the recovered node's records come back from the group (node/app/recover.py)
  over ``ctx.mesh()``; ``on_open`` is told the node first, so a transient mesh port can
  start its host under that node's identity.
- ``key_passwd(home, old, new)``: the passphrases are functions returning bytes, called
  only when the workflow needs them — after it knows the key is sealed by a passphrase at
  all, and the new one only once the old one has opened the key — so a person at a
  terminal is never asked for a secret that cannot help.

Invariant: a failed ``init`` leaves nothing half-made: no key, and no home folder it made
(one the user made is left as it was found).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corestate.node import keystore
from corestate.node.app import Context
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError


@dataclass(frozen=True, slots=True)
class InitRequest:
    home: Path
    passphrase: bytes  # seals the key (with ``hsm``: the token's user PIN)
    phrase: str | None = None  # recover the keys from these 24 words; None: a new node
    hsm: tuple[str, str] | None = None  # (PKCS#11 module, token label) that seals the key
    generation: int = 0  # identity generation (a recovered node that moved on from a stolen one)
    peer: str | None = None  # with ``phrase``: a group member's address to recover records from


@dataclass(frozen=True, slots=True)
class InitResult:
    home: Path
    config_path: Path
    peer_id: str
    phrase: str  # the 24 words of the root (for a new node, the only time they are shown)
    recovered: bool
    asked: str | None  # the member asked for this node's records (``peer``)
    from_group: c.Recovered | None


def check_init(home: Path, hsm_module: str | None, hsm_token: str | None) -> tuple[str, str] | None:
    """The checks of ``init`` that need no secret; returns the HSM seal, if any."""
    h = Home(home)
    if h.exists():
        from corestate.node.errors import HomeExists
        raise HomeExists(str(h.path))
    if hsm_module or hsm_token:
        if not (hsm_module and hsm_token):
            raise CoreStateError("an HSM seal needs both --hsm-module and --hsm-token",
                                 hint="e.g. --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token mytoken")
        return (hsm_module, hsm_token)
    return None


def init(req: InitRequest, ctx: Context, on_open: Callable[[LocalNode], None] | None = None) -> InitResult:
    from corestate.node.local import init_home
    home = Home(req.home)
    check_init(req.home, *(req.hsm or (None, None)))
    root = keystore.phrase_to_root(req.phrase) if req.phrase is not None else keystore.new_root()
    existed = home.path.exists()
    try:
        keys = init_home(home, root, req.passphrase, hsm=req.hsm, generation=req.generation)
    except CoreStateError:
        # Nothing half-made stays behind: a failed seal leaves no key; a home folder that
        # this init created goes too (one the user made is left as it was found).
        if not existed and not home.key_path.exists():
            import shutil
            shutil.rmtree(home.path, ignore_errors=True)
        raise
    recovered = None
    asked = None
    if req.phrase is not None and req.peer:
        from corestate.node.app.recover import recover_from_group
        from corestate.node.peers import split_peer_addr
        asked = split_peer_addr(req.peer)[0]
        with LocalNode.open(home, req.passphrase, hsm_module=req.hsm[0] if req.hsm else None) as node:
            if on_open is not None:
                on_open(node)
            recovered = recover_from_group(node, req.peer, ctx)
    elif req.peer:
        raise CoreStateError("--peer is for `init --recover`", hint="a new node joins with `group join TOKEN`")
    return InitResult(home=home.path, config_path=home.config_path, peer_id=keys.peer_id,
                      phrase=keystore.root_to_phrase(root), recovered=req.phrase is not None,
                      asked=asked, from_group=recovered)


def key_passwd(home_path: Path, old: Callable[[], bytes], new: Callable[[], bytes]) -> None:
    """Seal the key of the home at ``home_path`` under the passphrase ``new()`` returns,
    once the one ``old()`` returns has opened it (under the home lock)."""
    home = Home(home_path)
    home.require()
    home.lock()
    try:
        sealed = home.key_path.read_bytes()
        if keystore.is_hsm(sealed):
            raise CoreStateError("this node's key is sealed by an HSM token, not a passphrase",
                                 hint="change the token's user PIN with the token's own tools")
        root = keystore.unseal(sealed, old())
        keystore.write_key(home.key_path, root, new())
    finally:
        home.unlock()


__all__ = ["InitRequest", "InitResult", "check_init", "init", "key_passwd"]
