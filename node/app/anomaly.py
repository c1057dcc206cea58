"""The anomaly model on a node: judging each backup, and ``anomaly list|explain|ack``.

During a backup, ``Watch`` (an engine ``Observer``) turns what the pipeline saw of each file
(node/engine/backup.py ``FileChange``) into the model's ``FileObs`` (node/core/anomaly) and
feeds the accumulator; the streaming check may raise the ``anomaly`` alert mid-backup (the
backup goes on). At the end, ``assess`` judges the snapshot against its series' baseline,
records the finding in the home (node/anomalystate.py), publishes the alerts and answers
the summary's ``anomaly`` field.

Invariants:

- the model never deletes, blocks or changes a user file, and never stops a backup: any
  failure of the model (its state unreadable, a bug) costs the verdict, not the snapshot;
- a standing alert protects the last snapshot of its series before the anomaly (forget
  refuses it, policies keep it, scheduled retention leaves the series alone:
  node/app/maintain.py) until ``anomaly ack``;
- the baseline learns only from ``ok`` and ``suspect`` backups, and from an alert once a
  person acknowledged it; never from a standing alert;
- silent corruption (content changed under an unchanged size and mtime) is a finding of
  its own, with its own alert (``silent-corruption``), whatever the verdict.
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from corestate.node import anomalystate as st
from corestate.node.app import Context, Operation
from corestate.node.core import anomaly as model
from corestate.node.core.anomaly.observe import split_ext
from corestate.node.engine.backup import FileChange, Observer
from corestate.node.local import LocalNode
from corestate.protocol import control as c

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.engine.backup import BackupResult

# Added files held back until the end of a backup, to be paired with deleted files of the
# same content (a rename); past this many they are judged as they come.
MAX_HELD_ADDS = 100_000
MAX_SILENT = 64  # silent-corruption paths kept per finding
# An alert protects a snapshot and pauses retention: it needs at least this many files that
# look encrypted or mangled. Fewer (one new random file in a small tree) is a suspect.
MIN_ALERT_FILES = 3
# A series' baseline is written whole after this many snapshots learnt; in between, each
# backup appends its features (node/anomalystate.py ``record``).
REWRITE_EVERY = 16


def _text(p: bytes) -> str:
    return os.fsdecode(p)


class Watch(Observer):
    """Feeds one backup's file changes to the model (on the backup's walking thread)."""

    def __init__(self, db: st.AnomalyDB, ctx: Context, series: st.Series, files_before: int,
                 hold_adds: bool, before: list[Any] | None = None) -> None:
        self.ctx = ctx
        self.before = before or []  # the series' snapshots before this backup (oldest first)
        self.series = series
        self.key = st.key_of(series)
        # Only this series' row and what it reported before: not the node's whole history.
        m = db.series_model(self.key)
        self.baseline = _baseline(m.baseline, m.pending, ctx)
        self.pending = len(m.pending)  # snapshots learnt since the baseline was written whole
        exts = m.exts
        self.acc = model.Accumulator(files_before=files_before, known_exts=frozenset(exts))
        self.stream = _Stream(self.baseline)
        self.probes = db
        self.hold = hold_adds
        self.held: dict[bytes, tuple[FileChange, Any]] = {}
        # Deleted files (path, size, content digest), judged in ``finish``: their kept
        # probes are then looked up in a few queries, not one per file. The engine reports
        # deletions after the walk and nothing after them, so the order is the same.
        self.deleted: list[tuple[bytes, int, bytes]] = []
        self.silent: list[bytes] = []
        self.silent_digests: dict[str, str] = {}
        # Reported before (the cache still holds the older content until it can vouch for
        # the new one): path -> digest of the content reported.
        self.reported: dict[str, str] = db.reported(self.key)
        self.changed_bytes = 0
        self.changed_files = 0
        self.exts: set[str] = set(exts)
        self.stream_alerted = False
        self._ext_text: dict[bytes, str] = {}  # extension bytes -> its text, lower case

    # -- the engine's calls -------------------------------------------------------------

    def file(self, ch: FileChange) -> None:
        self.changed_files += 1
        self.changed_bytes += ch.size
        if ch.probe is None and not ch.silent:
            if not self.hold:
                # The first backup of a series, a file not probed: no signal is possible (no
                # old version, no deletion to pair with), so only the counts move. Kept cheap:
                # a first backup feeds every file of the tree.
                self._count_added(ch.path, ch.new_bytes, ch.stored_bytes)
                return
            if ch.old_size is not None:
                # A changed file not probed: without its new version's probe no signal is
                # possible (``file_signals`` judges the new probe), so its old probe is not
                # looked up and only the counts move: what ``Accumulator.add`` does for it.
                self._count_changed(ch.path, ch.new_bytes, ch.stored_bytes, ch.kept)
                return
        if ch.silent and len(self.silent) < 10_000:
            key = _text(ch.path)
            if self.reported.get(key) != ch.digest.hex():
                self.silent.append(ch.path)
                self.silent_digests[key] = ch.digest.hex()
        new = model.ContentProbe.from_record(ch.probe) if ch.probe is not None else None
        if ch.probe is not None:
            self.probes.upserts.append((ch.path, _json(ch.probe)))
        text = _text(ch.path)
        ext = split_ext(text)[2]
        if ext and len(self.exts) < 5000:
            self.exts.add(ext)
        if ch.old_size is None:
            digest = ch.digest if self.hold else b""
            if self.hold and len(self.held) < MAX_HELD_ADDS and digest not in self.held:
                self.held[digest] = (ch, new)
                return
            if self.hold and ch.new_bytes == 0:
                return  # nothing new in it (see finish)
            self._feed(model.FileObs(path=text, change="added", size_new=ch.size, new=new,
                                     new_bytes=ch.new_bytes, new_compressed=ch.stored_bytes,
                                     content_id=ch.digest if new is not None else b""))
            return
        old = self._old_probe(ch.path)
        self._feed(model.FileObs(path=text, change="changed", size_old=ch.old_size,
                                 size_new=ch.size, old=old, new=new, new_bytes=ch.new_bytes,
                                 new_compressed=ch.stored_bytes, kept_share=ch.kept,
                                 content_id=ch.digest if new is not None else b""))

    def new_file(self, path: bytes, size: int, mtime_ns: int, new_bytes: int, stored_bytes: int,
                 content: list[bytes]) -> None:
        if self.hold:  # held back to pair with a deletion: the full record
            ch = FileChange(path=path, size=size, mtime_ns=mtime_ns, old_size=None, kept=None,
                            new_bytes=new_bytes, stored_bytes=stored_bytes, probe=None, content=content)
            digest = ch.digest
            if len(self.held) < MAX_HELD_ADDS and digest not in self.held:
                # What ``file`` does with a new file not probed, without its other checks.
                self.changed_files += 1
                self.changed_bytes += size
                ext = self._ext(path)
                if ext and len(self.exts) < 5000:
                    self.exts.add(ext)
                self.held[digest] = (ch, None)
                return
            self.file(ch)
            return
        # What ``file`` does with such a file on a first backup, without building the record.
        self.changed_files += 1
        self.changed_bytes += size
        self._count_added(path, new_bytes, stored_bytes)

    def _ext(self, path: bytes) -> str | None:
        """The extension of a file's path, lower case, as ``split_ext`` says it ("" for a
        name ending in a dot); None without one. Decoded once per distinct extension."""
        name = path.rpartition(b"/")[2]
        stem, dot, ext_b = name.rpartition(b".")
        if not (dot and stem):
            return None
        ext = self._ext_text.get(ext_b)
        if ext is None:
            ext = os.fsdecode(ext_b).lower()
            if len(self._ext_text) < 5000:  # a tree has few distinct extensions
                self._ext_text[ext_b] = ext
        return ext

    def _count_added(self, path: bytes, new_bytes: int, stored_bytes: int) -> None:
        acc = self.acc
        acc.counts["added"] += 1
        acc.new_bytes += new_bytes
        acc.new_compressed += stored_bytes
        ext = self._ext(path)
        if ext is not None:
            if ext not in acc.known_exts:
                acc.new_exts[ext] += 1
            if len(self.exts) < 5000:
                self.exts.add(ext)

    def _count_changed(self, path: bytes, new_bytes: int, stored_bytes: int, kept: float | None) -> None:
        acc = self.acc
        acc.counts["changed"] += 1
        acc.new_bytes += new_bytes
        acc.new_compressed += stored_bytes
        if kept is not None:
            acc.kept_sum += kept
            acc.kept_n += 1
        ext = self._ext(path)
        if ext and len(self.exts) < 5000:
            self.exts.add(ext)

    def gone(self, path: bytes, size: int, digest: bytes) -> None:
        self.probes.deletes.append(path)
        self.deleted.append((path, size, digest))

    def _gone(self, path: bytes, size: int, digest: bytes, old: model.ContentProbe | None) -> None:
        held = self.held.pop(digest, None)
        if held is not None:
            ch, new = held
            self._feed(model.FileObs(path=_text(ch.path), change="renamed", old_path=_text(path),
                                     size_old=size, size_new=ch.size, old=old, new=new,
                                     new_bytes=ch.new_bytes, new_compressed=ch.stored_bytes,
                                     kept_share=1.0, content_id=digest))
            return
        self._feed(model.FileObs(path=_text(path), change="deleted", size_old=size, old=old))

    # -- the end -----------------------------------------------------------------------

    def finish(self) -> None:
        """Judge the deleted files (renames among them), then the added files held back
        (no deleted file had their content)."""
        deleted, self.deleted = self.deleted, []
        kept = self.probes.get_many([p for p, _, _ in deleted]) if deleted else {}
        for path, size, digest in deleted:
            rec = kept.get(path)
            self._gone(path, size, digest, None if rec is None else _probe_of(rec))
        for ch, new in self.held.values():
            if ch.new_bytes == 0:
                # Every chunk was stored before: a file the cache could not vouch for (written
                # just before the last backup) read again unchanged, or a copy. Not a change.
                continue
            if new is None:
                # Not probed: no signal is possible, and no deletion comes after this to
                # pair with it; only the counts move (what ``Accumulator.add`` does for it).
                acc = self.acc
                acc.counts["added"] += 1
                acc.new_bytes += ch.new_bytes
                acc.new_compressed += ch.stored_bytes
                ext = self._ext(ch.path)
                if ext and ext not in acc.known_exts:
                    acc.new_exts[ext] += 1
                continue
            self._feed(model.FileObs(path=_text(ch.path), change="added", size_new=ch.size, new=new,
                                     new_bytes=ch.new_bytes, new_compressed=ch.stored_bytes,
                                     content_id=ch.digest if new is not None else b""))
        self.held.clear()

    def close(self) -> None:
        """Let go of the probe database (a failed or cancelled backup: nothing is kept)."""
        self.probes.close()

    def _old_probe(self, path: bytes) -> model.ContentProbe | None:
        rec = self.probes.get(path)
        return None if rec is None else _probe_of(rec)

    def _feed(self, obs: model.FileObs) -> None:
        signals = self.acc.add(obs)
        if not any(x.suspicious for x in signals):
            return  # nothing for the streaming check to count
        # The first backup of a series is never an alert (see assess): no stream alert either.
        if self.stream.feed(signals) and self.hold and not self.stream_alerted:
            self.stream_alerted = True
            paths = ", ".join(self.stream.first[:5])
            self.ctx.emit(c.Alert(
                time_ns=time.time_ns(), alert="anomaly", severity="critical",
                message=(f"a backup in progress is seeing files that look encrypted or mangled "
                         f"({self.stream.suspicious} so far, e.g. {paths})"[:4096]),
                details={"snapshot": "in progress", "series": _series_text(self.series),
                         "score": "", "reasons": "mid-backup: suspicious files beyond this node's usual"}))


class _Stream(model.StreamCheck):
    """The streaming check with its bar computed once per backup (the baseline does not
    change during one; the bar costs percentiles over the history)."""

    def __init__(self, baseline: model.Baseline) -> None:
        super().__init__(baseline)
        self._bar: int | None = None

    @property
    def allowance(self) -> int:
        if self._bar is None:
            self._bar = model.StreamCheck.allowance.fget(self)
        return self._bar


def _probe_of(rec: Any) -> model.ContentProbe | None:
    """A kept probe record, or None when it is not one (an older or damaged row)."""
    try:
        return model.ContentProbe.from_record(rec)
    except (ValueError, TypeError):
        return None


def _json(v: Any) -> str:
    import json
    return json.dumps(v, separators=(",", ":"))


def _series_text(series: st.Series) -> str:
    return ", ".join(_text(p) for p in series)[:1024]


def _baseline(blob: bytes | None, pending: list[dict[str, float]], ctx: Context) -> model.Baseline:
    """A series' baseline: the blob last written whole, then what it learnt since."""
    base = model.Baseline()
    if blob:
        try:
            base = model.Baseline.from_bytes(blob)
        except (model.AnomalyStateError, ValueError, TypeError) as exc:
            ctx.warn(f"{exc} — the anomaly model starts a fresh baseline for this series")
    for row in pending:
        base.learn(model.Features(**{k: float(v) for k, v in row.items() if k in model.FEATURE_NAMES}))
    return base


