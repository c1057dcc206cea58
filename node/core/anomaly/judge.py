"""Verdicts: ``ok``, ``suspect`` or ``alert``, each with its reasons in words.

:func:`judge` looks at a whole snapshot (its :class:`~.observe.Features`, the node's
:class:`~.baseline.Baseline`, the files most responsible). The score is the global model's
probability (:mod:`.model`) when one is given or shipped, else a simple rule; the reasons are
always the rules below, each with the numbers behind it (:class:`Reason`), so a verdict can
be explained without the model.

Tiers: score >= :data:`ALERT` -> ``alert``; score >= :data:`SUSPECT`, or a change volume far
outside the node's own history -> ``suspect``; else ``ok``.

Streaming (:class:`StreamCheck`): the pipeline feeds each file's signals as it goes; once
:data:`STREAM_ALERT_FILES` more suspicious files than the node ever had in one snapshot have
been seen, :meth:`StreamCheck.feed` returns True and the node raises the alert at once,
mid-backup (the backup goes on: the model never blocks or deletes user files). With hourly
snapshots this is what keeps the files an attack touches before the alert to a handful:
the whole-snapshot judge would only speak after the last file. The whole-snapshot verdict
at the end still decides the tier recorded with the snapshot; a stream alert makes it at
least ``alert``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .baseline import Baseline
from .model import GlobalModel, history_excess, load_default, model_inputs
from .observe import Features, FileSignals

Tier = Literal["ok", "suspect", "alert"]

SUSPECT = 0.5
ALERT = 0.9
CHURN_SUSPECT_Z = 8.0      # change volume this many robust sigmas above usual: suspect
STREAM_ALERT_FILES = 4     # suspicious files beyond the node's usual, mid-backup: alert
STREAM_MIN_FILES = 2       # ... and never fewer than this many in one backup

# (feature field, words for one file, words for many) for the per-file signal counts.
_SIGNAL_WORDS: tuple[tuple[str, str], ...] = (
    ("encrypted_looking", "look encrypted (random bytes, unlike compression)"),
    ("body_encrypted", "kept their header but the rest looks encrypted"),
    ("trailer_lost", "lost the end-of-file structure of their format (zip directory, "
                     "PDF %%EOF, PNG IEND, JPEG end marker)"),
    ("intermittent", "are partly encrypted (random blocks inside a non-random file)"),
    ("base64_output", "turned into base64-looking text (masked ciphertext)"),
    ("magic_lost", "lost the format (or the text) their previous version had"),
    ("extension_mismatch", "have content that does not match their extension"),
    ("renamed_extension", "reappeared under the same name with a new extension"),
    ("entropy_jump", "jumped in entropy by more than 1 bit per byte"),
    ("rewritten_in_place", "were rewritten whole at the same size (a type rarely edited)"),
    ("incompressible", "wrote new chunks that do not compress (in a type that should)"),
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason, with the numbers behind it."""

    code: str            # stable name: the feature or rule
    text: str            # words for a person
    value: float         # this snapshot
    usual: float | None  # this node's usual (median), None when the baseline is empty
    spread: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: Tier
    score: float
    reasons: list[str]
    details: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The backup summary's ``anomaly`` field."""
        return {"verdict": self.verdict, "score": round(self.score, 4),
                "reasons": list(self.reasons)}


def _reasons(f: Features, b: Baseline) -> list[Reason]:
    out: list[Reason] = []
    usual = (lambda n: b.centre(n)) if b.count else (lambda n: None)

    def above(name: str) -> bool:
        v = float(getattr(f, name))
        u = b.usual_max(name) if b.count else 0.0
        return v > 0 and v > u

    for name, words in _SIGNAL_WORDS:
        if above(name):
            n = int(getattr(f, name))
            u = usual(name)
            tail = f"; usual here: {u:g}" if u is not None else ""
            out.append(Reason(name, f"{n} file{'s' if n != 1 else ''} {words}{tail}",
                              float(n), u))
    if f.note_folders >= 2 and above("note_folders"):
        words = f", with {int(f.note_words)} ransom-note phrases" if f.note_words else ""
        out.append(Reason("note_folders", f"one small new text file appeared in "
                          f"{int(f.note_folders)} folders{words}", f.note_folders,
                          usual("note_folders")))
    if f.new_ext_top >= 5 and above("new_ext_top"):
        out.append(Reason("new_ext_top", f"{int(f.new_ext_top)} files took one extension "
                          f"this tree did not have", f.new_ext_top, usual("new_ext_top")))
    if f.changed >= 10 and f.kept_share < 0.1 and b.count and b.centre("kept_share") > 0.3:
        out.append(Reason("kept_share", f"changed files kept {f.kept_share:.0%} of their old "
                          f"chunks (usual here: {b.centre('kept_share'):.0%})",
                          f.kept_share, b.centre("kept_share")))
    # Additions alone (an import) are no cause for suspicion; changing, deleting or
    # renaming far more files than this node ever does is, even with no file suspicious.
    z = b.z("loss_churn", f.loss_churn) if b.count else 0.0
    if b.count and z >= CHURN_SUSPECT_Z:
        out.append(Reason("churn", f"{f.loss_churn:.1%} of the files changed, were deleted "
                          f"or renamed (usual here: {b.centre('loss_churn'):.1%} "
                          f"+- {b.spread('loss_churn'):.1%})",
                          f.loss_churn, b.centre("loss_churn"), b.spread("loss_churn")))
    return out


