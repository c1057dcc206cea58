"""The S3 backend of storage targets against a real S3 server (``rclone serve s3``), and the
contract every backend keeps, run over both the folder and the S3 backend.

Faults are real too: a stopped server (connection refused), and a threaded HTTP proxy in
front of rclone that answers ``503 SlowDown`` or hangs, for a number of requests or for all.
"""

from __future__ import annotations

import io
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.node.targets.folder import FolderStore
from corestate.node.targets.registry import TargetSpec, open_store
from corestate.node.targets.s3 import S3Store, region_of
from corestate.node.targets.store import (
    ObjectMissing,
    ObjectStore,
    TargetAuthError,
    TargetError,
    TargetFull,
    TargetMissing,
    TargetUnavailable,
)
from s3server import FaultProxy, S3Server

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    srv = S3Server(tmp_path_factory.mktemp("s3") / "root").start()
    try:
        yield srv
    finally:
        srv.stop()


def s3_store(srv: S3Server, prefix: str | None = None, **kw: object) -> S3Store:
    """A store under a fresh prefix (tests share one server); small parts for multipart."""
    opts: dict = {"endpoint": srv.endpoint, "credentials": srv.credentials, "retry_seconds": 2.0,
                  "multipart_threshold": 5 * MiB, "part_size": 5 * MiB}
    opts.update(kw)
    return S3Store("b2", srv.bucket, secrets.token_hex(4) if prefix is None else prefix, **opts)


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "folder":
        yield FolderStore("nas", tmp_path / "nas")
        return
    s = s3_store(request.getfixturevalue("server"))
    try:
        yield s
    finally:
        s.close()


# -- the contract, over both backends ------------------------------------------------------


def test_contract_put_get_ranges_list_delete(store: ObjectStore) -> None:
    if isinstance(store, FolderStore):
        store.root.mkdir()
    store.check()
    store.put("shares/ab/s1", b"hello world", 11)
    store.put("shares/cd/s2", io.BytesIO(b"xyz"), 3)
    store.put("other/s3", memoryview(b"0123456789"), 10)
    assert store.get("shares/ab/s1") == b"hello world"
    assert store.get("shares/ab/s1", 6, 3) == b"wor"
    assert store.get("shares/ab/s1", 6) == b"world"
    assert store.get("shares/ab/s1", 8, 100) == b"rld"  # a range running past the end
    assert store.get("shares/ab/s1", 11, 5) == b""  # starting at the end
    assert store.get("shares/ab/s1", 50) == b""  # starting past it
    assert store.get("shares/ab/s1", 3, 0) == b""
    assert list(store.list()) == [("other/s3", 10), ("shares/ab/s1", 11), ("shares/cd/s2", 3)]
    assert list(store.list("shares/")) == [("shares/ab/s1", 11), ("shares/cd/s2", 3)]
    assert list(store.list("nothing/")) == []
    assert store.size("shares/cd/s2") == 3 and store.size("shares/nope") is None
    store.put("shares/cd/s2", b"replaced", 8)  # a put replaces
    assert store.get("shares/cd/s2") == b"replaced"
    store.delete("shares/cd/s2")
    store.delete("shares/cd/s2")  # a missing key is not an error
    with pytest.raises(ObjectMissing):
        store.get("shares/cd/s2")
    with pytest.raises(ObjectMissing):
        store.get("shares/cd/s2", 2, 0)
    assert [k for k, _ in store.list()] == ["other/s3", "shares/ab/s1"]  # no probe left


def test_contract_a_short_put_leaves_the_old_object(store: ObjectStore) -> None:
    if isinstance(store, FolderStore):
        store.root.mkdir()
    store.put("k", b"old", 3)
    with pytest.raises(TargetError, match="announced"):
        store.put("k", b"new bytes", 4)
    with pytest.raises(TargetError, match="announced"):
        store.put("k", io.BytesIO(b"ne"), 3)
    assert store.get("k") == b"old"
    assert list(store.list()) == [("k", 3)]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "", "sp ace"])
def test_contract_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(TargetError, match="bad object key"):
        store.put(key, b"x", 1)


# -- S3 only ----------------------------------------------------------------------------------

pytestmark_s3 = pytest.mark.slow