def _learn(base: model.Baseline, pending: int, features: model.Features) -> tuple[dict[str, float], bytes | None]:
    """Teach ``base`` one snapshot; what to record: its features, and the whole baseline
    when it is due (every REWRITE_EVERY snapshots learnt: ~230 KB for a full ring; in
    between, only each snapshot's features are appended)."""
    base.learn(features)
    blob = base.to_bytes() if pending + 1 >= REWRITE_EVERY or base.count <= 1 else None
    return features.as_dict(), blob


def _entry_baseline(entry: dict[str, Any], ctx: Context) -> model.Baseline:
    """The same from an ``AnomalyState`` series entry (the commands)."""
    blob = entry.get("baseline")
    try:
        raw = base64.b64decode(blob) if isinstance(blob, str) and blob else None
    except ValueError:
        raw = b"?"  # from_bytes says what is wrong with it
    return _baseline(raw, list(entry.get("pending", [])), ctx)


def begin(node: LocalNode, ctx: Context, paths: list[bytes]) -> tuple[None, Watch]:
    """Before a backup of ``paths``: the observer to give the engine (the first of the
    pair is kept for callers that unpack two)."""
    db = st.AnomalyDB(node.home.path)
    try:
        series = st.series_key([os.fsencode(os.path.abspath(p)) for p in paths])
        prev = _recent(node, series, time.time_ns())
        files_before = prev[-1].record.files if prev else 0
        watch = Watch(db, ctx, series, files_before, hold_adds=bool(prev), before=prev)
    except BaseException:
        db.close()
        raise
    if db.problem:
        ctx.warn(db.problem)
        db.problem = None
    return None, watch


