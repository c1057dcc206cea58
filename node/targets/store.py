"""The interface of a storage target's backend, its errors, and target URLs.

Role: a target (an S3-compatible bucket, a local or mounted folder) keeps opaque objects
under string keys. Shares are ciphertext, so a backend never sees a readable byte; it only
has to store whole objects atomically and read ranges of them back.

Invariants every backend keeps:
- ``put`` is all or nothing: after it returns, a ``get`` of the key returns exactly the
  bytes given (durable: fsynced, or acknowledged by the object store); after a crash or an
  error, the key holds its old object or none, never a part.
- ``get`` with ``offset``/``length`` reads that range; asking past the end returns what is
  there (possibly nothing); a missing key raises ``ObjectMissing``.
- ``delete`` of a missing key is not an error.
- Calls block; callers in trio run them with ``trio.to_thread.run_sync``.
- Failures raise ``TargetError`` subclasses carrying ``retryable`` and a ``hint`` saying
  what a person should do; a backend retries throttling and server errors itself, with
  backoff, for at most its ``retry_seconds``, before raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from corestate.errors import CoreStateError


class TargetError(CoreStateError):
    """A storage target refused or failed a request."""

    def __init__(self, target: str, message: str, *, hint: str = "",
                 retryable: bool | None = None) -> None:
        super().__init__(f"target {target}: {message}", hint=hint, retryable=retryable)
        self.target = target


class TargetAuthError(TargetError):
    """The credentials were refused (wrong key, expired, no permission)."""


class TargetMissing(TargetError):
    """The bucket or folder does not exist."""


class TargetUnavailable(TargetError):
    """The target did not answer, throttled us or failed on its side (5xx) after retries."""

    retryable = True


class TargetFull(TargetError):
    """The target has no room (a full disk, or the quota set on `target add`)."""

    retryable = True


class ObjectMissing(TargetError):
    """The key is not on the target."""


class BadTargetURL(TargetError):
    pass


def check_key(target: str, key: str) -> str:
    """Keys are relative slash-separated names of safe characters; anything else is a bug
    of the caller, refused before it reaches a backend (a folder must never be escaped)."""
    parts = key.split("/")
    if (not key or len(key) > 512 or any(p in ("", ".", "..") for p in parts)
            or not all(c.isalnum() or c in "-_.=/" for c in key)):
        raise TargetError(target, f"bad object key {key!r}")
    return key


class ObjectStore(Protocol):
    """What the share layer needs of a backend (see the module docstring for invariants)."""

    name: str

    def put(self, key: str, src: bytes | memoryview | BinaryIO, size: int) -> None: ...

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def size(self, key: str) -> int | None:
        """The object's size, or None when there is no such key."""
        ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with ``prefix``, in key order."""
        ...

    def free(self) -> int | None:
        """Bytes free where the objects go (a folder's disk), or None when the backend
        cannot tell (an object store): the quota of `target add` bounds it then."""
        ...

    def check(self) -> None:
        """Prove access now: write, read back and delete a small probe object. Raises a
        TargetError naming what is wrong (credentials, missing bucket, no network)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TargetURL:
    """A parsed target URL: ``s3://BUCKET/PREFIX`` or ``file:///ABSOLUTE/PATH``."""

    scheme: str  # "s3" or "file"
    bucket: str  # s3 only
    path: str  # the key prefix (s3, no leading or trailing slash) or the folder (file)

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"
        return f"file://{self.path}"


def parse_url(name: str, url: str) -> TargetURL:
    """Parse a target URL; a clear BadTargetURL for anything else."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise BadTargetURL(name, f"{url!r} names no bucket",
                               hint="write s3://BUCKET or s3://BUCKET/PREFIX")
        return TargetURL("s3", parts.netloc, unquote(parts.path).strip("/"))
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BadTargetURL(name, f"{url!r} is not an absolute local path",
                               hint="write file:///mnt/nas/corestate (three slashes)")
        return TargetURL("file", "", unquote(parts.path).rstrip("/") or "/")
    raise BadTargetURL(name, f"{url!r}: unknown scheme {parts.scheme!r}",
                       hint="use s3://BUCKET/PREFIX for an S3-compatible bucket or "
                       "file:///PATH for a local or mounted folder")