@pytestmark_s3
def test_multipart_above_the_threshold_bytes_and_stream(server: S3Server) -> None:
    s = s3_store(server)
    try:
        big = secrets.token_bytes(12 * MiB + 12345)  # three parts of 5 MiB, the last short
        s.put("shares/big", big, len(big))
        assert s.size("shares/big") == len(big)
        assert s.get("shares/big") == big
        assert s.get("shares/big", 5 * MiB - 10, 20) == big[5 * MiB - 10:5 * MiB + 10]  # across parts
        assert s.get("shares/big", len(big) - 5, 100) == big[-5:]
        s.put("shares/big2", io.BytesIO(big), len(big))
        assert s.get("shares/big2") == big
        # a stream shorter than announced: the upload is aborted, the old object stays
        with pytest.raises(TargetError, match="announced"):
            s.put("shares/big2", io.BytesIO(big[:7 * MiB]), len(big))
        with pytest.raises(TargetError, match="announced"):
            s.put("shares/big2", io.BytesIO(big + b"more"), len(big))
        assert s.get("shares/big2", len(big) - 3) == big[-3:]
        client = server.client()
        try:
            assert client.list_multipart_uploads(Bucket=server.bucket).get("Uploads", []) == []
        finally:
            client.close()
    finally:
        s.close()


@pytestmark_s3
def test_keys_live_under_the_prefix_and_listing_pages(server: S3Server) -> None:
    a, b = s3_store(server, "node-a/x"), s3_store(server, "node-a")
    try:
        for i in range(1205):  # more than one page of 1000
            a.put(f"shares/{i:05d}", b"x", 1)
        b.put("shares/mine", b"yy", 2)
        listed = list(a.list("shares/"))
        assert len(listed) == 1205 and listed[0] == ("shares/00000", 1) and listed[-1] == ("shares/01204", 1)
        assert ("x/shares/00000", 1) in list(b.list())  # the folder "node-a" holds node-a/x too
        assert list(b.list("shares/")) == [("shares/mine", 2)]
        assert (server.root / server.bucket / "node-a" / "x" / "shares" / "00007").exists()
    finally:
        a.close()
        b.close()


@pytestmark_s3
def test_a_wrong_secret_is_an_auth_error_with_a_hint(server: S3Server) -> None:
    s = s3_store(server, credentials=(server.access_key, "W" * 40, None))
    t0 = time.monotonic()
    try:
        with pytest.raises(TargetAuthError) as info:
            s.check()
    finally:
        s.close()
    assert time.monotonic() - t0 < 2.0  # never retried: it cannot pass
    assert "secret" in info.value.hint and server.bucket in info.value.hint
    assert not info.value.retryable
    s = s3_store(server, credentials=("AKIAUNKNOWNUNKNOWN00", server.secret_key, None))
    try:
        with pytest.raises(TargetAuthError):
            s.get("anything")
    finally:
        s.close()


@pytestmark_s3
def test_a_missing_bucket_says_create_it(server: S3Server) -> None:
    s = S3Store("b2", "no-such-bucket", "p", endpoint=server.endpoint,
                credentials=server.credentials, retry_seconds=2.0)
    try:
        with pytest.raises(TargetMissing) as info:
            s.check()
    finally:
        s.close()
    assert "create the bucket no-such-bucket" in info.value.hint


@pytestmark_s3
def test_credentials_from_a_file_and_from_the_environment(
        server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
                     f"[backup]\naws_access_key_id = {server.access_key}\n"
                     f"aws_secret_access_key = {server.secret_key}\n")
    spec = TargetSpec("b2", f"s3://{server.bucket}/from-file", endpoint=server.endpoint,
                      credentials_file=str(creds), profile="backup")
    s = open_store(spec)
    try:
        s.check()
    finally:
        s.close()
    with pytest.raises(TargetAuthError, match=r"no profile \[nope\]") as info:
        open_store(TargetSpec("b2", spec.url, endpoint=server.endpoint,
                              credentials_file=str(creds), profile="nope"))
    assert "backup" in info.value.hint  # names the profiles it has
    with pytest.raises(TargetAuthError, match="does not exist"):
        open_store(TargetSpec("b2", spec.url, credentials_file=str(tmp_path / "none")))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(TargetAuthError, match="AWS_ACCESS_KEY_ID"):
        open_store(TargetSpec("b2", spec.url, endpoint=server.endpoint))
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    s = open_store(TargetSpec("b2", f"s3://{server.bucket}/from-env", endpoint=server.endpoint))
    try:
        s.check()
    finally:
        s.close()


@pytestmark_s3
def test_throttling_is_retried_then_succeeds(server: S3Server) -> None:
    with FaultProxy(server.port, faults=4) as proxy:
        s = s3_store(server, endpoint=proxy.endpoint, retry_seconds=20.0)
        try:
            s.put("shares/t", b"through", 7)  # 4 x 503 SlowDown, then forwarded
            assert proxy.failed == 4 and proxy.forwarded == 1
            proxy.faults = 2
            proxy.status, proxy.code = 500, "InternalError"
            assert s.get("shares/t") == b"through"
            assert proxy.failed == 6
        finally:
            s.close()