def _recent(node: LocalNode, series: st.Series, now_ns: int) -> list[Any]:
    """The series' snapshots (oldest first) that ``assess`` may need: from the newest to
    the newest taken before ``now_ns`` (this backup's snapshot is taken later, so the one
    it protects is among them). Decodes records newest first and stops there: a node with
    a long history does not decode it all on every backup. The same as filtering
    ``Repository.snapshots()`` (this peer's snapshots if it has any, else all) by series."""
    own_id = node.repo.keys.peer_id
    own: list[Any] = []
    others: list[Any] = []
    any_own = False
    for s in node.repo.snapshots_newest_first():
        mine = s.record.peer_id == own_id
        any_own = any_own or mine
        if st.series_key(s.record.paths) != series:
            continue
        (own if mine else others).append(s)
        if mine and s.record.time_ns <= now_ns:
            break
    found = own if any_own else others
    return found[::-1]


def assess(node: LocalNode, ctx: Context, state: Any, watch: Watch,
           result: BackupResult, resampled: Any) -> c.AnomalyVerdict:
    """Judge the backup, record the finding, send the alerts; the summary's field."""
    watch.finish()
    series = st.series_key(result.snapshot.paths)
    when = time.localtime(result.snapshot.time_ns / 1e9)
    features = watch.acc.features(hour=when.tm_hour, weekday=when.tm_wday)
    v = model.judge(features, watch.baseline, top=watch.acc.top_files(), stream_alert=watch.stream_alerted)
    sid = result.snapshot_id.hex()
    prev = [s for s in watch.before if s.id != result.snapshot_id and s.record.time_ns <= result.snapshot.time_ns]
    if v.verdict == "alert" and features.suspicious < MIN_ALERT_FILES and not watch.stream_alerted:
        n = int(features.suspicious)
        v = model.Verdict("suspect", v.score, [f"only {n} suspicious file{'s' if n != 1 else ''} (an alert needs "
                                               f"{MIN_ALERT_FILES}): recorded, nothing protected", *v.reasons],
                          v.details)
    if v.verdict == "alert" and not prev:
        # The first backup of these paths: nothing changed *between* snapshots, and there
        # is no snapshot to protect; what looks encrypted was so before this node knew it
        # (password vaults, .gpg files). Recorded and shown, never an alert.
        v = model.Verdict("suspect", v.score, ["the first backup of these paths: " + r for r in v.reasons],
                          v.details)
    protects = prev[-1].id.hex() if v.verdict == "alert" and prev else None
    silent = list(watch.silent) + [p for p in getattr(resampled, "mismatches", []) if p not in watch.silent]
    details = dict(v.details)
    files = [f.get("path", "") for f in details.get("files", []) if isinstance(f, dict)]
    finding = st.Finding(
        snapshot=sid, time_ns=result.snapshot.time_ns, series=[_text(p) for p in series],
        verdict=v.verdict, score=float(v.score), reasons=[r[:1024] for r in v.reasons][:32],
        details=details, files=files[:st.MAX_DETAIL_FILES], protects=protects,
        silent=[_text(p) for p in silent[:MAX_SILENT]], features=features.as_dict(),
        silent_digests=dict(list(watch.silent_digests.items())[:MAX_SILENT]))
    stats = result.stats
    volume = st.Volume(time_ns=result.snapshot.time_ns, bytes_changed=watch.changed_bytes,
                       bytes_new=stats.bytes_new, bytes_added=stats.bytes_added,
                       store_bytes=_store_bytes(node), files_changed=watch.changed_files,
                       seconds=round(result.seconds, 3))
    learnt, blob = _learn(watch.baseline, watch.pending, features) if v.verdict != "alert" else (None, None)
    db = watch.probes
    try:
        db.record(finding, watch.key, sorted(watch.exts)[:5000], learnt=learnt, baseline=blob, volume=volume)
    finally:
        db.close()
    if db.problem:
        ctx.warn(db.problem)
    _alerts(ctx, finding, series, silent)
    return c.AnomalyVerdict(verdict=v.verdict, score=f"{v.score:.4f}", reasons=tuple(finding.reasons))


