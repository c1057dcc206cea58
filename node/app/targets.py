"""``target add``, ``target list``, ``target remove``: the storage targets of a home.

A target (an S3-compatible bucket, a local or mounted folder) holds shares like a peer; as a
holder it is named ``target:NAME`` (node/targets/registry.py). These operations keep
``HOME/targets.json``; the holder layer reads it where it places, audits and repairs.

Invariants:
- ``add`` saves nothing unless the name, URL, endpoint and quota are valid and — unless the
  call says ``check=False`` — access was proved (a probe object written, read back and
  deleted); a failure names what is wrong (credentials, bucket, a folder not mounted).
- ``remove`` refuses while the ledger records shares of this node's packs on the target,
  unless forced: then the target's shares are unreachable, and repair rebuilds them on other
  holders. Objects already on the target are left there (never deleted behind a person's
  back: a forced remove may be a mistake, and a re-add finds them again).
- ``list`` counts shares and bytes from the ledger (the rows whose holder is ``target:NAME``):
  what this node relies on, with no listing of a bucket, which can be slow and costs
  requests. Its access checks run in parallel, each bounded by ``CHECK_RETRY_SECONDS``.
- No secret is stored or carried: the file keeps the credentials file's path, never keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from corestate.node.app import Context, Operation
from corestate.node.local import LocalNode
from corestate.node.targets import registry
from corestate.node.targets.registry import TargetSpec
from corestate.node.targets.store import TargetError, parse_url
from corestate.protocol import control as c

CHECK_RETRY_SECONDS = 8.0  # how long a check a person waits for retries an unreachable target
MAX_CHECKS_AT_ONCE = 8


def validate(spec: TargetSpec) -> None:
    """What needs neither the home nor the network: the name, URL, endpoint, options."""
    registry.check_spec(spec)
    url = parse_url(spec.name, spec.url)
    if spec.endpoint:
        if url.scheme != "s3":
            raise TargetError(spec.name, "--endpoint is for s3:// targets",
                              hint="a folder target needs only its file:///PATH")
        ep = urlsplit(spec.endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise TargetError(spec.name, f"the endpoint {spec.endpoint!r} is not an http(s) URL",
                              hint="for example https://s3.us-west-004.backblazeb2.com or "
                              "http://minio.lan:9000")
    if url.scheme != "s3" and (spec.credentials_file or spec.profile != "default"):
        raise TargetError(spec.name, "--credentials-file and --profile are for s3:// targets")
    if spec.credentials_file and not Path(spec.credentials_file).is_absolute():
        raise TargetError(spec.name, f"the credentials file {spec.credentials_file!r} is not an "
                          "absolute path", hint="give its full path")


def check_target(spec: TargetSpec) -> tuple[int | None, TargetError | None]:
    """Prove access to ``spec`` now: (bytes free there or None, None) when it passed, else
    (None, the error)."""
    try:
        store = registry.open_store(spec, retry_seconds=CHECK_RETRY_SECONDS)
        try:
            store.check()
            return store.free(), None
        finally:
            store.close()
    except TargetError as exc:
        return None, exc


def _row(spec: TargetSpec, held: dict[str, tuple[int, int]], reachable: bool | None = None,
         free: int | None = None, error: TargetError | None = None) -> c.TargetRow:
    shares, nbytes = held.get(spec.holder, (0, 0))
    return c.TargetRow(
        name=spec.name, holder=spec.holder, url=spec.url, endpoint=spec.endpoint, quota=spec.quota,
        credentials_file=spec.credentials_file, profile=spec.profile, shares=shares,
        bytes=nbytes or 0, free=free, reachable=reachable,
        error="" if error is None else str(error)[:4000],
        error_kind="" if error is None else type(error).__name__,
        hint="" if error is None else error.hint[:4000])


def target_add(node: LocalNode, call: c.TargetAddCall, ctx: Context) -> c.TargetAddResult:
    spec = TargetSpec(name=call.name, url=call.url, endpoint=call.endpoint, quota=call.quota,
                      credentials_file=call.credentials_file, profile=call.profile or "default")
    validate(spec)
    specs = registry.load(node.home.path)
    if any(s.name == spec.name for s in specs):
        raise TargetError(spec.name, "a target of that name exists",
                          hint="pick another name, or `corestate target remove "
                          f"{spec.name}` first")
    same = next((s for s in specs if parse_url(s.name, s.url) == parse_url(spec.name, spec.url)
                 and s.endpoint == spec.endpoint), None)
    if same is not None:
        raise TargetError(spec.name, f"the target {same.name} is this same place",
                          hint="one place is one failure domain: add it once")
    reachable: bool | None = None
    free = None
    if not call.check and spec.credentials_file:
        from corestate.node.targets.s3 import read_credentials
        read_credentials(spec.name, spec.credentials_file, spec.profile)  # local: check it anyway
    if call.check:
        try:
            store = registry.open_store(spec, retry_seconds=CHECK_RETRY_SECONDS)
            try:
                store.check()
                free = store.free()
            finally:
                store.close()
        except TargetError as exc:
            exc.hint = (exc.hint + "; " if exc.hint else "") + "nothing was saved (--no-check adds it unchecked)"
            raise
        reachable = True
    registry.save(node.home.path, [*specs, spec])
    return c.TargetAddResult(target=_row(spec, node.ledger.peers(), reachable, free))


def target_list(node: LocalNode, call: c.TargetListCall, ctx: Context) -> Iterator[c.TargetRow]:
    specs = registry.load(node.home.path)
    held = node.ledger.peers()
    if not call.check or not specs:
        yield from (_row(s, held) for s in specs)
        return
    with ThreadPoolExecutor(max_workers=min(MAX_CHECKS_AT_ONCE, len(specs))) as pool:
        checks = list(pool.map(check_target, specs))
    for spec, (free, error) in zip(specs, checks, strict=True):
        yield _row(spec, held, error is None, free, error)


def target_remove(node: LocalNode, call: c.TargetRemoveCall, ctx: Context) -> c.TargetRemoveResult:
    specs = registry.load(node.home.path)
    spec = next((s for s in specs if s.name == call.name), None)
    if spec is None:
        names = ", ".join(s.name for s in specs) or "none"
        raise TargetError(call.name, "no such target", hint=f"the targets are: {names}")
    shares, nbytes = node.ledger.peers().get(spec.holder, (0, 0))
    nbytes = nbytes or 0
    if shares and not call.force:
        raise TargetError(spec.name, f"it holds {shares} share(s) of this node's packs "
                          f"({nbytes / (1 << 20):.1f} MiB), as the ledger records",
                          hint=f"`corestate target remove {spec.name} --force` removes it anyway: "
                          "those shares are then unreachable and the next repair (`corestate "
                          "repair`) rebuilds them on other holders")
    registry.save(node.home.path, [s for s in specs if s.name != spec.name])
    return c.TargetRemoveResult(removed=spec.name, shares=shares, bytes=nbytes)


OPERATIONS = (
    Operation(c.TargetAddCall, target_add),
    Operation(c.TargetListCall, target_list, page=c.TargetListPage),
    Operation(c.TargetRemoveCall, target_remove),
)


__all__ = ["CHECK_RETRY_SECONDS", "OPERATIONS", "check_target", "target_add", "target_list",
           "target_remove", "validate"]
