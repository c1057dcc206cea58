"""The storage targets of a home: ``HOME/targets.json``, and opening their backends.

A target is a holder named ``target:NAME`` everywhere a holder is named (placement,
ledger, catalog, health). The file keeps what `corestate target add` was given; never a
secret: S3 credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the
environment, or from the AWS-format credentials file whose path was given.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from corestate.kernel.state import write_atomic
from corestate.node.targets.store import BadTargetURL, ObjectStore, TargetError, parse_url

HOLDER_PREFIX = "target:"
FILE_NAME = "targets.json"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    url: str
    endpoint: str = ""  # an S3 endpoint URL (MinIO, B2, Wasabi, Garage, Ceph); "" = AWS
    quota: int = 0  # bytes this node may keep there; 0 = no limit but the target's own
    credentials_file: str = ""  # AWS-format credentials file; "" = the environment
    profile: str = "default"

    @property
    def holder(self) -> str:
        return HOLDER_PREFIX + self.name


def holder_name(holder: str) -> str | None:
    """``"target:nas"`` -> ``"nas"``; a peer id -> None."""
    return holder[len(HOLDER_PREFIX):] if holder.startswith(HOLDER_PREFIX) else None


def load(home: Path) -> list[TargetSpec]:
    """The targets in ``HOME/targets.json`` ([] without one); TargetError when the file
    is not what ``save`` writes (damaged, or edited by hand into another shape)."""
    path = home / FILE_NAME
    hint = "fix it by hand or remove it and add the targets again"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TargetError("*", f"{path} is damaged: {exc}", hint=hint) from exc
    entries = raw.get("targets", []) if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise TargetError("*", f"{path} is damaged: not an object with a list of targets",
                          hint=hint)
    return [_spec(path, i, t, hint) for i, t in enumerate(entries)]


_FIELD_TYPES = {"name": str, "url": str, "endpoint": str, "quota": int,
                "credentials_file": str, "profile": str}


def _spec(path: Path, i: int, t: object, hint: str) -> TargetSpec:
    if not isinstance(t, dict) or not {"name", "url"} <= t.keys() <= _FIELD_TYPES.keys() \
            or any(type(v) is not _FIELD_TYPES[k] for k, v in t.items()):
        raise TargetError("*", f"{path} is damaged: target {i + 1} is not an object of "
                          f"{', '.join(_FIELD_TYPES)} with their types", hint=hint)
    return TargetSpec(**t)


def save(home: Path, specs: list[TargetSpec]) -> None:
    body = {"version": 1, "targets": [asdict(s) for s in sorted(specs, key=lambda s: s.name)]}
    write_atomic(home / FILE_NAME, json.dumps(body, indent=2).encode() + b"\n", mode=0o600)


def check_spec(spec: TargetSpec) -> None:
    if not _NAME.fullmatch(spec.name):
        raise TargetError(spec.name, "a target name is 1-32 lowercase letters, digits and dashes",
                          hint="for example: nas, b2-offsite")
    parse_url(spec.name, spec.url)
    if spec.quota < 0:
        raise TargetError(spec.name, "a quota cannot be negative")


def open_store(spec: TargetSpec, *, retry_seconds: float | None = None) -> ObjectStore:
    """The backend of ``spec``. ``retry_seconds`` bounds an S3 store's retries of throttling
    and unreachable endpoints (default 20 s); a check a person waits for uses less."""
    url = parse_url(spec.name, spec.url)
    if url.scheme == "file":
        from corestate.node.targets.folder import FolderStore
        return FolderStore(spec.name, url.path)
    if url.scheme == "s3":
        from corestate.node.targets.s3 import S3Store
        return S3Store(spec.name, url.bucket, url.path, endpoint=spec.endpoint,
                       credentials_file=spec.credentials_file, profile=spec.profile,
                       **({} if retry_seconds is None else {"retry_seconds": retry_seconds}))
    raise BadTargetURL(spec.name, f"{url.scheme}:// targets are not supported yet")