def _store_bytes(node: LocalNode) -> int:
    row = node.repo.db.execute("SELECT COALESCE(SUM(size), 0) FROM packs").fetchone()
    return int(row[0]) if row else 0


def _alerts(ctx: Context, f: st.Finding, series: st.Series, silent: list[bytes]) -> None:
    now = time.time_ns()
    details = {"snapshot": f.snapshot, "series": _series_text(series), "score": f"{f.score:.4f}",
               "reasons": "; ".join(f.reasons)[:1024]}
    if f.verdict == "alert":
        kept = (f"snapshot {f.protects[:8]} (the last before it) is protected until `corestate anomaly ack "
                f"{f.snapshot[:8]}`" if f.protects else "no earlier snapshot of these paths to protect")
        ctx.emit(c.Alert(time_ns=now, alert="anomaly", severity="critical",
                         message=(f"backup {f.snapshot[:8]} looks like ransomware or mass damage: "
                                  f"{'; '.join(f.reasons)}. {kept}; retention is paused for these "
                                  "paths. See `corestate anomaly explain " + f.snapshot[:8] + "`")[:4096],
                         details={**details, "protected": f.protects or ""}))
    elif f.verdict == "suspect":
        ctx.emit(c.Alert(time_ns=now, alert="anomaly-suspect", severity="info",
                         message=(f"backup {f.snapshot[:8]} is unusual: {'; '.join(f.reasons)}")[:4096],
                         details=details))
    if silent:
        names = ", ".join(_text(p) for p in silent[:5])
        ctx.emit(c.Alert(time_ns=now, alert="silent-corruption", severity="warning",
                         message=(f"{len(silent)} file(s) changed content while their size and mtime did "
                                  f"not (bit rot, or a tool that put the mtime back): {names}. The snapshot "
                                  "keeps what was read; compare with an older snapshot "
                                  "(`corestate diff`) before trusting either")[:4096],
                         details={"snapshot": f.snapshot, "files": str(len(silent)), "first": names[:1024]}))


