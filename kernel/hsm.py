"""Seal the node's 32-byte root secret under a key that never leaves a PKCS#11 token.

``seal(secret, token) -> bytes`` and ``unseal(blob, token) -> bytes``, where ``token`` is an
:class:`HsmToken` (module path, token label, user PIN, key label). The wrapping key is an
AES-256 secret key generated inside the token (``CKA_TOKEN``, ``CKA_SENSITIVE``, not
extractable), made on first use; the secret is encrypted by the token with AES-GCM under a
fresh 96-bit nonce from the token's RNG, with the blob's header as additional data.

Sealed blob (all lengths fixed or prefixed, so a reader can reject any other shape)::

    b"CSHSM1" | u8 len(key_label) | key_label (utf-8) | nonce (12) | ciphertext + tag (16)

Invariants: the secret exists in clear only in this process; a blob unseals only on a token
holding the same key (a wrong token, a deleted key or a changed byte give a clear
:class:`HsmError`, never wrong bytes). Errors name the cause and carry a hint: module library
missing, token not found, PIN refused, key missing, blob not ours.

Loading a PKCS#11 module runs its code in this process, and the sealed key file names the
module. :func:`check_module` is the gate for a module named by a file rather than by the
person running the command: root running any command on another user's home must not run
that user's library.

python-pkcs11 is imported lazily: the rest of corestate.kernel works without it. PKCS#11
libraries keep per-process state, so one module is loaded once per process and reused.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corestate.kernel.errors import (
    HsmError,
    HsmKeyNotFound,
    HsmModuleMissing,
    HsmModuleUntrusted,
    HsmPinIncorrect,
    HsmTokenNotFound,
    HsmUnsealFailed,
)

MAGIC = b"CSHSM1"
NONCE_LEN = 12
TAG_LEN = 16
SECRET_LEN = 32
DEFAULT_KEY_LABEL = "corestate-root-wrap"

_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()


@dataclass(frozen=True)
class HsmToken:
    """Where the wrapping key lives and how to log in (the PIN is not persisted by us)."""

    module: Path
    token_label: str
    pin: str
    key_label: str = DEFAULT_KEY_LABEL


def check_module(module: Path, *, uid: int | None = None) -> Path:
    """The real path of ``module`` when it is safe to load for user ``uid`` (default: the
    effective user): the file and every folder above it owned by that user or by root (by
    root alone when ``uid`` is 0), and none of them writable by group or others (except a
    folder with the sticky bit, where nobody can replace an entry they do not own).
    Load the returned path, not ``module``: a symlink could be re-pointed after the check.
    Raises :class:`HsmModuleUntrusted` (or :class:`HsmModuleMissing`)."""
    uid = os.geteuid() if uid is None else uid
    owners = {0} if uid == 0 else {0, uid}
    real = Path(os.path.realpath(module))
    hint = (f"if you trust it, name it yourself on the command line: --hsm-module {module}; "
            "or install it owned by " + ("root" if uid == 0 else "you or root") +
            " and writable by nobody else")

    def refuse(why: str) -> HsmModuleUntrusted:
        return HsmModuleUntrusted(
            f"the key file names the PKCS#11 module {module}, which {why}: loading it would run "
            "code someone else controls", hint=hint)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise HsmModuleMissing(f"PKCS#11 module {module} cannot be read: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        raise refuse("is not a regular file")
    if st.st_uid not in owners:
        raise refuse(f"belongs to user {st.st_uid}")
    if st.st_mode & 0o022:
        raise refuse("can be written by other users")
    for folder in real.parents:
        try:
            fs = os.stat(folder)
        except OSError as exc:
            raise HsmModuleMissing(f"PKCS#11 module {module}: {folder}: {exc.strerror}")
        if fs.st_uid not in owners:
            raise refuse(f"is in {folder}, which belongs to user {fs.st_uid}")
        if fs.st_mode & 0o022 and not fs.st_mode & stat.S_ISVTX:
            raise refuse(f"is in {folder}, which other users can write")
    return real


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise HsmModuleMissing(
            "python-pkcs11 is not installed",
            hint="pip install python-pkcs11 (a dependency of the HSM seal)",
        )
    return pkcs11


def _lib(module: Path) -> Any:
    pkcs11 = _pkcs11()
    key = str(module)
    with _libs_lock:
        lib = _libs.get(key)
        if lib is None:
            if not module.is_file():
                raise HsmModuleMissing(f"PKCS#11 module {module} does not exist")
            try:
                lib = pkcs11.lib(key)
            except Exception as e:  # the loader raises RuntimeError/OSError variants
                raise HsmModuleMissing(f"cannot load PKCS#11 module {module}: {e}")
            _libs[key] = lib
        return lib


def _session(token: HsmToken) -> Any:
    _pkcs11()
    from pkcs11 import exceptions as ex

    lib = _lib(token.module)
    try:
        tok = lib.get_token(token_label=token.token_label)
    except ex.NoSuchToken:
        raise HsmTokenNotFound(f"no PKCS#11 token labelled {token.token_label!r} in {token.module}")
    except ex.PKCS11Error as e:
        raise HsmError(f"cannot list tokens of {token.module}: {e!r}", retryable=True)
    try:
        return tok.open(user_pin=token.pin, rw=True)
    except (ex.PinIncorrect, ex.PinInvalid, ex.PinLenRange):
        raise HsmPinIncorrect(f"token {token.token_label!r} refused the PIN")
    except ex.PinLocked:
        raise HsmPinIncorrect(
            f"token {token.token_label!r} is locked after wrong PINs",
            hint="unlock the user PIN with the security officer PIN",
        )
    except ex.PKCS11Error as e:
        raise HsmError(f"cannot open token {token.token_label!r}: {e!r}", retryable=True)


def _find_key(session: Any, label: str) -> Any | None:
    from pkcs11 import KeyType, ObjectClass
    from pkcs11 import exceptions as ex

    try:
        return session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label
        )
    except ex.NoSuchKey:
        return None
    except ex.MultipleObjectsReturned:
        raise HsmError(
            f"several AES keys are labelled {label!r} on the token",
            hint="delete the duplicates or use another key label",
        )


def _header(key_label: str) -> bytes:
    raw = key_label.encode()
    if not 0 < len(raw) < 256:
        raise ValueError("key label must be 1..255 bytes of UTF-8")
    return MAGIC + bytes([len(raw)]) + raw


def seal(secret: bytes, token: HsmToken) -> bytes:
    """Encrypt ``secret`` (32 bytes) with the token's wrapping key, creating that key if needed."""
    if len(secret) != SECRET_LEN:
        raise ValueError(f"the root secret is {SECRET_LEN} bytes, got {len(secret)}")
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11 import exceptions as ex
    from pkcs11.mechanisms import GCMParams

    header = _header(token.key_label)
    with _session(token) as session:
        try:
            key = _find_key(session, token.key_label)
            if key is None:
                key = session.generate_key(
                    KeyType.AES,
                    256,
                    label=token.key_label,
                    store=True,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True,
                    },
                )
            nonce = bytes(session.generate_random(NONCE_LEN * 8))
            ct = key.encrypt(
                secret,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, header, TAG_LEN * 8),
            )
        except ex.PKCS11Error as e:
            raise HsmError(f"token {token.token_label!r} could not seal: {e!r}")
    return header + nonce + bytes(ct)


