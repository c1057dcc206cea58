"""The per-node baseline: what this node's snapshots usually look like, learnt online.

It keeps the features of the last :data:`WINDOW` snapshots (a ring) and answers, per
feature, a robust centre and spread (median and MAD scaled to a normal sigma). The judge
compares a snapshot with it: "412 files look encrypted; this node's usual is 0 (spread 0)".
With fewer than :data:`WARM` snapshots the baseline is *cold*: it answers the priors of
:data:`PRIOR_SPREAD` blended in, so a young node neither alerts on its first big import
nor learns to shrug at anything.

Learning: the node calls :meth:`Baseline.learn` with the features of every snapshot whose
verdict was ``ok`` or ``suspect`` (and of an alert the user acknowledged: an expected change
teaches the baseline). An alert that stands is never learnt.

State: :meth:`Baseline.to_bytes` / :meth:`Baseline.from_bytes`, a versioned blob with a
checksum. A damaged, truncated or foreign blob raises :class:`AnomalyStateError`; the node
then starts a fresh baseline (and says so) rather than fail a backup.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

import numpy as np

from corestate.errors import CoreStateError

from .observe import FEATURE_NAMES, Features

MAGIC = b"CSANB"   # CoreState anomaly baseline
VERSION = 1
WINDOW = 2000      # snapshots remembered (about 12 weeks of hourly backups)
WARM = 12          # below this many snapshots the baseline is cold

# Spread assumed for a feature before the node has history (and never less than this once
# it has): counts of odd files are rare, churn varies.
PRIOR_SPREAD: dict[str, float] = {
    "added": 20.0, "changed": 20.0, "deleted": 20.0, "renamed": 5.0, "churn": 0.02,
    "loss_churn": 0.02,
    "bytes_log": 3.0,
}
MIN_SPREAD = 1.0


def median(a: np.ndarray) -> float:
    """``float(np.median(a))`` of a 1-D array, to the last bit, without ``np.median``: its NaN
    check imports ``numpy.ma`` on first use (about 50 ms, which a CLI pays on every backup).
    Same steps as numpy's: partition around the middle (and the last place, where a NaN
    sorts), the mean of the one or two middle values in the array's dtype; NaN if any."""
    n = a.size
    if n == 0:
        return float("nan")
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(a, [lo, hi, n - 1])
    if np.isnan(part[-1]):
        return float("nan")
    return float(np.mean(part[lo:hi + 1]))