def resample_cache(node: LocalNode, result: BackupResult, read: set[bytes]) -> Any:
    """Re-read a few cache hits for silent corruption, within the [anomaly] budget."""
    if result.stats.files_unchanged == 0:
        # No cache hit in this backup (a first backup): every file was just read, so there
        # is nothing to re-read; drawing cache rows that are all skipped cost ~4 ms.
        return None
    from corestate.node.engine.resample import resample
    cfg = node.cfg
    budget = max(cfg.anomaly_resample_bytes, int(result.stats.bytes_read * cfg.anomaly_resample_share))
    seed = node.keys.tree_id(b"resample" + result.snapshot_id)
    return resample(node.repo, cfg, list(result.snapshot.paths), random.Random(seed),
                    max_files=cfg.anomaly_resample_files, max_bytes=budget, skip=read)


# -- the commands ------------------------------------------------------------------------------


def _row(f: st.Finding) -> c.AnomalyRow:
    return c.AnomalyRow(
        snapshot_id=f.snapshot, short_id=f.snapshot[:8], time_ns=f.time_ns,
        paths=tuple(os.fsencode(p) for p in f.series[:256]), verdict=f.verdict, score=f"{f.score:.4f}",
        reasons=tuple(r[:1024] for r in f.reasons[:32]), protects=f.protects if f.standing else None,
        acked_ns=f.acked_ns, silent_corruption=len(f.silent))


