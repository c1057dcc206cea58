"""HSM sealing of the root secret against a real SoftHSM2 token (PKCS#11)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.kernel import hsm
from corestate.kernel.errors import (
    HsmKeyNotFound,
    HsmModuleMissing,
    HsmPinIncorrect,
    HsmTokenNotFound,
    HsmUnsealFailed,
    KernelError,
)

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN, SO_PIN, LABEL = "1234", "87654321", "corestate-test"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hsm.HsmToken]:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    if shutil.which("softhsm2-util") is None or not MODULE.is_file():
        pytest.skip("SoftHSM2 is missing (apt-get install softhsm2)")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n")
    # SoftHSM reads its configuration when the module is first loaded in this process;
    # the module stays loaded, so every test of the session shares this token folder.
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", LABEL,
             "--pin", PIN, "--so-pin", SO_PIN],
            check=True, capture_output=True,
        )  # fmt: skip
        yield hsm.HsmToken(MODULE, LABEL, PIN)
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old


def test_seal_unseal_round_trip(token: hsm.HsmToken) -> None:
    secret = os.urandom(32)
    blob = hsm.seal(secret, token)
    assert secret not in blob
    assert hsm.unseal(blob, token) == secret
    again = hsm.seal(secret, token)  # same key, fresh nonce
    assert again != blob and hsm.unseal(again, token) == secret


def test_wrapping_key_stays_in_the_token(token: hsm.HsmToken) -> None:
    from pkcs11 import Attribute, KeyType, ObjectClass

    hsm.seal(os.urandom(32), token)
    with hsm._session(token) as s:
        keys = list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                   Attribute.LABEL: token.key_label}))  # fmt: skip
        assert len(keys) == 1
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES,
                        label=token.key_label)  # fmt: skip
        assert key[Attribute.TOKEN] and key[Attribute.SENSITIVE]
        assert not key[Attribute.EXTRACTABLE]


def test_wrong_pin(token: hsm.HsmToken) -> None:
    blob = hsm.seal(os.urandom(32), token)
    bad = hsm.HsmToken(token.module, token.token_label, "0000")
    with pytest.raises(HsmPinIncorrect) as e:
        hsm.unseal(blob, bad)
    assert e.value.hint and not e.value.retryable


def test_missing_token_and_module(token: hsm.HsmToken, tmp_path: Path) -> None:
    blob = hsm.seal(os.urandom(32), token)
    with pytest.raises(HsmTokenNotFound) as e:
        hsm.unseal(blob, hsm.HsmToken(token.module, "no-such-token", PIN))
    assert "no-such-token" in str(e.value) and e.value.hint
    with pytest.raises(HsmModuleMissing) as m:
        hsm.seal(os.urandom(32), hsm.HsmToken(tmp_path / "libnothing.so", LABEL, PIN))
    assert isinstance(m.value, KernelError) and "softhsm2" in m.value.hint
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a shared object")
    with pytest.raises(HsmModuleMissing):
        hsm.unseal(blob, hsm.HsmToken(junk, LABEL, PIN))


def test_altered_or_foreign_blobs_are_refused(token: hsm.HsmToken) -> None:
    secret = os.urandom(32)
    blob = hsm.seal(secret, token)
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(HsmUnsealFailed):
        hsm.unseal(flipped, token)
    # the header is authenticated too: a changed key label finds no key, a changed nonce fails
    with pytest.raises(HsmKeyNotFound):
        hsm.unseal(blob.replace(token.key_label.encode(), b"x" * len(token.key_label)), token)
    with pytest.raises(HsmUnsealFailed):
        hsm.unseal(blob[:-1], token)
    with pytest.raises(HsmUnsealFailed):
        hsm.unseal(b"CSHSM2" + blob[6:], token)
    with pytest.raises(ValueError):
        hsm.seal(b"short", token)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_check_module_trusts_the_user_and_root_only(tmp_path: Path) -> None:
    from corestate.kernel.errors import HsmModuleUntrusted
    folder = tmp_path / "lib"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    lib = folder / "lib.so"
    lib.write_bytes(b"\x7fELF")
    os.chmod(lib, 0o755)
    assert hsm.check_module(lib, uid=0) == lib.resolve()
    assert hsm.check_module(lib, uid=1000) == lib.resolve()  # root's library: anyone may load it
    os.chown(lib, 1000, 1000)
    assert hsm.check_module(lib, uid=1000) == lib.resolve()  # the user's own
    with pytest.raises(HsmModuleUntrusted, match="belongs to user 1000"):
        hsm.check_module(lib, uid=0)  # root never loads a user's library
    with pytest.raises(HsmModuleUntrusted):
        hsm.check_module(lib, uid=1001)
    os.chown(lib, 0, 0)
    os.chmod(lib, 0o757)
    with pytest.raises(HsmModuleUntrusted, match="written by other users"):
        hsm.check_module(lib, uid=0)
    os.chmod(lib, 0o755)
    os.chmod(folder, 0o777)
    with pytest.raises(HsmModuleUntrusted, match="other users can write"):
        hsm.check_module(lib, uid=0)
    os.chmod(folder, 0o1777)  # sticky: nobody replaces root's entry
    assert hsm.check_module(lib, uid=0) == lib.resolve()
    with pytest.raises(HsmModuleMissing):
        hsm.check_module(folder / "absent.so", uid=0)
