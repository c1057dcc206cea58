"""The small global model: logistic regression over a snapshot's features, seen against the
node's baseline.

:func:`model_inputs` turns (features, baseline) into the model's input vector (names in
:data:`INPUT_NAMES`): mostly the *excess* of each per-file signal over what this node
usually shows, on a log scale, and a few shares. :class:`GlobalModel` holds the weights and
scores an input vector to a probability that the snapshot shows an attack.

The weights are trained by ``simulations/anomaly`` on its synthetic corpus and shipped as
``weights.json`` in this package (a few hundred bytes, versioned: :data:`MODEL_FORMAT`
names the input layout; a weights file for another layout is refused). Reading the shipped
file is the one resource this pure package touches (:func:`load_default`, cached); callers
may pass their own :class:`GlobalModel` instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .baseline import AnomalyStateError, Baseline
from .observe import Features

MODEL_FORMAT = 3

# Only the strong per-file signals get inputs of their own (each says "this content became
# ciphertext-like or lost its format"); the weak ones (a rename, an entropy rise, a file
# rewritten whole) count only through the suspicious-file totals. Leave-one-family-out
# showed why: given them one by one, the model learnt a rename to a new extension as an
# attack and alerted on a media transcode it had not seen.
STRONG_SIGNALS: tuple[str, ...] = ("encrypted_looking", "body_encrypted", "intermittent",
                                   "base64_output", "magic_lost", "extension_mismatch",
                                   "trailer_lost")

INPUT_NAMES: tuple[str, ...] = (
    "suspicious_excess_log",
    "suspicious_share",
    "suspicious_pct_of_tree",
    "recent_suspicious_excess_log",
    *(f"{f}_excess_log" for f in STRONG_SIGNALS),
    "ransom_notes_log",
)


def excess(features: Features, baseline: Baseline, name: str) -> float:
    """How far a count stands above this node's usual (median + 2 MAD; 0 when new)."""
    x = float(getattr(features, name))
    if not baseline.count:
        return x
    return max(0.0, x - baseline.centre(name) - 2.0 * baseline.mad(name))


RECENT = 2  # earlier snapshots a slow (throttled) attack is summed over


def recent_excess(features: Features, baseline: Baseline) -> float:
    """Suspicious files beyond the usual in this snapshot and the RECENT before it: a slow
    attack that stays under the bar in each snapshot adds up here. (The earlier snapshots are
    in the baseline only if they were learnt: ok and suspect verdicts are.)"""
    return excess(features, baseline, "suspicious") + history_excess(baseline)


def history_excess(baseline: Baseline) -> float:
    """Suspicious files beyond the usual in the RECENT last snapshots of the baseline."""
    if baseline.count <= RECENT:
        return 0.0
    col = baseline.column("suspicious")
    med, mad = baseline.centre("suspicious"), baseline.mad("suspicious")
    return float(np.clip(col[-RECENT:] - med - 2.0 * mad, 0.0, None).sum())


def model_inputs(features: Features, baseline: Baseline) -> np.ndarray:
    f = features
    row = [
        math.log1p(excess(f, baseline, "suspicious")),
        f.suspicious_share,
        100.0 * f.suspicious / max(1.0, f.files),
        math.log1p(recent_excess(f, baseline)),
        *(math.log1p(excess(f, baseline, name)) for name in STRONG_SIGNALS),
        # one small text with ransom-note words, repeated across folders
        math.log1p(f.note_folders) if f.note_words >= 1 else 0.0,
    ]
    return np.asarray(row, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class GlobalModel:
    """Logistic regression: p = sigmoid(w . (x - mean) / scale + b)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    version: str = "untrained"

    def logit(self, x: np.ndarray) -> float:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(np.dot(np.asarray(self.weights), z) + self.bias)

    def score(self, x: np.ndarray) -> float:
        t = self.logit(x)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, t))))

    def contributions(self, x: np.ndarray) -> list[tuple[str, float]]:
        """Each input's share of the logit, largest first (for explain)."""
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        parts = np.asarray(self.weights) * z
        order = np.argsort(-parts)
        return [(INPUT_NAMES[i], float(parts[i])) for i in order]

    def to_json(self) -> str:
        return json.dumps({"format": MODEL_FORMAT, "version": self.version,
                           "inputs": list(INPUT_NAMES), "weights": list(self.weights),
                           "bias": self.bias, "mean": list(self.mean),
                           "scale": list(self.scale)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GlobalModel:
        try:
            d = json.loads(text)
            if d.get("format") != MODEL_FORMAT or tuple(d["inputs"]) != INPUT_NAMES:
                raise AnomalyStateError(
                    f"model weights of format {d.get('format')}, this code reads {MODEL_FORMAT}")
            n = len(INPUT_NAMES)
            w, m, s = (tuple(float(v) for v in d[k]) for k in ("weights", "mean", "scale"))
            if not (len(w) == len(m) == len(s) == n) or min(s) <= 0:
                raise AnomalyStateError("model weights of the wrong shape")
            return cls(w, float(d["bias"]), m, s, str(d.get("version", "")))
        except (ValueError, KeyError, TypeError) as e:
            raise AnomalyStateError(f"unreadable model weights ({e})")


@lru_cache(maxsize=1)
def load_default() -> GlobalModel | None:
    """The model shipped in the package (``weights.json``), or None when none is shipped."""
    res = resources.files(__package__).joinpath("weights.json")
    if not res.is_file():
        return None
    return GlobalModel.from_json(res.read_text())