def _loaded(node: LocalNode, ctx: Context) -> st.AnomalyState:
    state, problem = st.load(node.home.path)
    if problem:
        ctx.warn(problem)
    return state


def anomaly_list(node: LocalNode, call: c.AnomalyListCall, ctx: Context) -> Iterator[c.AnomalyRow]:
    state = _loaded(node, ctx)
    for f in state.findings:
        if call.all or f.verdict != "ok" or f.silent:
            yield _row(f)


def _find(node: LocalNode, ctx: Context, ref: str) -> tuple[st.AnomalyState, st.Finding]:
    state = _loaded(node, ctx)
    snap = node.repo.resolve(ref)
    f = state.finding(snap.id.hex())
    if f is None:
        raise CoreStateError(f"snapshot {snap.short_id} has no verdict of the anomaly model",
                             hint="it was taken before the model ran, or its state was reset; "
                                  "`corestate anomaly list --all` shows the judged ones")
    return state, f


def explain(node: LocalNode, call: c.AnomalyExplainCall, ctx: Context) -> c.AnomalyExplainResult:
    _, f = _find(node, ctx, call.snapshot)
    numbers: list[c.AnomalyNumber] = []
    for r in f.details.get("reasons", []):
        if not isinstance(r, dict):
            continue
        usual = r.get("usual")
        spread = r.get("spread")
        u = "" if usual is None else f"{usual:g}" + (f" ± {spread:g}" if spread is not None else "")
        numbers.append(c.AnomalyNumber(name=str(r.get("code", ""))[:128],
                                       value=f"{float(r.get('value', 0)):g}", usual=u[:128]))
    for name, value in sorted(f.features.items()):
        numbers.append(c.AnomalyNumber(name=f"feature {name}"[:128], value=f"{value:g}", usual=""))
    base = f.details.get("baseline", {})
    if isinstance(base, dict):
        numbers.append(c.AnomalyNumber(name="baseline snapshots", value=str(base.get("snapshots", 0)),
                                       usual=""))
    numbers.append(c.AnomalyNumber(name="model", value=str(f.details.get("model", ""))[:64], usual=""))
    files = []
    for x in f.details.get("files", [])[:64]:
        if isinstance(x, dict):
            files.append(c.AnomalyFile(path=os.fsencode(str(x.get("path", "")))[:65536],
                                       change=str(x.get("change", ""))[:16], score=f"{float(x.get('score', 0)):g}",
                                       signals=tuple(str(s)[:64] for s in x.get("signals", [])[:16])))
    return c.AnomalyExplainResult(row=_row(f), numbers=tuple(numbers[:256]), files=tuple(files),
                                  silent=tuple(os.fsencode(p) for p in f.silent[:64]))