def parse(blob: bytes) -> tuple[bytes, str, bytes, bytes]:
    """(header, key label, nonce, ciphertext) of a sealed blob; HsmUnsealFailed if malformed."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise HsmUnsealFailed("not a CoreState HSM-sealed secret")
    n = blob[len(MAGIC)]
    hlen = len(MAGIC) + 1 + n
    if len(blob) != hlen + NONCE_LEN + SECRET_LEN + TAG_LEN:
        raise HsmUnsealFailed("sealed secret has the wrong length")
    try:
        label = blob[len(MAGIC) + 1 : hlen].decode()
    except UnicodeDecodeError:
        raise HsmUnsealFailed("sealed secret has a malformed key label")
    return blob[:hlen], label, blob[hlen : hlen + NONCE_LEN], blob[hlen + NONCE_LEN :]


def unseal(blob: bytes, token: HsmToken) -> bytes:
    """Decrypt a blob made by :func:`seal` with the key it names, on ``token``."""
    from pkcs11 import Mechanism
    from pkcs11 import exceptions as ex
    from pkcs11.mechanisms import GCMParams

    header, label, nonce, ct = parse(blob)
    with _session(token) as session:
        key = _find_key(session, label)
        if key is None:
            raise HsmKeyNotFound(f"token {token.token_label!r} holds no key labelled {label!r}")
        try:
            secret = bytes(
                key.decrypt(
                    ct,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, header, TAG_LEN * 8),
                )
            )
        except (ex.EncryptedDataInvalid, ex.EncryptedDataLenRange, ex.DataInvalid):
            raise HsmUnsealFailed(
                f"token {token.token_label!r} could not decrypt the sealed secret"
            )
        except ex.PKCS11Error as e:
            raise HsmUnsealFailed(f"token {token.token_label!r} could not unseal: {e!r}")
    if len(secret) != SECRET_LEN:
        raise HsmUnsealFailed("unsealed secret has the wrong length")
    return secret
