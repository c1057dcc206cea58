"""An S3-compatible bucket as a storage target (``s3://BUCKET/PREFIX``), with boto3.

Objects live under ``PREFIX/KEY`` in the bucket. AWS, Backblaze B2, Wasabi, MinIO, Garage,
Ceph and ``rclone serve s3`` all speak the subset used here: PutObject, multipart upload,
ranged GetObject, HeadObject, DeleteObject, ListObjectsV2.

Invariants and choices:
- ``put`` is all or nothing: a small object is one PutObject; a big one (above
  ``multipart_threshold``) a multipart upload, which S3 makes visible only on
  CompleteMultipartUpload, and aborts on any failure (no orphan parts left behind when we
  can help it). The announced size is checked before completion.
- Checksums are sent and checked only when the server requires them (``when_required``):
  many S3-compatible servers reject the newer flexible checksums. Shares carry their own
  hashes and Merkle roots, which the holder layer checks.
- A non-AWS endpoint uses path-style addressing (``https://host/bucket/key``): most of them
  have no wildcard DNS for virtual-host buckets.
- botocore's own retries are off; every request goes through ``_call``, which retries
  throttling (SlowDown, 429, 503), server errors (5xx), connection errors and timeouts with
  exponential backoff and full jitter for at most ``retry_seconds`` in total, then raises
  TargetUnavailable. Every request has connect and read timeouts (a read timeout bounds
  each wait for the socket, not a whole slow upload that progresses): no attempt starts
  after ``retry_seconds``, so a call takes at most that plus one attempt's timeouts (with
  the defaults about 45 s, within the minute a backup gives its holders).
- Credentials come from the spec's credentials file (AWS INI format, a profile) when one is
  given, else from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and
  ``AWS_SESSION_TOKEN``). Nothing else is searched (no instance metadata, no ~/.aws): a
  target's credentials are where its owner said, and a missing one is named at once.
"""

from __future__ import annotations

import configparser
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from corestate.node.targets.store import (
    ObjectMissing,
    TargetAuthError,
    TargetError,
    TargetFull,
    TargetMissing,
    TargetUnavailable,
    check_key,
)

T = TypeVar("T")

MiB = 1 << 20
PROBE_PREFIX = ".corestate-probe"
DEFAULT_REGION = "us-east-1"

_AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "InvalidSecurity", "AccountProblem", "AllAccessDisabled", "Unauthorized", "Forbidden",
})
_RETRY_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "RequestThrottled", "ServiceUnavailable", "InternalError", "RequestTimeout",
})
_FULL_CODES = frozenset({"QuotaExceeded", "StorageQuotaExceeded", "InsufficientStorage",
                         "StorageCapExceeded", "XMinioStorageFull"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_REGION_CODES = frozenset({"AuthorizationHeaderMalformed", "PermanentRedirect",
                           "IllegalLocationConstraintException", "301"})


def region_of(endpoint: str) -> str:
    """The region to sign with: ``AWS_REGION``/``AWS_DEFAULT_REGION`` when set, else the one
    an endpoint's host names (``s3.us-west-004.backblazeb2.com``,
    ``s3.eu-central-1.wasabisys.com``, ``s3.eu-west-1.amazonaws.com``), else us-east-1 (what
    MinIO, Garage, Ceph and rclone accept by default)."""
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    host = urlsplit(endpoint).hostname or ""
    m = re.match(r"s3[.-]([a-z]{2}(?:-[a-z]+)+-\d+)\.", host)
    return m.group(1) if m else DEFAULT_REGION


def read_credentials(target: str, path: str, profile: str) -> tuple[str, str, str | None]:
    """(access key, secret, session token) of ``profile`` in an AWS-format credentials file."""
    ini = configparser.ConfigParser(interpolation=None)
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            ini.read_file(f)
    except FileNotFoundError:
        raise TargetAuthError(target, f"the credentials file {path} does not exist",
                              hint="give the path of an AWS-format credentials file "
                              "(--credentials-file), or set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY") from None
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise TargetAuthError(target, f"cannot read the credentials file {path}: {exc}",
                              hint="it is an INI file: [default] then aws_access_key_id = ... "
                              "and aws_secret_access_key = ...") from exc
    section = profile if ini.has_section(profile) else f"profile {profile}"
    if not ini.has_section(section):
        raise TargetAuthError(target, f"the credentials file {path} has no profile [{profile}]",
                              hint=f"add a [{profile}] section, or give --profile with one it has: "
                              f"{', '.join(ini.sections()) or 'none'}")
    sec = ini[section]
    key, secret = sec.get("aws_access_key_id", "").strip(), sec.get("aws_secret_access_key", "").strip()
    if not key or not secret:
        raise TargetAuthError(target, f"profile [{profile}] of {path} lacks aws_access_key_id "
                              "or aws_secret_access_key", hint="add both lines to that profile")
    return key, secret, (sec.get("aws_session_token", "").strip() or None)


def env_credentials(target: str) -> tuple[str, str, str | None]:
    key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise TargetAuthError(target, "no S3 credentials: AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY are not set where the target is opened "
                              "(in the daemon, when one runs)",
                              hint="set both in the environment of the daemon (its service "
                              "file) and of the CLI, or give --credentials-file PATH (AWS "
                              "credentials format) on `corestate target add`")
    return key, secret, os.environ.get("AWS_SESSION_TOKEN") or None


class S3Store:
    """An ``ObjectStore`` over one bucket and key prefix (see the module docstring)."""

    def __init__(self, name: str, bucket: str, prefix: str = "", *, endpoint: str = "",
                 credentials: tuple[str, str, str | None] | None = None,
                 credentials_file: str = "", profile: str = "default", region: str = "",
                 retry_seconds: float = 20.0, connect_timeout: float = 5.0,
                 read_timeout: float = 20.0, multipart_threshold: int = 64 * MiB,
                 part_size: int = 16 * MiB,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import boto3
        from botocore.config import Config

        if part_size < 5 * MiB:
            raise ValueError("S3 parts (but the last) are at least 5 MiB")
        self.name = name
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.retry_seconds = retry_seconds
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        self._sleep = sleep
        self._creds_where = (f"the credentials file {credentials_file} [{profile}]" if credentials_file
                             else "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if credentials is None:
            credentials = (read_credentials(name, credentials_file, profile) if credentials_file
                           else env_credentials(name))
        key, secret, token = credentials
        config = Config(
            region_name=region or region_of(endpoint),
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},  # ours: _call
            s3={"addressing_style": "path" if endpoint else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
        )
        session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                        aws_session_token=token)
        self._client: Any = session.client("s3", endpoint_url=endpoint or None, config=config)

    # -- keys ----------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(self.name, key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- errors and retries ----------------------------------------------------------------

    def _where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")

    def _classify(self, exc: Exception, what: str) -> TargetError | None:
        """The store error for a failed request, or None when it is worth retrying."""
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            msg = str(err.get("Message", "")) or code or f"HTTP {status}"
            if code == "NoSuchBucket":
                return TargetMissing(self.name, f"{what}: the bucket {self.bucket} does not exist",
                                     hint=f"create the bucket {self.bucket} (in the provider's console, "
                                     f"or `aws s3 mb s3://{self.bucket}`), or fix the target's URL")
            if code in _MISSING_KEY_CODES:
                return ObjectMissing(self.name, f"{what}: no such object")
            if code in _FULL_CODES or status == 507:
                return TargetFull(self.name, f"{what}: the bucket is full ({msg})",
                                  hint="raise the bucket's quota or cap at the provider, or lower "
                                  "this target's --quota")
            if code == "RequestTimeTooSkewed":
                return TargetAuthError(self.name, f"{what}: this machine's clock is off ({msg})",
                                       hint="set the clock right (e.g. enable NTP); S3 refuses "
                                       "requests signed more than 15 minutes off")
            if code in _REGION_CODES:
                region = err.get("Region") or exc.response.get("ResponseMetadata", {}).get(
                    "HTTPHeaders", {}).get("x-amz-bucket-region", "")
                return TargetError(self.name, f"{what}: the bucket {self.bucket} is in another "
                                   f"region{f' ({region})' if region else ''}: {msg}",
                                   hint=f"set AWS_REGION={region or 'REGION'} where the target is "
                                   "opened, or give that region's endpoint with --endpoint")
            if code in _AUTH_CODES or status in (401, 403):
                return TargetAuthError(
                    self.name, f"{what}: access refused by {self._where()}: {code or status}: {msg}",
                    hint=f"check the key and secret in {self._creds_where} and that the key may "
                    f"read, write, list and delete in the bucket {self.bucket}")
            if code in _RETRY_CODES or status in (408, 429) or status >= 500:
                return None
            return TargetError(self.name, f"{what}: {code or status}: {msg}",
                               hint="the target refused the request; check the bucket's settings "
                               "(versioning locks, object lock, policies)")
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionError, bx.ConnectTimeoutError,
                            bx.ReadTimeoutError, bx.IncompleteReadError, bx.ResponseStreamingError,
                            ConnectionError, TimeoutError)):
            return None
        if isinstance(exc, bx.NoCredentialsError):
            return TargetAuthError(self.name, f"{what}: no credentials",
                                   hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give "
                                   "--credentials-file")
        if isinstance(exc, bx.BotoCoreError):
            return TargetError(self.name, f"{what}: {exc}")
        raise exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried with exponential backoff and full jitter while it fails in a way
        that may pass (throttling, 5xx, network), for at most ``retry_seconds``."""
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # classified below; unknown ones re-raised
                final = self._classify(exc, what)
                if final is not None:
                    raise final from exc
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TargetUnavailable(
                        self.name, f"{what}: {self._where()} failed {attempt} time(s) in "
                        f"{self.retry_seconds:g}s: {_short(exc)}",
                        hint="check the network and the endpoint; a throttling or failing "
                        "service is tried again at the next backup, audit or repair") from exc
                # full jitter: spreads the retries of many threads (and nodes) apart
                self._sleep(min(left, random.uniform(0, min(4.0, 0.1 * 2 ** attempt))))

    # -- ObjectStore --------------------------------------------------------------------------

    def put(self, key: str, src: bytes | memoryview | BinaryIO, size: int) -> None:
        full = self._full(key)
        if isinstance(src, (bytes, memoryview)):
            if len(src) != size:
                raise TargetError(self.name, f"put {key}: {len(src)} bytes given, {size} announced")
            if size <= self.multipart_threshold:
                body = bytes(src)
                self._call(f"put {key}", lambda: self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=body, ContentLength=size))
                return
            view = memoryview(src)
            self._multipart(key, full, size, lambda off, n: bytes(view[off:off + n]))
            return
        if size <= self.multipart_threshold:
            body = _read_exactly(src, size + 1)
            if len(body) != size:
                raise TargetError(self.name, f"put {key}: {len(body)} bytes given, {size} announced")
            self._call(f"put {key}", lambda: self._client.put_object(
                Bucket=self.bucket, Key=full, Body=body, ContentLength=size))
            return
        self._multipart(key, full, size, lambda off, n: _read_exactly(src, n), stream=src)

    def _multipart(self, key: str, full: str, size: int, piece: Callable[[int, int], bytes],
                   stream: BinaryIO | None = None) -> None:
        up = self._call(f"put {key} (start multipart)", lambda: self._client.create_multipart_upload(
            Bucket=self.bucket, Key=full))
        upload_id = up["UploadId"]
        try:
            parts = []
            off = 0
            number = 1
            while off < size:
                n = min(self.part_size, size - off)
                data = piece(off, n)
                if len(data) != n:
                    raise TargetError(self.name, f"put {key}: {off + len(data)} bytes given, {size} announced")
                def send(d: bytes = data, no: int = number) -> Any:
                    return self._client.upload_part(
                        Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=no, Body=d,
                        ContentLength=len(d))

                res = self._call(f"put {key} (part {number})", send)
                parts.append({"PartNumber": number, "ETag": res["ETag"]})
                off += n
                number += 1
            if stream is not None and stream.read(1):
                raise TargetError(self.name, f"put {key}: more bytes given than the {size} announced")
            try:
                self._call(f"put {key} (complete multipart)", lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}))
            except TargetError as exc:
                # a retry after an answer lost on the way: the first completion went through
                if not (_code(exc.__cause__) == "NoSuchUpload" and self.size(key) == size):
                    raise
        except BaseException:
            try:  # best effort: the parts would otherwise be billed until a lifecycle rule
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # the first failure is the one to report
                pass
            raise

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        full = self._full(key)
        if offset < 0 or (length is not None and length < 0):
            raise TargetError(self.name, f"get {key}: bad range {offset}+{length}")
        if length == 0:
            if self.size(key) is None:
                raise ObjectMissing(self.name, f"get {key}: no such object")
            return b""
        rng = "" if offset == 0 and length is None else (
            f"bytes={offset}-" if length is None else f"bytes={offset}-{offset + length - 1}")

        def fetch() -> bytes:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
            if rng:
                args["Range"] = rng
            res = self._client.get_object(**args)
            with res["Body"] as body:
                return bytes(body.read())

        try:
            data = self._call(f"get {key}", fetch)
        except TargetError as exc:
            if _is_invalid_range(exc.__cause__):
                if self.size(key) is None:  # a missing key answers 404 first; be sure
                    raise ObjectMissing(self.name, f"get {key}: no such object") from None
                return b""  # the range starts at or past the end: nothing is there
            raise
        return data if length is None else data[:length]

    def size(self, key: str) -> int | None:
        full = self._full(key)
        try:
            res = self._call(f"stat {key}", lambda: self._client.head_object(Bucket=self.bucket, Key=full))
        except ObjectMissing:
            return None
        return int(res["ContentLength"])

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._call(f"delete {key}", lambda: self._client.delete_object(Bucket=self.bucket, Key=full))
        except ObjectMissing:
            pass

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + prefix, "MaxKeys": 1000}
            if token:
                args["ContinuationToken"] = token
            page = self._call("list", partial(self._client.list_objects_v2, **args))
            for obj in page.get("Contents", ()):
                rel = self._rel(obj["Key"])
                if not rel.startswith(PROBE_PREFIX):
                    yield rel, int(obj["Size"])
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return

    def free(self) -> int | None:
        return None

    def check(self) -> None:
        probe_key = f"{PROBE_PREFIX}-{secrets.token_hex(8)}"
        probe = secrets.token_bytes(64)
        self.put(probe_key, probe, len(probe))
        try:
            back = self.get(probe_key)
            if back != probe:
                raise TargetUnavailable(self.name, "a probe object read back differently",
                                        hint="the service or a proxy in front of it alters objects; "
                                        "check the endpoint")
            if self.size(probe_key) != len(probe):
                raise TargetUnavailable(self.name, "a probe object has the wrong size when asked",
                                        hint="check the endpoint")
        finally:
            self.delete(probe_key)
        # listing is what `target list` and prune use: prove it is allowed too
        next(iter(self.list(PROBE_PREFIX + "-none")), None)

    def close(self) -> None:
        self._client.close()


def _read_exactly(src: BinaryIO, n: int) -> bytes:
    chunks = []
    while n > 0:
        piece = src.read(min(n, MiB))
        if not piece:
            break
        chunks.append(piece)
        n -= len(piece)
    return b"".join(chunks)


def _code(exc: BaseException | None) -> str:
    from botocore.exceptions import ClientError
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def _is_invalid_range(exc: BaseException | None) -> bool:
    from botocore.exceptions import ClientError
    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code == "InvalidRange" or status == 416


def _short(exc: BaseException) -> str:
    from botocore.exceptions import ClientError
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{err.get('Code') or 'HTTP'} {status}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]


__all__ = ["S3Store", "env_credentials", "read_credentials", "region_of"]