def ack(node: LocalNode, call: c.AnomalyAckCall, ctx: Context) -> c.AnomalyAckResult:
    state, f = _find(node, ctx, call.snapshot)
    if f.verdict == "ok":
        raise CoreStateError(f"snapshot {f.snapshot[:8]} was judged ok: there is nothing to acknowledge")
    if f.acked_ns is not None:
        return c.AnomalyAckResult(snapshot_id=f.snapshot, verdict=f.verdict, unprotected=None,
                                  learned=False, already=True)
    unprotected = f.protects if f.standing else None
    learned = False
    key: str | None = None
    entry: dict[str, Any] | None = None
    if f.verdict == "alert" and f.features:
        # An alert was kept out of the baseline; acknowledged, it is a usual change.
        key = st.key_of(f.series_key())
        entry = state.series.setdefault(key, {})
        baseline = _entry_baseline(entry, ctx)
        baseline.learn(model.Features(**{k: v for k, v in f.features.items() if k in model.FEATURE_NAMES}))
        entry["baseline"] = base64.b64encode(baseline.to_bytes()).decode()
        entry.pop("pending", None)
        learned = True
    f.acked_ns = time.time_ns()
    db = st.AnomalyDB(node.home.path)
    try:
        db.update(f, key, entry)
    finally:
        db.close()
    return c.AnomalyAckResult(snapshot_id=f.snapshot, verdict=f.verdict, unprotected=unprotected,
                              learned=learned, already=False)


OPERATIONS: tuple[Operation, ...] = (
    Operation(c.AnomalyListCall, anomaly_list, page=c.AnomalyListPage, lock=False),
    Operation(c.AnomalyExplainCall, explain, lock=False),
    Operation(c.AnomalyAckCall, ack),
)


__all__ = ["OPERATIONS", "Watch", "ack", "assess", "begin", "explain", "resample_cache"]
