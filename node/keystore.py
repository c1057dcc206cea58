"""The sealed root secret: 32 bytes, shown once as 24 BIP-39 words, kept under a passphrase.

On disk (HOME/key) it is canonical CBOR::

    {"v": 1, "kdf": "argon2id", "ops": int, "mem": int, "salt": 16 bytes,
     "box": XSalsa20-Poly1305 secretbox of the root under the Argon2id key}

Or, sealed by a PKCS#11 token (HSM; kernel/hsm.py does the token work)::

    {"v": 1, "kdf": "pkcs11", "module": text, "token": text label, "key": text label,
     "blob": the token-sealed root (AES-GCM under a non-extractable token key)}

The Argon2id cost is moderate (3 passes, 64 MiB: about 0.13 s here) because every CLI
invocation unseals once; the parameters are stored, so they can be raised later without
breaking older keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cbor2
import nacl.exceptions
import nacl.pwhash
import nacl.secret
from corestate.kernel.state import write_atomic
from corestate.node.errors import BadPhrase, PassphraseError, WrongPassphrase
from corestate.protocol.keys import ROOT_BYTES

OPS = 3
MEM = 64 << 20
ENV_PASSPHRASE = "CORESTATE_PASSPHRASE"
_MNEMONIC_CACHE: list[Any] = []


def _mnemonic() -> Any:
    """The BIP-39 word list, loaded on first use (only init and recovery need it)."""
    if not _MNEMONIC_CACHE:
        from mnemonic import Mnemonic
        _MNEMONIC_CACHE.append(Mnemonic("english"))
    return _MNEMONIC_CACHE[0]


def new_root() -> bytes:
    return os.urandom(ROOT_BYTES)


def root_to_phrase(root: bytes) -> str:
    return str(_mnemonic().to_mnemonic(root))


def phrase_to_root(phrase: str) -> bytes:
    words = " ".join(phrase.lower().split())
    if len(words.split()) != 24:
        raise BadPhrase(f"expected 24 words, got {len(words.split())}")
    m = _mnemonic()
    unknown = [w for w in words.split() if w not in m.wordlist]
    if unknown:
        raise BadPhrase(f"not BIP-39 words: {', '.join(unknown[:3])}")
    if not m.check(words):
        raise BadPhrase("the checksum does not match (a word is wrong or out of order)")
    return bytes(m.to_entropy(words))


def _kdf(passphrase: bytes, salt: bytes, ops: int, mem: int) -> bytes:
    return bytes(
        nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem)
    )


def seal(root: bytes, passphrase: bytes, *, cost: tuple[int, int] = (OPS, MEM)) -> bytes:
    """``cost``: Argon2id (passes, memory bytes). Only throwaway homes (the in-process
    test kit) pass anything but the default; the cost is stored with the key."""
    ops, mem = cost
    salt = os.urandom(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, ops, mem))
    return cbor2.dumps(
        {"v": 1, "kdf": "argon2id", "ops": ops, "mem": mem, "salt": salt, "box": bytes(box.encrypt(root))},
        canonical=True,
    )


def seal_hsm(root: bytes, module: str, token_label: str, pin: bytes,
             key_label: str = "corestate-root-wrap") -> bytes:
    """Seal the root with a key held in a PKCS#11 token; the PIN stands in for the passphrase."""
    from corestate.kernel import hsm
    token = hsm.HsmToken(Path(module), token_label, pin.decode(), key_label)
    return cbor2.dumps(
        {"v": 1, "kdf": "pkcs11", "module": module, "token": token_label, "key": key_label,
         "blob": hsm.seal(root, token)},
        canonical=True,
    )


def is_hsm(blob: bytes) -> bool:
    try:
        return bool(cbor2.loads(blob).get("kdf") == "pkcs11")
    except (ValueError, AttributeError, cbor2.CBORDecodeError):
        return False


def unseal(blob: bytes, passphrase: bytes, *, hsm_module: str | None = None) -> bytes:
    """The root secret from HOME/key: ``passphrase`` is the passphrase, or the token PIN.

    A token-sealed key names its PKCS#11 module; that module is loaded only when it is safe
    for the user running this (``kernel.hsm.check_module``) — unless ``hsm_module``, a
    module the user named on the command line, is given: then that one is loaded."""
    try:
        o = cbor2.loads(blob)
        if o.get("v") == 1 and o.get("kdf") == "pkcs11":
            from corestate.kernel import hsm
            module = Path(hsm_module) if hsm_module else hsm.check_module(Path(o["module"]))
            token = hsm.HsmToken(module, o["token"], passphrase.decode(), o["key"])
            return hsm.unseal(o["blob"], token)
        if o.get("v") != 1 or o.get("kdf") != "argon2id":
            raise ValueError("unknown key format")
        key = _kdf(passphrase, o["salt"], int(o["ops"]), int(o["mem"]))
    except (ValueError, TypeError, KeyError, AttributeError, cbor2.CBORDecodeError) as exc:
        raise PassphraseError(f"the key file is damaged: {exc}",
                              hint="recover the node from its 24-word phrase")
    try:
        root = nacl.secret.SecretBox(key).decrypt(o["box"])
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase()
    return bytes(root)


def write_key(path: Path, root: bytes, passphrase: bytes, *, hsm: tuple[str, str] | None = None,
              cost: tuple[int, int] = (OPS, MEM)) -> None:
    """Seal ``root`` into ``path``: under the passphrase, or with ``hsm=(module, token label)``
    under a token key (``passphrase`` is then the token's user PIN)."""
    write_atomic(path, seal(root, passphrase, cost=cost) if hsm is None else seal_hsm(root, *hsm, passphrase))


def read_passphrase(passphrase_file: str | None, *, confirm: bool = False) -> bytes:
    """The passphrase from a file (first line), the environment, or the terminal."""
    if passphrase_file:
        try:
            with open(passphrase_file, "rb") as f:
                line = f.readline()
        except OSError as exc:
            raise PassphraseError(f"cannot read the passphrase file: {exc.strerror}: {passphrase_file}")
        value = line.rstrip(b"\r\n")
    elif os.environ.get(ENV_PASSPHRASE) is not None:
        value = os.environ[ENV_PASSPHRASE].encode()
    else:
        import sys
        if not sys.stdin.isatty():
            raise PassphraseError(
                "a passphrase is needed and there is no terminal to ask on",
                hint=f"pass --passphrase-file FILE or set {ENV_PASSPHRASE}",
            )
        import getpass
        value = getpass.getpass("Passphrase: ").encode()
        if confirm and getpass.getpass("Passphrase again: ").encode() != value:
            raise PassphraseError("the two passphrases differ", hint="run the command again")
    if not value:
        raise PassphraseError("the passphrase is empty", hint="use a non-empty passphrase")
    return value
