"""Generating the labelled corpus, leave-one-family-out evaluation, and the long benign run.

A *case* is one family applied to a fork of a simulated node at some point of its history
(after :data:`COLD` snapshots: a cold start; after ``hours``: warm), on top of that hour's
ordinary churn. Most cases are one snapshot; the throttled attack is several. Each snapshot
keeps its model inputs (which do not depend on the weights), whether the streaming check
fired and after how many attacked files, and whether the churn alone makes it ``suspect``,
so any model can be scored on the corpus without generating it again.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from corestate.node.core import anomaly as an

from . import corpus as C
from .train import fit

COLD = 12
THROTTLED_STEPS = 5
THROTTLED_WITHIN = 3


@dataclass(slots=True)
class Step:
    x: np.ndarray
    affected: int             # attacked files in this snapshot
    stream_fired: int | None  # attacked files seen when the streaming check fired
    churn_suspect: bool       # the change volume alone makes it "suspect"


@dataclass(slots=True)
class Case:
    family: str
    kind: str                 # "ordinary", "benign", "attack"
    node: int
    history: int              # snapshots in the node's baseline when the case began
    steps: list[Step] = field(default_factory=list)


def make_step(snap: C.Snapshot, base: an.Baseline, hour: int, weekday: int
              ) -> tuple[Step, an.Features]:
    acc = an.Accumulator(snap.files_before, snap.known_exts)
    check = an.StreamCheck(base)
    seen: set[str] = set()
    fired: int | None = None
    for o in snap.obs:
        t = snap.attacked.get(o.path)
        if t is not None:
            seen.add(t)
        if check.feed(acc.add(o)) and fired is None:
            fired = len(seen)
    f = acc.features(hour=hour, weekday=weekday)
    v = an.judge(f, base, use_shipped=False)
    codes = [r["code"] for r in v.details["reasons"]]
    return Step(an.model_inputs(f, base), len(set(snap.attacked.values())),
                fired if check.alerted else None, "churn" in codes), f


def _copy(b: an.Baseline) -> an.Baseline:
    return an.Baseline(b.names, b.ring.copy(), b.learnt)


def _case(tree: C.Tree, base: an.Baseline, family: str, kind: str, node: int,
          rng: random.Random, hour: int, weekday: int) -> Case:
    case = Case(family, kind, node, base.count)
    t = tree.fork(rng.getrandbits(32))
    if family == C.THROTTLED:
        b = _copy(base)
        done: set[str] = set()
        for i in range(THROTTLED_STEPS):
            r = C.Recorder(t)
            C.ordinary_hour(r, rng, (hour + i) % 24, weekday)
            C.attack_throttled_step(r, rng, done)
            step, f = make_step(r.done(), b, (hour + i) % 24, weekday)
            case.steps.append(step)
            b.learn(f)  # as a node that did not alert would
        return case
    r = C.Recorder(t)
    C.ordinary_hour(r, rng, hour, weekday)
    (C.ATTACKS.get(family) or C.BENIGN_HARD[family])(r, rng)
    case.steps.append(make_step(r.done(), base, hour, weekday)[0])
    return case


FAMILIES_ATTACK = (*C.ATTACKS, C.THROTTLED)
FAMILIES_BENIGN = tuple(C.BENIGN_HARD)


def generate(*, nodes: int, hours: int, reps: int, seed: int,
             log: Callable[[str], None] = lambda s: None) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for k in range(nodes):
        t0 = time.monotonic()
        n_files = int((300, 800, 2000, 5000)[k % 4] * rng.uniform(0.7, 1.3))
        tree = C.make_tree(seed * 1000 + k, n_files)
        base = an.Baseline()
        start = rng.randrange(168)
        for h in range(hours):
            hour, weekday = (start + h) % 24, ((start + h) // 24) % 7
            r = C.Recorder(tree)
            C.ordinary_hour(r, rng, hour, weekday)
            step, f = make_step(r.done(), base, hour, weekday)
            cases.append(Case("ordinary", "ordinary", k, base.count, [step]))
            base.learn(f)
            if base.count in (COLD, hours):
                frozen = _copy(base)
                for fam in (*FAMILIES_BENIGN, *FAMILIES_ATTACK):
                    for _ in range(reps):
                        kind = "attack" if fam in FAMILIES_ATTACK else "benign"
                        cases.append(_case(tree, frozen, fam, kind, k, rng,
                                           rng.randrange(24), rng.randrange(7)))
        log(f"node {k}: {len(tree.files)} files, {hours} hours, "
            f"{time.monotonic() - t0:.0f}s")
    return cases


def dataset(cases: list[Case]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in cases:
        for s in c.steps:
            xs.append(s.x)
            ys.append(1.0 if c.kind == "attack" else 0.0)
    return np.asarray(xs), np.asarray(ys)


@dataclass(slots=True)
class Outcome:
    tier: str                 # ok / suspect / alert (an attack: at its deadline snapshot)
    detected: bool            # attacks: alerted in time
    affected_before: int | None


def outcome(model: an.GlobalModel, case: Case, *, stream: bool = True) -> Outcome:
    """The case's verdict as the node would give it; ``stream=False``: by the model's
    score alone (without the mid-backup check), to show what each layer does."""
    within = THROTTLED_WITHIN if case.family == C.THROTTLED else 1
    before = 0
    worst = "ok"
    for i, s in enumerate(case.steps):
        score = model.score(s.x)
        fired = s.stream_fired if stream else None
        alert = fired is not None or score >= an.ALERT
        tier = "alert" if alert else "suspect" if (
            score >= an.SUSPECT or s.churn_suspect) else "ok"
        if case.kind != "attack":
            worst = max(worst, tier, key=("ok", "suspect", "alert").index)
            continue
        if alert:
            n = before + (fired if fired is not None else s.affected)
            return Outcome("alert", i < within, n)
        worst = max(worst, tier, key=("ok", "suspect", "alert").index)
        before += s.affected
    return Outcome(worst, False, None)


@dataclass(slots=True)
class Row:
    family: str
    kind: str
    history: str
    n: int = 0
    ok: int = 0
    suspect: int = 0
    alert: int = 0
    detected: int = 0
    model_alone: int = 0      # attacks alerted in time by the model's score alone
    affected: list[int] = field(default_factory=list)


def table(rows: list[Row]) -> str:
    out = ["| family | history | cases | ok | suspect | alert | alerted in time | "
           "by the model alone | median files before alert |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        att = r.kind == "attack" and r.n
        det = f"{r.detected / r.n:.1%}" if att else "—"
        alone = f"{r.model_alone / r.n:.1%}" if att else "—"
        med = f"{statistics.median(r.affected):g}" if r.affected else "—"
        out.append(f"| {r.family} | {r.history} | {r.n} | {r.ok} | {r.suspect} | {r.alert} | "
                   f"{det} | {alone} | {med} |")
    return "\n".join(out)


def score_cases(model: an.GlobalModel, cases: list[Case], rows: dict[tuple[str, str], Row]
                ) -> None:
    for c in cases:
        h = "cold (12)" if c.history <= COLD else "warm"
        row = rows.setdefault((c.family, h), Row(c.family, c.kind, h))
        o = outcome(model, c)
        row.n += 1
        setattr(row, o.tier, getattr(row, o.tier) + 1)
        if o.detected:
            row.detected += 1
        if c.kind == "attack" and outcome(model, c, stream=False).detected:
            row.model_alone += 1
        if o.affected_before is not None and c.kind == "attack":
            row.affected.append(o.affected_before)


def leave_one_family_out(cases: list[Case], *, l2: float = 1.0,
                         log: Callable[[str], None] = lambda s: None) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for fam in (*FAMILIES_ATTACK, *FAMILIES_BENIGN):
        train = [c for c in cases if c.family != fam]
        test = [c for c in cases if c.family == fam]
        x, y = dataset(train)
        model = fit(x, y, l2=l2)
        score_cases(model, test, rows)
        log(f"held out {fam}: {len(test)} cases")
    order = {f: i for i, f in enumerate((*FAMILIES_ATTACK, *FAMILIES_BENIGN))}
    return sorted(rows.values(), key=lambda r: (order[r.family], r.history))


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, each with its number and a pass/fail word."""
    out = []
    full = [r for r in rows if r.family in C.FULL_FILE]
    evasive = [r for r in rows if r.kind == "attack" and r.family not in C.FULL_FILE]
    for name, group, bar in (("full-file attacks alerted in time", full, 0.995),
                             ("evasive attacks alerted in time", evasive, 0.95)):
        n = sum(r.n for r in group)
        d = sum(r.detected for r in group)
        rate = d / n if n else 0.0
        out.append(f"{name}: {d}/{n} = {rate:.2%} (target {bar:.1%}): "
                   f"{'PASS' if rate >= bar else 'FAIL'}")
    affected = [a for r in rows if r.kind == "attack" for a in r.affected]
    med = statistics.median(affected) if affected else float("inf")
    out.append(f"median affected files before the alert: {med:g} (target <= 5): "
               f"{'PASS' if med <= 5 else 'FAIL'}")
    benign_alerts = sum(r.alert for r in rows if r.kind == "benign")
    n_benign = sum(r.n for r in rows if r.kind == "benign")
    out.append(f"benign hard cases alerted: {benign_alerts}/{n_benign} (target 0): "
               f"{'PASS' if benign_alerts == 0 else 'FAIL'}")
    return out


