"""Per-file observations of one backup, and the accumulator that turns them into features.

The pipeline makes one :class:`FileObs` for each file it adds, changes, deletes or renames,
and feeds it to an :class:`Accumulator` as it goes. Each ``add`` returns the file's own
:class:`FileSignals` at once (the streaming check, :mod:`.judge`, counts them so an attack
can be stopped mid-backup); :meth:`Accumulator.features` gives the snapshot's
:class:`Features` at the end.

Renames: ransomware usually writes ``x.docx.locked`` and deletes ``x.docx``; the pipeline
sees a delete and an add. The accumulator pairs them itself (same folder, same stem or the
old name plus one more suffix), so the added file is judged against the deleted one's
:class:`~.features.ContentProbe`. A pipeline that knows a real rename (same content, new
path) reports it as ``renamed`` with ``old_path``.

Invariants: the accumulator never reads a clock or a file; ``features()`` may be called at
any point (mid-backup too) and does not change the state.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from typing import Literal

from .features import (
    BLOCK,
    BODY_MIN,
    COMPRESSED_TYPES,
    ENCRYPTED_EXTENSIONS,
    EXTENSION_TYPES,
    ContentProbe,
    extension_agrees,
)

Change = Literal["added", "changed", "deleted", "renamed"]

SMALL_TEXT = 64 * 1024  # a new text file at most this big may be a ransom note


def _split(path: str) -> tuple[str, str]:
    """``posixpath.split`` of a str path, inlined (it runs several times per changed file)."""
    i = path.rfind("/") + 1
    head, tail = path[:i], path[i:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def split_ext(path: str) -> tuple[str, str, str]:
    """(folder, stem, extension lower case without dot) of a slash path."""
    folder, name = _split(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return folder, name, ""
    return folder, stem, ext.lower()


@dataclass(frozen=True, slots=True)
class FileObs:
    """What the pipeline saw of one file in this backup.

    ``old`` is the probe kept from the previous version (None when unknown: the first backup,
    or a file backed up before the model existed); ``new`` the probe of this version (None
    for a deletion). ``new_bytes`` / ``new_compressed``: the raw and zstd-compressed size of
    the chunks this version added to the repository (the compression probe the pipeline
    runs anyway). ``kept_share``: the share of the old version's chunks the new one still
    has (None when unknown). ``content_id``: an id of the whole content of a small file (its
    one chunk id), used to find one note repeated across folders.
    """

    path: str
    change: Change
    size_old: int = 0
    size_new: int = 0
    old_path: str = ""
    old: ContentProbe | None = None
    new: ContentProbe | None = None
    new_bytes: int = 0
    new_compressed: int = 0
    kept_share: float | None = None
    content_id: bytes = b""


# Per-file signals: name -> weight. A file whose weights sum to at least 1 is "suspicious".
SIGNAL_WEIGHTS: dict[str, float] = {
    "encrypted-looking": 1.0,  # the sample is random like ciphertext, not like compression
    "body-encrypted": 1.0,     # the head is intact, the blocks after it look like ciphertext
    "trailer-lost": 1.0,       # the format's end-of-file structure (zip directory, %%EOF) went
    "magic-lost": 0.6,         # the old version had a known format, this one another/none
    "extension-mismatch": 0.6,  # the content's format is not what the extension says
    "intermittent": 1.0,       # a share of blocks look like ciphertext in a non-random type
    "base64-output": 1.0,      # the content (known before) turned into base64-looking text
    "entropy-jump": 0.4,       # entropy rose by more than 1 bit per byte
    "rewritten-in-place": 0.3,  # same size, every chunk new, in a type rarely edited in place
    "incompressible": 0.3,     # new chunks do not compress, in a type that usually does
    "renamed-extension": 0.4,  # a deleted file came back under the same stem, new extension
}
SUSPICIOUS = 1.0


@dataclass(frozen=True, slots=True)
class FileSignals:
    path: str
    change: Change
    signals: tuple[str, ...]
    score: float  # sum of the signals' weights

    @property
    def suspicious(self) -> bool:
        return self.score >= SUSPICIOUS


def _expected_type(ext: str) -> frozenset[str]:
    return EXTENSION_TYPES.get(ext, frozenset())


def file_signals(obs: FileObs, paired_old: ContentProbe | None = None,
                 renamed_ext: bool = False) -> FileSignals:
    """The signals of one added/changed/renamed file (a deletion has none)."""
    new = obs.new
    if obs.change == "deleted" or new is None or (new.sampled == 0 and obs.size_new == 0):
        # (an emptied file says nothing about its content)
        return FileSignals(obs.path, obs.change, (), 0.0)
    old = obs.old if obs.old is not None else paired_old
    ext = split_ext(obs.path)[2]
    expected = _expected_type(ext)
    compressed_type = bool(expected & COMPRESSED_TYPES) or new.magic in COMPRESSED_TYPES
    # Ciphertext by design (a password safe, a .gpg file) is no news, unless the file was
    # just renamed into such an extension.
    cipher_ok = ext in ENCRYPTED_EXTENSIONS and not renamed_ext
    was_random = old is not None and old.random_like
    out: list[str] = []
    # A compressed format is judged against its own previous version only: some codecs
    # (and every AES-encrypted archive) look random by themselves, and a small compressed
    # file cannot be told from ciphertext at all; an encryption that loses the header
    # shows anyway (magic-lost, extension-mismatch).
    judged_alone = not compressed_type or (old is not None and new.magic in expected
                                           and new.sampled >= BODY_MIN + BLOCK)
    if new.random_like and not cipher_ok and not was_random and judged_alone:
        out.append("encrypted-looking")
    if (not new.random_like and new.body_random and not cipher_ok
            and not (old is not None and old.body_random)
            and (not compressed_type or old is not None)):
        out.append("body-encrypted")
    if old is not None and ((old.magic and old.magic != new.magic
                             and extension_agrees(ext, new.magic) is not True)
                            or (old.text and not new.text)):
        # A new format the extension names (x.avi -> x.mp4, a transcode) is no loss; text
        # that stopped being text (its head kept) is.
        out.append("magic-lost")
    if (extension_agrees(ext, new.magic) is False and new.magic != "text") or (
            new.magic == "" and expected and new.entropy > 7.0):
        out.append("extension-mismatch")
    # Intermittent encryption: blocks of ciphertext between intact ones: the share of
    # random-looking blocks jumped against the old version (or, without one, is high in a
    # type whose blocks never look random).
    # Not in a compressed format: real deflate, JPEG or video blocks look random alone
    # (measured on real .gz files: all of their 4 KiB blocks do); there the end-of-file
    # structure (trailer-lost) and the other signals speak instead.
    if "encrypted-looking" not in out and not compressed_type and (
            (old is not None and new.random_blocks >= 0.25
             and new.random_blocks - old.random_blocks >= 0.2)
            or (old is None and not new.random_like and new.random_blocks >= 0.25
                and bool(expected))):
        out.append("intermittent")
    if old is not None and old.trailer == 1 and new.trailer == 0:
        out.append("trailer-lost")
    if new.base64 and old is not None and not old.base64:
        # Only a file that turned into base64 counts: new base64 files (keys, mail) are common.
        out.append("base64-output")
    if old is not None and new.entropy - old.entropy > 1.0:
        out.append("entropy-jump")
    if (obs.change == "changed" and obs.kept_share is not None and obs.kept_share < 0.05
            and obs.size_old > 0 and abs(obs.size_new - obs.size_old) <= 0.02 * obs.size_old
            and (compressed_type or "zip" in expected or "pdf" in expected)):
        out.append("rewritten-in-place")
    if (obs.new_bytes >= 4096 and obs.new_compressed >= 0.98 * obs.new_bytes
            and not compressed_type and new.magic not in COMPRESSED_TYPES):
        out.append("incompressible")
    if renamed_ext:
        out.append("renamed-extension")
    score = sum(SIGNAL_WEIGHTS[s] for s in out)
    return FileSignals(obs.path, obs.change, tuple(out), round(score, 3))


@dataclass(frozen=True, slots=True)
class Features:
    """One snapshot's features (named; :meth:`vector` in :data:`FEATURE_NAMES` order).

    Counts are of files; shares are 0..1; ``hour`` 0..23 and ``weekday`` 0 (Monday)..6 are
    the snapshot's local time.
    """

    files: float = 0.0          # files in the snapshot
    added: float = 0.0
    changed: float = 0.0
    deleted: float = 0.0
    renamed: float = 0.0
    churn: float = 0.0          # (added+changed+deleted+renamed) / files before
    loss_churn: float = 0.0     # (changed+deleted+renamed) / files before: additions aside
    bytes_log: float = 0.0      # log2(1 + bytes of new chunks)
    suspicious: float = 0.0     # files whose signals sum to >= 1
    suspicious_share: float = 0.0  # of the added+changed+renamed files
    encrypted_looking: float = 0.0
    body_encrypted: float = 0.0
    trailer_lost: float = 0.0
    magic_lost: float = 0.0
    extension_mismatch: float = 0.0
    intermittent: float = 0.0
    base64_output: float = 0.0
    entropy_jump: float = 0.0
    rewritten_in_place: float = 0.0
    incompressible: float = 0.0
    renamed_extension: float = 0.0
    new_ext_files: float = 0.0  # added files with an extension the tree did not have
    new_ext_top: float = 0.0    # the most files that took one new extension
    note_folders: float = 0.0   # most folders holding one identical new small text file
    note_words: float = 0.0     # ransom phrases in such a repeated text
    kept_share: float = 1.0     # mean share of old chunks kept by changed files
    compress_ratio: float = 0.0  # compressed/raw of the new chunks (1 = incompressible)
    hour: float = 0.0
    weekday: float = 0.0

    def vector(self) -> list[float]:
        return [float(getattr(self, n)) for n in FEATURE_NAMES]

    def as_dict(self) -> dict[str, float]:
        return {n: float(getattr(self, n)) for n in FEATURE_NAMES}


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Features))
_SIGNAL_FIELD = {s: s.replace("-", "_") for s in SIGNAL_WEIGHTS}
_SIGNAL_FIELD["base64-output"] = "base64_output"


@dataclass(slots=True)
class Accumulator:
    """Collects one backup's observations. ``files_before``: files in the parent snapshot;
    ``known_exts``: the extensions the parent snapshot had (lower case, no dot)."""

    files_before: int = 0
    known_exts: frozenset[str] = frozenset()
    counts: Counter[str] = field(default_factory=Counter)
    signal_counts: Counter[str] = field(default_factory=Counter)
    suspicious_files: int = 0
    new_bytes: int = 0
    new_compressed: int = 0
    kept_sum: float = 0.0
    kept_n: int = 0
    new_exts: Counter[str] = field(default_factory=Counter)
    notes: dict[tuple[str, bytes], set[str]] = field(default_factory=lambda: defaultdict(set))
    note_words_of: dict[tuple[str, bytes], int] = field(default_factory=dict)
    signals: list[FileSignals] = field(default_factory=list)  # every file with a signal
    _deleted: dict[tuple[str, str], ContentProbe | None] = field(default_factory=dict)
    _added: dict[tuple[str, str], FileObs] = field(default_factory=dict)
    _paired: set[str] = field(default_factory=set)

    # -- feeding --

    def add(self, obs: FileObs) -> list[FileSignals]:
        """Record one file; return the signals judged now (the file's own, and those of an
        added file that this deletion pairs with as a rename), empty for a quiet file."""
        self.counts[obs.change] += 1
        self.new_bytes += obs.new_bytes
        self.new_compressed += obs.new_compressed
        out: list[FileSignals] = []
        if obs.change == "deleted":
            keys = _stem_keys(obs.path)
            for key in keys:
                self._deleted.setdefault(key, obs.old)
            # An added file already seen may be the renamed copy of this one.
            for key in keys:
                added = self._added.pop(key, None)
                if added is not None and added.path not in self._paired:
                    self._paired.add(added.path)
                    # Its own signals were counted already; count the rename's extra ones.
                    extra = self._judge(added, obs.old, True, recount_of=added.path)
                    if extra is not None:
                        out.append(extra)
            return out
        folder, stem, ext = split_ext(obs.path)
        if obs.change == "changed" and obs.kept_share is not None:
            self.kept_sum += obs.kept_share
            self.kept_n += 1
        if obs.change in ("added", "renamed") and ext and ext not in self.known_exts:
            self.new_exts[ext] += 1
        if (obs.change == "added" and obs.new is not None and obs.new.text
                and obs.size_new <= SMALL_TEXT):
            note = (posixpath.basename(obs.path), obs.content_id)
            self.notes[note].add(folder)
            self.note_words_of[note] = max(self.note_words_of.get(note, 0), obs.new.note_words)
        paired_old: ContentProbe | None = None
        renamed_ext = False
        if obs.change == "added":
            for key in _pair_keys(obs.path):
                if key in self._deleted:
                    paired_old = self._deleted[key]
                    renamed_ext = True
                    self._paired.add(obs.path)
                    break
            else:
                for key in _pair_keys(obs.path):
                    self._added.setdefault(key, obs)
        elif obs.change == "renamed" and obs.old_path:
            renamed_ext = split_ext(obs.old_path)[2] != ext and \
                split_ext(obs.old_path)[1] in (stem, stem.rpartition(".")[0])
        sig = self._judge(obs, paired_old, renamed_ext)
        if sig is not None:
            out.append(sig)
        return out

    def _judge(self, obs: FileObs, paired_old: ContentProbe | None, renamed_ext: bool,
               recount_of: str | None = None) -> FileSignals | None:
        sig = file_signals(obs, paired_old, renamed_ext)
        if recount_of is not None:
            # Replace the earlier judgement of this file.
            for i, s in enumerate(self.signals):
                if s.path == recount_of:
                    for name in s.signals:
                        self.signal_counts[name] -= 1
                    if s.suspicious:
                        self.suspicious_files -= 1
                    del self.signals[i]
                    break
        if not sig.signals:
            return None
        for name in sig.signals:
            self.signal_counts[name] += 1
        if sig.suspicious:
            self.suspicious_files += 1
        self.signals.append(sig)
        return sig

    # -- reading --

    def top_files(self, n: int = 10) -> list[FileSignals]:
        """The files most responsible (highest score first, then path)."""
        return sorted(self.signals, key=lambda s: (-s.score, s.path))[:n]

    def features(self, *, hour: int = 0, weekday: int = 0) -> Features:
        c = self.counts
        touched = c["added"] + c["changed"] + c["renamed"]
        files = max(0, self.files_before + c["added"] - c["deleted"])
        note_key = max(self.notes, key=lambda k: (len(self.notes[k]), k[0]), default=None)
        note_folders = len(self.notes[note_key]) if note_key is not None else 0
        sc = self.signal_counts
        return Features(
            files=float(files),
            added=float(c["added"]), changed=float(c["changed"]),
            deleted=float(c["deleted"]), renamed=float(c["renamed"]),
            churn=(touched + c["deleted"]) / max(1, self.files_before),
            loss_churn=(c["changed"] + c["deleted"] + c["renamed"]) / max(1, self.files_before),
            bytes_log=math.log2(1 + self.new_bytes),
            suspicious=float(self.suspicious_files),
            suspicious_share=self.suspicious_files / max(1, touched),
            **{_SIGNAL_FIELD[s]: float(sc[s]) for s in SIGNAL_WEIGHTS},
            new_ext_files=float(sum(self.new_exts.values())),
            new_ext_top=float(max(self.new_exts.values(), default=0)),
            note_folders=float(note_folders if note_folders >= 2 else 0),
            note_words=float(self.note_words_of.get(note_key, 0)
                             if note_key is not None and note_folders >= 2 else 0),
            kept_share=self.kept_sum / self.kept_n if self.kept_n else 1.0,
            compress_ratio=self.new_compressed / self.new_bytes if self.new_bytes else 0.0,
            hour=float(hour), weekday=float(weekday),
        )


def _stem_keys(path: str) -> list[tuple[str, str]]:
    """Keys a deleted file is known by: (folder, full name) and (folder, stem)."""
    folder, name = _split(path)
    stem = split_ext(path)[1]
    return [(folder, name), (folder, stem)] if stem != name else [(folder, name)]


def _pair_keys(path: str) -> list[tuple[str, str]]:
    """Keys an added file may match a deletion by: its name minus the last suffix
    (``x.docx.locked`` -> ``x.docx``), then its stem (``x.enc`` <- ``x.docx``)."""
    folder, name = _split(path)
    base, dot, _ = name.rpartition(".")
    if not dot or not base:
        return []
    keys = [(folder, base)]
    return keys