def percentile(a: np.ndarray, q: float) -> float:
    """``float(np.percentile(a, q))`` (the default linear method) of a 1-D array, to the
    last bit, without ``np.percentile`` (which imports ``numpy.ma`` too, via ``np.unique``):
    the two neighbours of the virtual index ``(n - 1) * q / 100`` by partition, then
    numpy's lerp in the array's dtype (from the far end when the weight is >= 0.5)."""
    n = a.size
    if n == 0:
        return float("nan")
    at = (n - 1) * (q / 100.0)
    lo = min(max(int(np.floor(at)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(a, [0, lo, hi, n - 1])
    if np.isnan(part[-1]):
        return float("nan")
    t = at - lo
    below, above = part[lo], part[hi]
    diff = above - below
    return float(above - diff * (1 - t) if t >= 0.5 else below + diff * t)


class AnomalyStateError(CoreStateError):
    """The saved anomaly state cannot be read (damaged, truncated, another version or
    another kind of file). The node starts a fresh baseline."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the anomaly model's saved state is unreadable: {reason}",
            hint="nothing to do: the node starts a fresh baseline and learns again "
            "(its first dozen snapshots are judged by the global model alone)",
        )
        self.reason = reason


@dataclass(slots=True)
class Baseline:
    """Ring of the last WINDOW snapshots' feature vectors (FEATURE_NAMES order)."""

    names: tuple[str, ...] = FEATURE_NAMES
    ring: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURE_NAMES)),
                                                              dtype=np.float32))
    learnt: int = 0  # snapshots learnt in all (the ring holds the last WINDOW)
    # Per-column statistics of ``ring`` (median, MAD, 99th percentile), computed once: a
    # backup asks for them many times (judge, model inputs, the streaming bar) and the ring
    # does not change during one. Valid while ``_stats_of`` is the ring object itself
    # (``learn`` replaces the ring; the ring is never written in place).
    _stats: dict[tuple[str, str], float] = field(default_factory=dict, compare=False, repr=False)
    _stats_of: object = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return int(self.ring.shape[0])

    @property
    def warm(self) -> bool:
        return self.count >= WARM

    def learn(self, features: Features) -> None:
        row = np.asarray([features.vector()], dtype=np.float32)
        self.ring = np.concatenate([self.ring, row])[-WINDOW:]
        self.learnt += 1

    def column(self, name: str) -> np.ndarray:
        return self.ring[:, self.names.index(name)]

    def _stat(self, kind: str, name: str) -> float:
        """``kind`` of a non-empty column: ``median``, ``mad`` (unscaled median absolute
        deviation) or ``p99`` (``np.percentile(col, 99)``), cached (see ``_stats``)."""
        if self._stats_of is not self.ring:
            self._stats = {}
            self._stats_of = self.ring
        key = (kind, name)
        v = self._stats.get(key)
        if v is None:
            col = self.column(name)
            if kind == "median":
                v = median(col)
            elif kind == "mad":
                v = median(np.abs(col - self._stat("median", name)))
            else:
                v = percentile(col, 99)
            self._stats[key] = v
        return v

    def centre(self, name: str) -> float:
        return self._stat("median", name) if self.count else 0.0

    def mad(self, name: str) -> float:
        """Median absolute deviation of a feature (unscaled), 0 when new."""
        return self._stat("mad", name) if self.count else 0.0

    def spread(self, name: str) -> float:
        """Robust sigma (1.4826 x MAD), never below the prior's floor; cold baselines
        blend in the prior spread."""
        prior = PRIOR_SPREAD.get(name, MIN_SPREAD)
        size = self.count
        if size == 0:
            return prior
        mad = 1.4826 * self.mad(name)
        if size < WARM:
            w = size / WARM
            return max(MIN_SPREAD if name not in PRIOR_SPREAD else prior / 10,
                       w * mad + (1 - w) * prior)
        floor = MIN_SPREAD if name not in PRIOR_SPREAD else prior / 10
        return max(floor, mad)

    def usual_max(self, name: str) -> float:
        """The most this node has seen of a feature (its history's maximum), 0 when new."""
        col = self.column(name)
        return float(col.max()) if col.size else 0.0

    def usual_high(self, name: str) -> float:
        """The 99th percentile of a feature in this node's history (0 when new): a
        snapshot or two that went wrong once do not raise the bar for ever."""
        return self._stat("p99", name) if self.count else 0.0

    def z(self, name: str, value: float) -> float:
        """Robust z-score of a value against this node's history."""
        return (value - self.centre(name)) / self.spread(name)

    # -- state --

    def to_bytes(self) -> bytes:
        header = json.dumps({"names": list(self.names), "learnt": self.learnt,
                             "rows": self.count}, separators=(",", ":")).encode()
        body = struct.pack(">BI", VERSION, len(header)) + header + \
            self.ring.astype(">f4").tobytes()
        return MAGIC + body + hashlib.blake2b(body, digest_size=16).digest()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Baseline:
        if len(blob) < len(MAGIC) + 5 + 16 or not blob.startswith(MAGIC):
            raise AnomalyStateError("not an anomaly baseline (wrong header)")
        body, check = blob[len(MAGIC):-16], blob[-16:]
        if hashlib.blake2b(body, digest_size=16).digest() != check:
            raise AnomalyStateError("checksum mismatch (the file is damaged)")
        version, hlen = struct.unpack(">BI", body[:5])
        if version != VERSION:
            raise AnomalyStateError(f"version {version}, this node reads {VERSION}")
        try:
            header = json.loads(body[5:5 + hlen])
            names = tuple(header["names"])
            rows = int(header["rows"])
            learnt = int(header["learnt"])
        except (ValueError, KeyError, TypeError) as e:
            raise AnomalyStateError(f"bad header ({e})")
        data = body[5 + hlen:]
        if len(data) != rows * len(names) * 4:
            raise AnomalyStateError("truncated")
        ring = np.frombuffer(data, dtype=">f4").reshape(rows, len(names)).astype(np.float32)
        if names != FEATURE_NAMES:
            # Features added by a newer model: keep the known columns, zeros elsewhere.
            out = np.zeros((rows, len(FEATURE_NAMES)), dtype=np.float32)
            for i, n in enumerate(FEATURE_NAMES):
                if n in names:
                    out[:, i] = ring[:, names.index(n)]
            ring = out
        return cls(FEATURE_NAMES, ring, learnt)
