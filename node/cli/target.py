"""``target add``, ``target list``, ``target remove``: buckets and NAS folders as holders
(node/app/targets.py); here, parse and render.

Exit status: 0 done; 1 refused or failed (the message names what is wrong and what to do;
``target add`` then saved nothing); ``target list`` exits 3 when a checked target is not
reachable.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from corestate.node.cli.context import invoke
from corestate.node.cli.output import EXIT_INCOMPLETE, EXIT_OK, Out, _human
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def parse_quota(text: str | None) -> int:
    """``"500 GiB"``, ``"2T"``, ``"750MB"`` -> bytes (binary units); None or "" -> 0."""
    from corestate.node.home import _size
    if not text:
        return 0
    try:
        quota = _size(text)
    except (ValueError, KeyError):
        raise CoreStateError(f"--quota {text!r} is not a size",
                             hint='write it like "500 GiB", "2 TiB" or "750 MiB"') from None
    if quota <= 0:
        raise CoreStateError(f"--quota {text!r} must be more than nothing",
                             hint="leave --quota out for no limit but the target's own")
    return quota


def _row_obj(r: c.TargetRow) -> dict[str, object]:
    return {name: getattr(r, name) for name in r.SPECS}


def cmd_target_add(args: argparse.Namespace, out: Out) -> int:
    creds = ""
    if args.credentials_file:
        # the daemon, which may run the operation, has another working directory
        creds = str(Path(os.path.expanduser(args.credentials_file)).absolute())
    call = c.TargetAddCall(name=args.name, url=args.url, endpoint=args.endpoint or "",
                           quota=parse_quota(args.quota), credentials_file=creds,
                           profile=args.profile or "default", check=not args.no_check)
    # bad input is refused before a passphrase is asked for (the operation checks it again)
    from corestate.node.app.targets import validate
    from corestate.node.targets.registry import TargetSpec
    validate(TargetSpec(call.name, call.url, call.endpoint, call.quota, call.credentials_file,
                        call.profile))
    res = invoke(args, out, call)
    if not isinstance(res, c.TargetAddResult):
        raise CoreStateError(f"target add was answered with {res.TYPE}", hint="report this as a bug")
    t = res.target
    if out.json:
        out.obj(_row_obj(t))
        return EXIT_OK
    checked = ("access checked (a probe written, read back and deleted)" if t.reachable
               else "not checked (--no-check): `corestate target list` checks it")
    out.say(f"added target {t.name} ({t.holder}): {t.url}" + (f" at {t.endpoint}" if t.endpoint else ""))
    out.say(f"  {checked}")
    if t.quota:
        out.say(f"  quota {_human(t.quota)}")
    if t.free is not None:
        out.say(f"  {_human(t.free)} free there")
    out.say("  it holds shares of the next backups like a trusted peer, in a failure domain of its own")
    return EXIT_OK


def cmd_target_list(args: argparse.Namespace, out: Out) -> int:
    rows: list[c.TargetRow] = []
    invoke(args, out, c.TargetListCall(check=not args.no_check), rows.append)
    code = EXIT_INCOMPLETE if any(r.reachable is False for r in rows) else EXIT_OK
    if out.json:
        out.obj([_row_obj(r) for r in rows])
        return code
    if not rows:
        out.say("no targets yet: `corestate target add NAME s3://BUCKET/PREFIX` or "
                "`corestate target add NAME file:///mnt/nas/corestate` (`corestate target add --help`)")
        return EXIT_OK
    out.say(f"{'NAME':<14} {'STATE':<11} {'SHARES':>7} {'STORED':>10} {'QUOTA':>10}  URL")
    for r in rows:
        state = "unchecked" if r.reachable is None else ("ok" if r.reachable else "unreachable")
        quota = _human(r.quota) if r.quota else "-"
        where = r.url + (f"  ({r.endpoint})" if r.endpoint else "")
        out.say(f"{r.name:<14} {state:<11} {r.shares:>7} {_human(r.bytes):>10} {quota:>10}  {where}")
        if r.free is not None:
            out.say(f"{'':<14} {_human(r.free)} free there")
        if r.error:
            out.say(f"{'':<14} {r.error}")
            if r.hint:
                out.say(f"{'':<14} {r.hint}")
    return code


def cmd_target_remove(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.TargetRemoveCall(name=args.name, force=args.force))
    if not isinstance(res, c.TargetRemoveResult):
        raise CoreStateError(f"target remove was answered with {res.TYPE}", hint="report this as a bug")
    if out.json:
        out.obj({"removed": res.removed, "shares": res.shares, "bytes": res.bytes})
        return EXIT_OK
    out.say(f"removed target {res.removed}")
    if res.shares:
        out.warn(f"the ledger still records {res.shares} share(s) ({_human(res.bytes)}) on it: "
                 "they are unreachable now; `corestate repair` rebuilds them on other holders. The objects "
                 "stay on the target: delete them by hand once repair is done")
    return EXIT_OK


__all__ = ["cmd_target_add", "cmd_target_list", "cmd_target_remove", "parse_quota"]
