"""Looking at the repository: ``snapshots``, ``ls``, ``diff``, ``stats``.

Read-only; listings are iterators of typed records (paged by whoever sends them).
"""

from __future__ import annotations

from collections.abc import Iterator

from corestate.node.app import Context
from corestate.node.local import LocalNode
from corestate.protocol import control as c


def snapshots(node: LocalNode, call: c.SnapshotsCall, ctx: Context) -> Iterator[c.SnapshotSummary]:
    from corestate.node import anomalystate
    state, problem = anomalystate.load(node.home.path)
    if problem:
        ctx.warn(problem)
    protected = state.protected()
    verdicts = {f.snapshot: f.verdict for f in state.findings}
    for s in node.repo.snapshots():
        r = s.record
        yield c.SnapshotSummary(
            snapshot_id=s.id.hex(), short_id=s.short_id, time_ns=r.time_ns, host=r.hostname[:256],
            paths=tuple(r.paths), files=r.files, bytes=r.size, torn=len(r.torn),
            errors=len(r.errors), provider=r.provider, protected=s.id.hex() in protected,
            verdict=verdicts.get(s.id.hex(), ""))


def ls(node: LocalNode, call: c.LsCall, ctx: Context) -> Iterator[c.Entry]:
    from corestate.node.engine.inspect import find
    snap = node.repo.resolve(call.snapshot)
    start = call.path.rstrip(b"/")
    tree, top = find(node.repo, snap, start)
    if top is not None and top.subtree is None:
        rows = iter([(start, top)])
    elif call.recursive or not start:
        rows = node.repo.walk(tree, start)
    else:
        rows = ((start + b"/" + n.name, n) for n in node.repo.tree(tree))
    for path, n in rows:
        yield c.Entry(path=path, type=n.type, mode=n.mode, uid=n.uid, gid=n.gid, mtime_ns=n.mtime_ns,
                      size=n.size, target=n.target or None)


def diff(node: LocalNode, call: c.DiffCall, ctx: Context) -> Iterator[c.Change]:
    from corestate.node.engine.inspect import diff as tree_diff
    a, b = node.repo.resolve(call.a), node.repo.resolve(call.b)
    for op, path in tree_diff(node.repo, a.record.tree, b.record.tree):
        yield c.Change(op=op, path=path)


def stats(node: LocalNode, call: c.StatsCall, ctx: Context) -> c.StatsResult:
    from corestate.node.engine.inspect import stats as repo_stats
    return c.StatsResult(peer_id=node.keys.peer_id, **repo_stats(node.repo))


__all__ = ["diff", "ls", "snapshots", "stats"]

