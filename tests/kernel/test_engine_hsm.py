"""A node whose root secret is sealed by a SoftHSM2 token backs up and restores; a missing
token or a wrong PIN gives a clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.treecompare import differences
from helpers import Cli, make_tree

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    if shutil.which("softhsm2-util") is None or not MODULE.is_file():
        pytest.skip("SoftHSM2 is missing (apt-get install softhsm2)")
    d = tmp_path / "softhsm"
    (d / "tokens").mkdir(parents=True)
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # the CLI subprocesses read it
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "node-token",
                    "--pin", "4321", "--so-pin", "87654321"], check=True, capture_output=True)
    yield "node-token"


def test_hsm_sealed_node_backs_up_and_restores(softhsm: str, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("4321\n")
    c = Cli(tmp_path / "home", pin)
    info = c.json("init", "--hsm-module", str(MODULE), "--hsm-token", softhsm)
    assert b"pkcs11" in (tmp_path / "home" / "key").read_bytes()
    src = make_tree(tmp_path / "src")
    c.json("backup", str(src))
    c.run("restore", "latest", "--target", str(tmp_path / "t"))
    assert differences(src, tmp_path / "t" / str(src).lstrip("/")) == []
    assert c.json("stats")["peer_id"] == info["peer_id"]

    bad = tmp_path / "badpin"
    bad.write_text("0000\n")
    p = Cli(c.home, bad).run("snapshots", check=False)
    assert p.returncode == 1 and "PIN" in p.stderr and "hint:" in p.stderr

    p = c.run("key", "passwd", "--new-passphrase-file", str(pin), check=False)
    assert p.returncode == 1 and "HSM" in p.stderr


def test_missing_token_is_a_clear_error_and_leaves_no_home(softhsm: str, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("4321\n")
    c = Cli(tmp_path / "home", pin)
    p = c.run("init", "--hsm-module", str(MODULE), "--hsm-token", "no-such-token", check=False)
    assert p.returncode == 1 and "no-such-token" in p.stderr and "hint:" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "home").exists()
    p = subprocess.run([sys.executable, "-m", "corestate.node.cli", "--home", str(tmp_path / "h2"),
                        "init", "--hsm-module", "/nonexistent/lib.so", "--hsm-token", softhsm,
                        "--passphrase-file", str(pin)], capture_output=True, text=True,
                       env={**os.environ})
    assert p.returncode == 1 and "hint:" in p.stderr


def _name_module_in_key(home: Path, module: Path) -> None:
    """Edit the key file as its owner could: make it name ``module``."""
    import cbor2
    key = home / "key"
    o = cbor2.loads(key.read_bytes())
    o["module"] = str(module)
    key.write_bytes(cbor2.dumps(o, canonical=True))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_module_another_user_controls_is_not_loaded(softhsm: str, tmp_path: Path) -> None:
    """Root running a command on a home whose key file names a library another user owns
    (or can write) does not load it — unless root names it with --hsm-module."""
    pin = tmp_path / "pin"
    pin.write_text("4321\n")
    c = Cli(tmp_path / "home", pin)
    c.json("init", "--hsm-module", str(MODULE), "--hsm-token", softhsm)
    lib = tmp_path / "user-lib"
    lib.mkdir()
    theirs = lib / "libtheirs.so"
    shutil.copy2(MODULE, theirs)  # a working module: loading it would succeed
    _name_module_in_key(c.home, theirs)

    os.chown(theirs, 1234, 1234)  # another user's file
    p = c.run("snapshots", check=False)
    assert p.returncode == 1 and "belongs to user 1234" in p.stderr and "--hsm-module" in p.stderr, p.stderr
    os.chown(theirs, 0, 0)
    os.chown(lib, 1234, 1234)  # root's file in another user's folder (they can swap it)
    p = c.run("snapshots", check=False)
    assert p.returncode == 1 and "which belongs to user 1234" in p.stderr, p.stderr
    os.chown(lib, 0, 0)
    os.chmod(theirs, 0o775)  # root's, but writable by the group
    p = c.run("snapshots", check=False)
    assert p.returncode == 1 and "can be written by other users" in p.stderr, p.stderr
    link = tmp_path / "link.so"
    link.symlink_to(theirs)  # a symlink is judged by what it points to
    _name_module_in_key(c.home, link)
    assert c.run("snapshots", check=False).returncode == 1

    # Named on the command line by the user running it: loaded.
    os.chown(theirs, 1234, 1234)
    assert c.run("snapshots", "--hsm-module", str(theirs), check=False).returncode == 0
    # A module root owns and only root can write: loaded as the key file says.
    os.chown(theirs, 0, 0)
    os.chmod(theirs, 0o755)
    assert c.run("snapshots", check=False).returncode == 0
