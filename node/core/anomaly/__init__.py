"""The anomaly model (issue 14): notices ransomware-like change between snapshots.

Pure: bytes and numbers in, verdicts with reasons out. No clock, no files (the one
exception: :func:`load_default` reads the weights shipped in this package), numpy only.

How the node uses it (the interface; extended, never broken):

1. For each file the backup adds or changes, read the blocks
   ``sample_plan(size)`` names (offsets, lengths; the pipeline has the bytes already) and call
   ``probe(blocks) -> ContentProbe``. Keep ``probe.to_record()`` with the file (so the next
   backup knows the old version's format and entropy; ``ContentProbe.from_record``).
2. Make one ``FileObs`` per added / changed / deleted / renamed file (sizes, old and new
   probe, new-chunk raw and zstd-compressed bytes, share of old chunks kept, and for small
   files the content id) and feed it to an ``Accumulator(files_before, known_exts)``:
   ``acc.add(obs) -> list[FileSignals]``.
3. Streaming: ``check = StreamCheck(baseline)``; ``if check.feed(acc.add(obs)):`` raise the
   ``anomaly`` alert now (mid-backup; the backup goes on).
4. At the end: ``f = acc.features(hour=.., weekday=..)`` (local time of the snapshot),
   ``v = judge(f, baseline, top=acc.top_files(), stream_alert=check.alerted)``.
   ``v.verdict`` is ``"ok" | "suspect" | "alert"``, ``v.score`` in 0..1, ``v.reasons`` words;
   ``v.summary()`` is the backup summary's ``anomaly`` field; ``v.details`` the numbers behind
   each reason, the files most responsible, the features and the model's top inputs (for
   ``anomaly explain``; plain JSON-able values).
5. Learning: ``baseline.learn(f)`` after an ``ok`` or ``suspect`` verdict, and after
   ``anomaly ack`` of an alert; never for a standing alert. Persist with
   ``baseline.to_bytes()`` and ``Baseline.from_bytes(blob)``, which raises
   ``AnomalyStateError`` for a damaged or foreign blob (start ``Baseline()`` afresh then).

Decisions (and why):

- Per-file signals first (``observe.SIGNAL_WEIGHTS``: encrypted-looking, body encrypted
  with the header kept, intermittent, end-of-file structure lost (zip directory, PDF
  ``%%EOF``, PNG ``IEND``), base64 output, format lost, extension mismatch,
  entropy jump, renamed to a new extension, rewritten in place, incompressible); a file
  whose signals weigh 1 or more is *suspicious*. Snapshot features count them, so the
  model sees "how many files look attacked, beyond this node's usual", whatever the
  attack's trick.
- Compressed formats (zip/docx, pdf, jpeg, mp4, ...) are judged for randomness only
  against their own previous version: some codecs and every AES archive look random alone,
  and real deflate data looks random block by block (measured on the .gz files of a Debian
  system: every 4 KiB block, and a chi-square of 300-460 over 64 KiB), so intermittent
  encryption of such a file shows by its lost end-of-file structure, not by its blocks.
- Streaming: the alert goes out mid-backup after ``STREAM_ALERT_FILES`` suspicious files
  beyond the node's usual (fewer when the last snapshots already had some: a slow attack
  adds up), so with hourly snapshots a handful of attacked files are processed before the
  alert, not the whole hour's worth.
- The baseline is robust (median / MAD / 99th percentile over the last 2,000 snapshots)
  and never learns a standing alert; cold (under 12 snapshots) it leans on priors.

The global model (``model.py``, ``weights.json``) is trained by ``simulations/anomaly``:
``python -m corestate.simulations.anomaly --write``.
"""

from __future__ import annotations

from .baseline import WARM, AnomalyStateError, Baseline
from .features import (
    BLOCK,
    MAX_BLOCKS,
    ContentProbe,
    chi2,
    detect_magic,
    entropy,
    extension_agrees,
    looks_like_base64,
    looks_like_text,
    probe,
    sample_plan,
)
from .judge import ALERT, SUSPECT, Reason, StreamCheck, Tier, Verdict, judge, rule_score
from .model import INPUT_NAMES, GlobalModel, load_default, model_inputs
from .observe import (
    FEATURE_NAMES,
    SIGNAL_WEIGHTS,
    Accumulator,
    Features,
    FileObs,
    FileSignals,
    file_signals,
)

__all__ = [
    "ALERT", "BLOCK", "FEATURE_NAMES", "INPUT_NAMES", "MAX_BLOCKS", "SIGNAL_WEIGHTS",
    "SUSPECT", "WARM", "Accumulator", "AnomalyStateError", "Baseline", "ContentProbe",
    "Features", "FileObs", "FileSignals", "GlobalModel", "Reason", "StreamCheck", "Tier",
    "Verdict", "chi2", "detect_magic", "entropy", "extension_agrees", "file_signals",
    "judge", "load_default", "looks_like_base64", "looks_like_text", "model_inputs", "probe",
    "rule_score", "sample_plan",
]