def rule_score(f: Features, b: Baseline) -> float:
    """The score without a trained model: grows with the suspicious files beyond the
    node's usual, weighted by their share of the changed files."""
    usual = b.usual_high("suspicious") if b.count else 0.0
    extra = max(0.0, f.suspicious - usual)
    share = f.suspicious_share
    notes = 2.0 if f.note_folders >= 3 and f.note_words >= 1 else 0.0
    t = math.log1p(extra) * (0.5 + 2.0 * share) + notes - 1.5
    return 1.0 / (1.0 + math.exp(-2.0 * t))


def judge(features: Features, baseline: Baseline, *, top: Sequence[FileSignals] = (),
          model: GlobalModel | None = None, use_shipped: bool = True,
          stream_alert: bool = False) -> Verdict:
    """The verdict on one snapshot. ``top``: the files most responsible
    (``Accumulator.top_files()``), listed in the details; ``model``: a global model, else the
    shipped one (``use_shipped``), else the rule score; ``stream_alert``: the streaming check
    already raised the alert during this backup."""
    m = model if model is not None else (load_default() if use_shipped else None)
    x = model_inputs(features, baseline)
    score = m.score(x) if m is not None else rule_score(features, baseline)
    reasons = _reasons(features, baseline)
    if stream_alert:
        score = max(score, ALERT)
    churn_only = any(r.code == "churn" for r in reasons)
    tier: Tier = "alert" if score >= ALERT else "suspect" if (
        score >= SUSPECT or churn_only) else "ok"
    words = [r.text for r in reasons]
    if stream_alert:
        words.insert(0, f"the alert was raised mid-backup after {int(features.suspicious)} "
                     "suspicious files")
    if not words:
        changes = int(features.added + features.changed + features.deleted + features.renamed)
        words = [f"nothing unusual: {changes} changed files, none of them suspicious"
                 if not features.suspicious else
                 f"{int(features.suspicious)} odd files, within this node's usual"]
        if tier != "ok":
            words = [f"the global model scores this pattern of change {score:.2f}"]
    details: dict[str, object] = {
        "reasons": [{"code": r.code, "text": r.text, "value": r.value, "usual": r.usual,
                     "spread": r.spread} for r in reasons],
        "features": features.as_dict(),
        "baseline": {"snapshots": baseline.count, "warm": baseline.warm},
        "model": m.version if m is not None else "rules",
        "contributions": m.contributions(x)[:5] if m is not None else [],
        "files": [{"path": s.path, "change": s.change, "score": s.score,
                   "signals": list(s.signals)} for s in top],
    }
    return Verdict(tier, float(score), words, details)


@dataclass(slots=True)
class StreamCheck:
    """The per-file online check a backup runs as it goes (see the module docstring)."""

    baseline: Baseline
    suspicious: int = 0
    alerted: bool = False
    first: list[str] = field(default_factory=list)  # the first suspicious paths

    @property
    def allowance(self) -> int:
        """Suspicious files a snapshot of this node may hold before the alert: its usual
        high (99th percentile) plus the margin, less what the last snapshots had beyond
        the usual (a slow attack spread over snapshots adds up), but never below
        :data:`STREAM_MIN_FILES`."""
        b = self.baseline
        return max(STREAM_MIN_FILES, math.ceil(b.usual_high("suspicious")) + STREAM_ALERT_FILES
                   - math.floor(history_excess(b)))

    def feed(self, signals: Sequence[FileSignals]) -> bool:
        """Count the signals ``Accumulator.add`` returned; True exactly once: when the
        alert should go out now."""
        for s in signals:
            if s.suspicious:
                self.suspicious += 1
                if len(self.first) < 10:
                    self.first.append(s.path)
        if not self.alerted and self.suspicious >= self.allowance:
            self.alerted = True
            return True
        return False
