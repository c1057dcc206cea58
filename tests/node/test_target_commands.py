"""``corestate target add|list|remove`` as a user runs them: the CLI in its own process, in
place and through a running daemon, against real folders and a real S3 server.

- add proves access (or is told --no-check), names what is wrong, saves nothing then;
- list shows each target's shares and bytes from the ledger, and whether it is reachable
  now (exit 3 when one is not);
- remove refuses while the ledger records shares on the target, --force removes it;
- through a daemon the operation runs there, with the daemon's environment (S3 keys).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from corestate.node.app.targets import CHECK_RETRY_SECONDS, check_target, validate
from corestate.node.home import Home
from corestate.node.local import LocalNode
from corestate.node.targets.registry import TargetSpec, load
from corestate.node.targets.store import TargetError, TargetUnavailable
from helpers import PASSPHRASE, Cli
from meshutil import clean_env, last_json, make_mesh, run_plain
from s3server import S3Server


def _names(cli: Cli) -> list[str]:
    return [t.name for t in load(cli.home)]


@pytest.mark.slow
def test_folder_targets_added_listed_and_refused_with_reasons(cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    p = cli.run("target", "add", "nas", f"file://{nas}", "--quota", "500 GiB")
    assert "added target nas (target:nas)" in p.stdout and "access checked" in p.stdout
    assert not list(nas.iterdir())  # the probe is gone
    # a share that is not mounted: refused, with what to do, and nothing saved
    p = cli.run("target", "add", "usb", f"file://{tmp_path}/not-mounted", check=False)
    assert p.returncode == 1
    assert "does not exist" in p.stderr and "mount the share" in p.stderr and "nothing was saved" in p.stderr
    for args, words in (
        (("nas", f"file://{tmp_path}"), "a target of that name exists"),
        (("nas-again", f"file://{nas}/"), "this same place"),
        (("x", f"file://{nas}", "--quota", "lots"), "not a size"),
        (("x", "s3://bucket", "--endpoint", "minio:9000"), "not an http(s) URL"),
    ):
        p = cli.run("target", "add", *args, check=False)
        assert p.returncode == 1 and words in p.stderr, (args, p.stderr)
    assert _names(cli) == ["nas"]
    # --no-check saves a target that is offline today; list checks it and says why it fails
    cli.run("target", "add", "usb", f"file://{tmp_path}/not-mounted", "--no-check")
    p = cli.run("target", "list", "--json", check=False)
    assert p.returncode == 3
    rows = {r["name"]: r for r in json.loads(p.stdout.strip().splitlines()[-1])}
    assert rows["nas"]["reachable"] is True and rows["nas"]["quota"] == 500 << 30
    assert rows["nas"]["free"] > 0 and rows["nas"]["holder"] == "target:nas"
    assert rows["usb"]["reachable"] is False and "does not exist" in rows["usb"]["error"]
    assert rows["usb"]["error_kind"] == "TargetMissing" and "mount" in rows["usb"]["hint"]
    assert rows["nas"]["error"] == rows["nas"]["error_kind"] == rows["nas"]["hint"] == ""
    p = cli.run("target", "list", "--no-check", check=False)
    assert p.returncode == 0 and "unchecked" in p.stdout
    p = cli.run("target", "list", check=False)
    assert p.returncode == 3 and "unreachable" in p.stdout and "mount the share" in p.stdout
    cli.run("target", "remove", "usb")
    assert _names(cli) == ["nas"]
    p = cli.run("target", "remove", "usb", check=False)
    assert p.returncode == 1 and "no such target" in p.stderr and "nas" in p.stderr


@pytest.mark.parametrize(("spec", "words"), [
    (TargetSpec("NAS!", "file:///mnt/nas"), "lowercase letters"),
    (TargetSpec("x", "ftp://host/x"), "unknown scheme"),
    (TargetSpec("x", "file://relative"), "absolute"),
    (TargetSpec("x", "file:///mnt/nas", endpoint="http://minio:9000"), "for s3:// targets"),
    (TargetSpec("x", "file:///mnt/nas", credentials_file="/c"), "for s3:// targets"),
    (TargetSpec("x", "s3://b", endpoint="ftp://minio"), "not an http(s) URL"),
    (TargetSpec("x", "s3://b", credentials_file="creds.ini"), "not an absolute path"),
    (TargetSpec("x", "s3:///p"), "names no bucket"),
])
def test_bad_target_specs_are_refused_before_anything_else(spec: TargetSpec, words: str) -> None:
    with pytest.raises(TargetError, match=re.escape(words)):
        validate(spec)


@pytest.mark.slow
def test_remove_refuses_while_the_ledger_records_shares_on_the_target(cli: Cli, tmp_path: Path) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    cli.run("target", "add", "nas", f"file://{nas}")
    with LocalNode.open(Home(cli.home), PASSPHRASE.encode()) as node:
        for i, pack in enumerate((b"\x01" * 32, b"\x02" * 32)):
            node.ledger.begin_pack(pack, 2, 3, 3000)
            node.ledger.record_share(pack, i, "target:nas", b"\x00" * 32, 1500)
            node.ledger.record_share(pack, 2, "12D3KooWsomepeer", b"\x00" * 32, 1500)
    rows = cli.json("target", "list")
    assert isinstance(rows, list) and (rows[0]["shares"], rows[0]["bytes"]) == (2, 3000)
    p = cli.run("target", "remove", "nas", check=False)
    assert p.returncode == 1
    assert "holds 2 share(s)" in p.stderr and "--force" in p.stderr and "repair" in p.stderr
    assert _names(cli) == ["nas"]
    p = cli.run("target", "remove", "nas", "--force")
    assert "removed target nas" in p.stdout and "2 share(s)" in p.stderr and "repair" in p.stderr
    assert _names(cli) == []


@pytest.mark.slow
def test_s3_targets_are_checked_against_a_real_server(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = S3Server(tmp_path / "s3").start()
    try:
        url = f"s3://{srv.bucket}/laptop"
        # wrong secret: refused, names the credentials, saves nothing
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "X" * 40)
        p = cli.run("target", "add", "b2", url, "--endpoint", srv.endpoint, check=False)
        assert p.returncode == 1 and "access refused" in p.stderr and "secret" in p.stderr, p.stderr
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.secret_key)
        p = cli.run("target", "add", "b2", "s3://no-such-bucket", "--endpoint", srv.endpoint, check=False)
        assert p.returncode == 1 and "create the bucket no-such-bucket" in p.stderr, p.stderr
        assert _names(cli) == []
        p = cli.run("target", "add", "b2", url, "--endpoint", srv.endpoint, "--json")
        assert last_json(p)["reachable"] is True
        # a credentials file, given relative to where the CLI runs
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        (tmp_path / "creds.ini").write_text(
            f"[rclone]\naws_access_key_id = {srv.access_key}\naws_secret_access_key = {srv.secret_key}\n")
        cli.run("target", "add", "minio", f"s3://{srv.bucket}/other", "--endpoint", srv.endpoint,
                "--credentials-file", "creds.ini", "--profile", "rclone", cwd=tmp_path)
        spec = next(t for t in load(cli.home) if t.name == "minio")
        assert spec.credentials_file == str(tmp_path / "creds.ini") and spec.profile == "rclone"
        rows = {r["name"]: r for r in cli.json("target", "list", check=False)}  # type: ignore[union-attr]
        assert rows["minio"]["reachable"] is True
        assert rows["b2"]["reachable"] is False and "AWS_ACCESS_KEY_ID" in rows["b2"]["error"]
        assert rows["b2"]["error_kind"] == "TargetAuthError"
        # the server goes away: the check gives up within its bound and says so
        srv.stop()
        p = cli.run("target", "list", "--json", check=False, timeout=120)
        assert p.returncode == 3
        rows = {r["name"]: r for r in last_json(p)}
        assert rows["minio"]["reachable"] is False and "network" in rows["minio"]["hint"]
        assert rows["minio"]["error_kind"] == "TargetUnavailable"
        assert not list((tmp_path / "s3" / srv.bucket).rglob("*probe*"))
    finally:
        srv.stop()


@pytest.mark.slow
def test_target_commands_run_in_the_daemon_with_its_environment(tmp_path: Path) -> None:
    srv = S3Server(tmp_path / "s3").start()
    mesh = make_mesh(tmp_path / "mesh", 1)
    try:
        mesh.env.update(srv.env())  # the daemon's keys; the CLI below has none
        mesh.start(0)
        node = mesh.nodes[0]
        env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
        p = subprocess.run([*mesh.cmd(node, "target", "add", "b2", f"s3://{srv.bucket}/n1",
                                      "--endpoint", srv.endpoint, "--json")],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
        assert p.returncode == 0, p.stderr  # no passphrase: it ran in the daemon, with its keys
        assert last_json(p)["reachable"] is True
        p = run_plain(mesh, node, "target", "list", "--json")
        assert p.returncode == 0, p.stderr
        assert [r["name"] for r in last_json(p)] == ["b2"]
        p = run_plain(mesh, node, "target", "remove", "b2")
        assert p.returncode == 0 and "removed target b2" in p.stdout, p.stderr
        assert load(node.home) == []
    finally:
        mesh.close()
        srv.stop()


@pytest.mark.slow
def test_a_check_of_an_unreachable_bucket_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`target list` and `target add` wait at most CHECK_RETRY_SECONDS per target (plus one
    request), not the 20 s a backup's requests retry."""
    srv = S3Server(tmp_path / "s3").start()
    for k, v in srv.env().items():
        monkeypatch.setenv(k, v)
    spec = TargetSpec("b2", f"s3://{srv.bucket}/x", endpoint=srv.endpoint)
    assert check_target(spec) == (None, None)  # a bucket cannot tell its free bytes
    srv.stop()
    t0 = time.monotonic()
    free, error = check_target(spec)
    took = time.monotonic() - t0
    assert isinstance(error, TargetUnavailable) and free is None
    assert "failed" in str(error) and "network" in error.hint
    assert CHECK_RETRY_SECONDS <= took <= CHECK_RETRY_SECONDS + 3.0, took


@pytest.mark.slow
def test_no_check_still_reads_the_credentials_file(cli: Cli, tmp_path: Path) -> None:
    p = cli.run("target", "add", "b2", "s3://bucket", "--credentials-file", str(tmp_path / "nope.ini"),
                "--no-check", check=False)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    (tmp_path / "c.ini").write_text("[other]\naws_access_key_id = A\naws_secret_access_key = B\n")
    p = cli.run("target", "add", "b2", "s3://bucket", "--credentials-file", str(tmp_path / "c.ini"),
                "--no-check", check=False)
    assert p.returncode == 1 and "no profile [default]" in p.stderr and "other" in p.stderr, p.stderr
    cli.run("target", "add", "b2", "s3://bucket", "--credentials-file", str(tmp_path / "c.ini"),
            "--profile", "other", "--no-check")
    assert _names(cli) == ["b2"]