# -- the long benign run --

HARD_SCHEDULE: tuple[tuple[str, int], ...] = (  # family, every N hours (about)
    ("git-gc", 24 * 7), ("log-rotation", 24 * 7), ("package-upgrade", 24 * 30),
    ("photo-import", 24 * 30), ("vm-image-rewrite", 24), ("database-vacuum", 24 * 30),
    ("archive-to-tar-zst", 24 * 60), ("media-transcode", 24 * 90), ("bulk-rename", 24 * 90),
)


@dataclass(slots=True)
class LongRun:
    hours: int = 0
    tiers: dict[str, int] = field(default_factory=lambda: {"ok": 0, "suspect": 0, "alert": 0})
    alerts: list[str] = field(default_factory=list)
    hard: dict[str, int] = field(default_factory=dict)


def long_benign_run(model: an.GlobalModel, *, hours: int, seed: int, n_files: int = 2000,
                    log: Callable[[str], None] = lambda s: None) -> LongRun:
    """One node, ``hours`` hourly snapshots of ordinary churn with the hard cases on their
    schedule, judged and learnt as the node does (an alert is not learnt)."""
    rng = random.Random(seed)
    tree = C.make_tree(seed, n_files)
    base = an.Baseline()
    run = LongRun()
    t0 = time.monotonic()
    for h in range(hours):
        hour, weekday = h % 24, (h // 24) % 7
        r = C.Recorder(tree)
        C.ordinary_hour(r, rng, hour, weekday)
        fam = ""
        for name, every in HARD_SCHEDULE:
            if rng.random() < 1.0 / every:
                C.BENIGN_HARD[name](r, rng)
                fam = name
                run.hard[name] = run.hard.get(name, 0) + 1
                break
        snap = r.done()
        acc = an.Accumulator(snap.files_before, snap.known_exts)
        check = an.StreamCheck(base)
        for o in snap.obs:
            check.feed(acc.add(o))
        f = acc.features(hour=hour, weekday=weekday)
        v = an.judge(f, base, top=acc.top_files(3), model=model, stream_alert=check.alerted)
        run.tiers[v.verdict] += 1
        run.hours += 1
        if v.verdict == "alert":
            run.alerts.append(f"hour {h} ({fam or 'ordinary'}): {v.score:.2f} {v.reasons}")
        else:
            base.learn(f)
        if h and h % 2000 == 0:
            log(f"long run: {h} hours, {run.tiers}, {time.monotonic() - t0:.0f}s")
    return run


def _stderr(s: str) -> None:
    print(s, file=sys.stderr, flush=True)