@pytestmark_s3
def test_a_lost_answer_to_a_multipart_completion_is_not_a_failure(server: S3Server) -> None:
    """The server completed the upload but its answer was lost: the retry finds no such
    upload, and the object there, whole."""
    with FaultProxy(server.port, faults=1, status=500, code="InternalError", lose_answer=True,
                    only=lambda method, path: method == "POST" and "uploadId=" in path) as proxy:
        s = s3_store(server, endpoint=proxy.endpoint, retry_seconds=10.0)
        try:
            big = secrets.token_bytes(11 * MiB)
            s.put("shares/lost-answer", big, len(big))
            assert proxy.failed == 1
            assert s.get("shares/lost-answer") == big
        finally:
            s.close()


@pytestmark_s3
@pytest.mark.parametrize(("status", "code", "error", "hint"), [
    (403, "AccessDenied", TargetAuthError, "may read, write, list and delete"),
    (404, "NoSuchBucket", TargetMissing, "create the bucket"),
    (507, "XMinioStorageFull", TargetFull, "quota"),
    (400, "AuthorizationHeaderMalformed", TargetError, "AWS_REGION"),
    (400, "InvalidArgument", TargetError, "bucket's settings"),
])
def test_each_refusal_is_named_at_once_without_retries(
        server: S3Server, status: int, code: str, error: type[TargetError], hint: str) -> None:
    with FaultProxy(server.port, faults=-1, status=status, code=code) as proxy:
        s = s3_store(server, endpoint=proxy.endpoint, retry_seconds=20.0)
        try:
            with pytest.raises(error) as info:
                s.put("shares/r", b"refused", 7)
        finally:
            s.close()
    assert type(info.value) is error and hint in info.value.hint, info.value.hint
    assert proxy.failed == 1  # a refusal that cannot pass is not retried


@pytestmark_s3
def test_throttling_that_lasts_gives_up_within_the_bound(server: S3Server) -> None:
    with FaultProxy(server.port, faults=-1) as proxy:
        s = s3_store(server, endpoint=proxy.endpoint, retry_seconds=3.0)
        t0 = time.monotonic()
        try:
            with pytest.raises(TargetUnavailable, match="SlowDown") as info:
                s.put("shares/t", b"never", 5)
        finally:
            s.close()
        took = time.monotonic() - t0
    assert 3.0 <= took <= 3.0 + 2.0, took  # the bound, plus the slack of a slow shared machine
    assert proxy.failed >= 3  # it did back off and retry
    assert info.value.retryable and "network" in info.value.hint


@pytestmark_s3
def test_a_hanging_server_hits_the_read_timeout(server: S3Server) -> None:
    with FaultProxy(server.port, faults=-1, stall=5.0) as proxy:
        s = s3_store(server, endpoint=proxy.endpoint, retry_seconds=1.5, read_timeout=0.5)
        t0 = time.monotonic()
        try:
            with pytest.raises(TargetUnavailable, match=r"(?i)timeout|timed out"):
                s.get("shares/t")
        finally:
            s.close()
        took = time.monotonic() - t0
    assert took <= 1.5 + 0.5 + 2.0, took  # the stall (5 s) is never waited out


@pytestmark_s3
def test_a_server_that_never_accepts_hits_the_connect_timeout(server: S3Server) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog: SYNs now go unanswered
            s = s3_store(server, endpoint=f"http://127.0.0.1:{port}", retry_seconds=1.5,
                         connect_timeout=0.5)
            t0 = time.monotonic()
            try:
                with pytest.raises(TargetUnavailable, match=r"(?i)connect timeout") as info:
                    s.size("shares/x")
            finally:
                s.close()
            took = time.monotonic() - t0
    assert 1.5 <= took <= 1.5 + 0.5 + 2.0, took
    assert "failed" in str(info.value)


@pytest.mark.slow
def test_a_stopped_server_is_unavailable_after_bounded_retries(tmp_path: Path) -> None:
    srv = S3Server(tmp_path / "root").start()
    s = s3_store(srv, retry_seconds=2.5)
    try:
        s.put("shares/x", b"kept", 4)
        srv.stop()
        t0 = time.monotonic()
        with pytest.raises(TargetUnavailable) as info:
            s.get("shares/x")
        took = time.monotonic() - t0
        assert 2.5 <= took <= 2.5 + 2.0, took  # it kept trying, then gave up within the bound
        assert "failed" in str(info.value) and info.value.retryable
        srv.start()  # same port, same folder: the object is back
        assert s.get("shares/x") == b"kept"
    finally:
        s.close()
        srv.stop()


def test_region_comes_from_the_environment_or_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert region_of("https://s3.us-west-004.backblazeb2.com") == "us-west-004"
    assert region_of("https://s3.eu-central-1.wasabisys.com") == "eu-central-1"
    assert region_of("http://minio.lan:9000") == "us-east-1"
    assert region_of("") == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "garage")
    assert region_of("http://minio.lan:9000") == "garage"
