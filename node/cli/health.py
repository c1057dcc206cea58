"""``corestate health``: how safe the data is, who holds it and how they behave, what repair does.

Builds a ``HealthCall``, invokes it (node/app/health.py: in the daemon when one runs, else
here; it asks nobody, it reads what audits and repairs learned) and renders the typed
``HealthResult`` as text or JSON (its fields as they are: ``packs``, ``snapshots``,
``holders``, ``repair``). Exit status: 0 every pack full, 3 some below full.
"""

from __future__ import annotations

import argparse
import time

from corestate.node.cli.context import invoke
from corestate.node.cli.output import EXIT_INCOMPLETE, EXIT_OK, Out, _human
from corestate.protocol import control as c

from corestate.errors import CoreStateError


def cmd_health(args: argparse.Namespace, out: Out) -> int:
    res = invoke(args, out, c.HealthCall())
    if not isinstance(res, c.HealthResult):
        raise CoreStateError(f"health was answered with {res.TYPE}", hint="report this as a bug")
    p = res.packs
    code = EXIT_OK if p.degraded == p.at_risk == p.lost == 0 else EXIT_INCOMPLETE
    if out.json:
        out.obj(c.result_fields(res))
        return code
    out.say(f"packs      {_levels(p)}")
    for s in res.snapshots[-20:]:
        out.say(f"  {s.short_id:<10} {_levels(s.packs)}")
    if len(res.snapshots) > 20:
        out.say(f"  ... {len(res.snapshots) - 20} older snapshot(s): `corestate health --json` lists all")
    out.say(f"holders    {len(res.holders)}")
    now = time.time_ns()
    for h in res.holders:
        seen = "never answered" if h.last_seen_ns is None else f"seen {_ago((now - h.last_seen_ns) / 1e9)} ago"
        out.say(f"  {_who(h.peer):<10} {h.state:<8} {seen:<18} audits {h.audits_passed} passed, "
                f"{h.audits_failed} failed (score {h.score})  {h.shares} share(s)")
    r = res.repair
    doing = "running now; " if r.running else ""
    if r.packs:
        eta = "ETA unknown" if r.eta_s is None else f"ETA {_ago(r.eta_s)}"
        out.say(f"repair     {doing}{r.shares} share(s) of {r.packs} pack(s) to rebuild, "
                f"{_human(r.bytes)} to move; {eta}")
    else:
        out.say(f"repair     {doing}{r.reason}")
    if r.unrepairable:
        out.say(f"           {r.unrepairable} pack(s) have fewer than k shares on holders that count: "
                "bring holders back online")
    if r.member_repairs:
        out.say(f"           repaired {r.member_repairs} pack(s) of absent group members")
    return code


def cmd_audit(args: argparse.Namespace, out: Out) -> int:
    """One audit round now (what the daemon does every ``[schedule] audit_every``)."""
    res = invoke(args, out, c.AuditCall())
    if not isinstance(res, c.AuditResult):
        raise CoreStateError(f"audit was answered with {res.TYPE}", hint="report this as a bug")
    if out.json:
        out.obj(c.result_fields(res))
        return res.code
    out.say(f"audit      {res.challenges} challenge(s): {res.passed} passed, {res.failed} failed; "
            f"{res.answered} holder(s) answered, {res.silent} silent")
    for ch in res.changes:
        out.say(f"  {_who(ch.peer):<10} {ch.old} -> {ch.new}: {ch.reason}")
    if res.failed:
        out.say("           the failed shares are rebuilt by the next repair (`corestate repair` does it now)")
    return res.code


def _who(holder: str) -> str:
    """A holder as a person reads it: a peer by the end of its PeerID, a storage target
    (``target:NAME``) whole."""
    return holder if holder.startswith("target:") else holder[-10:]


def _levels(p: c.PackLevels) -> str:
    return f"{p.full} full, {p.degraded} degraded, {p.at_risk} at risk, {p.lost} lost"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(0.0, seconds):.0f}s"


__all__ = ["cmd_audit", "cmd_health"]
