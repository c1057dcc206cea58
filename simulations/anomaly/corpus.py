"""Synthetic nodes: a tree of files, its benign hourly churn, the benign hard cases and the
attack families of issue 14, each turned into the per-file observations the backup pipeline
makes (:class:`corestate.node.core.anomaly.FileObs`), in the pipeline's walk order.

Every probe is the node's own :func:`~corestate.node.core.anomaly.probe` run on the bytes
:func:`~corestate.node.core.anomaly.sample_plan` names, built by :mod:`.content`; the
compressibility of new chunks is a real zstd run on those bytes; the share of old chunks
kept follows the pipeline's 1 MiB average chunks.

A :class:`Tree` is copy-on-write (a dict of immutable :class:`File`), so one node's history
can be forked into many cases cheaply.

Limits (what the numbers of this corpus cannot say): JPEG and video bodies are imitations
(zlib with JPEG byte stuffing, zstd with H.264 emulation prevention), more skewed than some
real codecs may be; the attacker does not know the model (it encrypts 5% of the files in
an hour, or 1% per hour, never 2 files an hour); ciphertext comes from a PRNG; ransom notes
are in English; and no benign case encrypts the user's own documents into new files (a
user running ``gpg`` over a folder would be, rightly, indistinguishable: ``anomaly ack``).
"""

from __future__ import annotations

import math
import posixpath
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import zstandard
from corestate.node.core import anomaly as an

from .content import UNIT, Content, Overlay, sampled_blocks

CHUNK = 1 << 20  # the pipeline's average chunk size
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# extension -> (content kind, median size, spread (log-normal sigma))
EXTS: dict[str, tuple[str, float, float]] = {
    "txt": ("prose", 6 * KiB, 1.2), "md": ("prose", 5 * KiB, 1.0),
    "py": ("code", 8 * KiB, 1.0), "c": ("code", 12 * KiB, 1.0), "js": ("code", 10 * KiB, 1.2),
    "sh": ("code", 2 * KiB, 0.8), "csv": ("csv", 60 * KiB, 1.5), "log": ("log", 400 * KiB, 1.5),
    "json": ("json", 8 * KiB, 1.3), "yaml": ("json", 2 * KiB, 0.8),
    "docx": ("zip", 80 * KiB, 1.0), "xlsx": ("zip", 60 * KiB, 1.0), "pptx": ("zip", 2 * MiB, 1.0),
    "odt": ("zip", 40 * KiB, 1.0), "zip": ("zip", 5 * MiB, 1.5), "epub": ("zip", 1 * MiB, 0.8),
    "pdf": ("pdf", 400 * KiB, 1.3), "png": ("png", 300 * KiB, 1.3),
    "jpg": ("jpeg", 2.5 * MiB, 0.7), "jpeg": ("jpeg", 2 * MiB, 0.7), "heic": ("heic", 2 * MiB, 0.5),
    "cr2": ("raw-photo", 25 * MiB, 0.3), "mp4": ("mp4", 80 * MiB, 1.3), "mov": ("mp4", 60 * MiB, 1.3),
    "mkv": ("mkv", 700 * MiB, 0.8), "avi": ("avi", 400 * MiB, 0.8), "mp3": ("mp3", 5 * MiB, 0.5), "ogg": ("ogg", 4 * MiB, 0.5),
    "gz": ("gzip", 3 * MiB, 1.5), "zst": ("zstd", 20 * MiB, 1.5),
    "sqlite": ("sqlite", 4 * MiB, 1.5), "db": ("sqlite", 2 * MiB, 1.5),
    "qcow2": ("vm", 12 * GiB, 0.6), "img": ("vm-raw", 8 * GiB, 0.5),
    "so": ("elf", 800 * KiB, 1.2), "pyc": ("pyc", 20 * KiB, 1.0),
    "pack": ("git-pack", 30 * MiB, 1.2), "idx": ("git-idx", 800 * KiB, 1.2), "": ("loose", 3 * KiB, 1.0),
    "kdbx": ("kdbx", 200 * KiB, 0.5),
}

# Folders of a home tree: (folder, extension weights)
LAYOUT: tuple[tuple[str, dict[str, float]], ...] = (
    ("Documents", {"txt": 3, "md": 2, "docx": 4, "xlsx": 2, "pptx": 0.5, "odt": 0.5,
                   "pdf": 4, "csv": 1, "zip": 0.3}),
    ("Pictures", {"jpg": 8, "png": 2, "heic": 2}),
    ("Music", {"mp3": 1}),
    ("Videos", {"mp4": 2, "mkv": 0.5, "avi": 0.3, "mov": 0.5}),
    ("src/project", {"py": 6, "c": 2, "js": 2, "sh": 0.5, "json": 1, "yaml": 0.5, "md": 0.5}),
    ("src/project/.git/objects", {"": 10, "pack": 0.2, "idx": 0.2}),
    (".local/lib/venv", {"py": 6, "pyc": 4, "so": 0.5, "txt": 0.3}),
    ("var/log", {"log": 1, "gz": 0.5}),
    (".mozilla", {"sqlite": 1, "json": 0.5}),
    ("vms", {"qcow2": 1, "img": 0.2}),
    ("Backups", {"zst": 1, "zip": 0.5}),
    ("secrets", {"kdbx": 1}),
)
# Relative size of each folder (files).
FOLDER_SHARE = (0.22, 0.2, 0.05, 0.01, 0.16, 0.12, 0.15, 0.02, 0.01, 0.002, 0.005, 0.002)

NOTE_TEXT = (
    b"YOUR FILES ARE ENCRYPTED!\n\nAll your documents, photos and databases were "
    b"encrypted with a strong algorithm. To decrypt them you need the private key.\n"
    b"Send 0.05 bitcoin (BTC) to the wallet below and mail us your ID. Use the Tor Browser "
    b"to reach our .onion site. Do not try to restore your files yourself.\n")
NOTE_NAMES = ("HOW_TO_DECRYPT.txt", "README_RESTORE_FILES.txt", "!!!READ_ME!!!.txt",
              "RECOVER-FILES.html", "_readme.txt")

_ZSTD = zstandard.ZstdCompressor(level=3)


@dataclass(frozen=True, slots=True)
class File:
    path: str
    content: Content
    probe: an.ContentProbe | None = None  # of the current content, once computed


def ext_of(path: str) -> str:
    return an.observe.split_ext(path)[2] if "." in posixpath.basename(path) else ""


def probe_of(c: Content) -> tuple[an.ContentProbe, float]:
    """The probe of a content and the zstd ratio of its sampled bytes."""
    blocks = sampled_blocks(c, an.sample_plan(c.size if c.literal is None else len(c.literal)))
    joined = b"".join(blocks)
    ratio = len(_ZSTD.compress(joined)) / len(joined) if joined else 0.0
    return an.probe(blocks), min(1.05, ratio)


class Bag:
    """A list with O(1) add and remove and a deterministic order (sets of str are not,
    across runs), for picking files at random."""

    __slots__ = ("items", "pos")

    def __init__(self, items: list[str] | None = None) -> None:
        self.items: list[str] = list(items or [])
        self.pos = {p: i for i, p in enumerate(self.items)}

    def add(self, p: str) -> None:
        if p not in self.pos:
            self.pos[p] = len(self.items)
            self.items.append(p)

    def remove(self, p: str) -> None:
        i = self.pos.pop(p, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def copy(self) -> Bag:
        return Bag(self.items)


def category(path: str) -> str:
    """The index a file is kept in, for the churn to find it fast."""
    ext = ext_of(path)
    if ext == "log":
        return "log"
    if ext in ("sqlite", "db"):
        return "db"
    if ext in ("kdbx", "qcow2", "img", "avi", "mkv", "mov", "mp3"):
        return ext
    if path.startswith("src/project/.git/objects/") and not ext:
        return "loose"
    if path.startswith(".local/"):
        return "venv"
    if path.startswith(("Documents/", "src/project/d")):
        return "docs"
    if path.startswith(("Pictures/", "Downloads/")):
        return "pictures"
    return "other"


@dataclass(slots=True)
class Tree:
    files: dict[str, File]
    rng: random.Random
    seed_counter: int = 1
    index: dict[str, Bag] = field(default_factory=dict)
    ext_count: dict[str, int] = field(default_factory=dict)

    def fork(self, seed: int) -> Tree:
        return Tree(dict(self.files), random.Random(seed), self.seed_counter + 1_000_000,
                    {k: b.copy() for k, b in self.index.items()}, dict(self.ext_count))

    def new_seed(self) -> int:
        self.seed_counter += 1
        return self.rng.getrandbits(48) ^ self.seed_counter

    def put(self, f: File) -> None:
        if f.path not in self.files:
            self.index.setdefault(category(f.path), Bag()).add(f.path)
            e = ext_of(f.path)
            self.ext_count[e] = self.ext_count.get(e, 0) + 1
        self.files[f.path] = f

    def remove(self, path: str) -> File:
        f = self.files.pop(path)
        self.index[category(path)].remove(path)
        e = ext_of(path)
        self.ext_count[e] -= 1
        if not self.ext_count[e]:
            del self.ext_count[e]
        return f

    def cat(self, name: str) -> list[str]:
        b = self.index.get(name)
        return b.items if b is not None else []

    def exts(self) -> frozenset[str]:
        return frozenset(self.ext_count)

    def known_probe(self, f: File) -> an.ContentProbe:
        if f.probe is None:
            p, _ = probe_of(f.content)
            f = replace(f, probe=p)
            self.files[f.path] = f
        assert f.probe is not None
        return f.probe


def new_content(rng: random.Random, ext: str, seed: int, size: int | None = None) -> Content:
    kind, median, sigma = EXTS.get(ext, ("prose", 4 * KiB, 1.0))
    if size is None:
        size = int(max(64, min(64 * GiB, median * math.exp(rng.gauss(0, sigma)))))
    return Content(kind, seed, size)


def make_tree(seed: int, n_files: int) -> Tree:
    rng = random.Random(seed)
    t = Tree({}, rng)
    for (folder, exts), share in zip(LAYOUT, FOLDER_SHARE, strict=True):
        count = max(1, round(n_files * share * rng.uniform(0.5, 1.5)))
        names, weights = list(exts), list(exts.values())
        subdirs = max(1, count // rng.randrange(8, 40))
        for i in range(count):
            ext = rng.choices(names, weights)[0]
            sub = f"{folder}/d{rng.randrange(subdirs)}"
            name = f"f{i:05d}" + (f".{ext}" if ext else "")
            path = f"{sub}/{name}"
            t.put(File(path, new_content(rng, ext, t.new_seed())))
    return t


# -- observations --

@dataclass(slots=True)
class Snapshot:
    """One backup's observations, in walk order, with the ground truth."""

    obs: list[an.FileObs] = field(default_factory=list)
    attacked: dict[str, str] = field(default_factory=dict)  # obs path -> attacked file id
    files_before: int = 0
    known_exts: frozenset[str] = frozenset()

    def sort(self) -> None:
        self.obs.sort(key=lambda o: (o.path, o.change != "deleted"))


def _touched_chunks(size: int, ranges: list[tuple[int, int]] | None) -> tuple[float, int]:
    """(share of old chunks kept, bytes of new chunks) for a change of ``ranges``."""
    n = max(1, math.ceil(size / CHUNK))
    if ranges is None:
        return 0.0, size
    touched: set[int] = set()
    for a, b in ranges:
        touched.update(range(a // CHUNK, min(n, (max(a, b - 1)) // CHUNK + 1)))
    touched = {c for c in touched if c < n} or {n - 1}
    return 1.0 - len(touched) / n, min(size, len(touched) * CHUNK)


class Recorder:
    """Applies operations to a tree and records the observations of one snapshot."""

    def __init__(self, tree: Tree) -> None:
        self.t = tree
        self.snap = Snapshot(files_before=len(tree.files), known_exts=tree.exts())

    def _new_obs(self, path: str, change: str, c: Content, old: File | None,
                 ranges: list[tuple[int, int]] | None, target: str | None,
                 old_path: str = "") -> None:
        p, ratio = probe_of(c)
        size = c.size if c.literal is None else len(c.literal)
        kept, new_bytes = (None, size) if old is None else _touched_chunks(size, ranges)
        obs = an.FileObs(
            path=path, change=change, old_path=old_path,
            size_old=old.content.size if old else 0, size_new=size,
            old=self.t.known_probe(old) if old is not None else None, new=p,
            new_bytes=new_bytes, new_compressed=round(new_bytes * ratio),
            kept_share=kept,
            content_id=(c.literal[:32] if c.literal is not None else
                        c.seed.to_bytes(8, "little")) if size <= 64 * KiB else b"",
        )
        self.snap.obs.append(obs)
        self.t.put(File(path, c, p))
        if target is not None:
            self.snap.attacked[path] = target

    def add(self, path: str, c: Content, target: str | None = None) -> None:
        self._new_obs(path, "added", c, None, None, target)

    def change(self, path: str, c: Content, ranges: list[tuple[int, int]] | None,
               target: str | None = None) -> None:
        old = self.t.files[path]
        self._new_obs(path, "changed", c, old, ranges, target)

    def delete(self, path: str, target: str | None = None) -> None:
        probe = self.t.known_probe(self.t.files[path])
        old = self.t.remove(path)
        self.snap.obs.append(an.FileObs(path=path, change="deleted",
                                        size_old=old.content.size, old=probe))
        if target is not None:
            self.snap.attacked[path] = target

    def rename(self, old_path: str, new_path: str) -> None:
        """A rename the pipeline recognises (same content, new path)."""
        probe = self.t.known_probe(self.t.files[old_path])
        f = self.t.remove(old_path)
        self.snap.obs.append(an.FileObs(path=new_path, change="renamed", old_path=old_path,
                                        size_old=f.content.size, size_new=f.content.size,
                                        old=probe, new=probe, kept_share=1.0))
        self.t.put(File(new_path, f.content, probe))

    def done(self) -> Snapshot:
        self.snap.sort()
        return self.snap


def _pick(t: Tree, rng: random.Random, pred: Callable[[str], bool], k: int) -> list[str]:
    pool = [p for p in t.files if pred(p)]
    rng.shuffle(pool)
    return pool[:k]


def _folder(path: str) -> str:
    return posixpath.dirname(path)


# -- benign: the ordinary hour --

def hourly_rate(hour: int, weekday: int) -> float:
    if weekday < 5 and 9 <= hour < 18:
        return 6.0
    if 7 <= hour < 23:
        return 2.5
    return 0.3


def ordinary_hour(r: Recorder, rng: random.Random, hour: int, weekday: int) -> None:
    """A home folder's hourly churn: edits, re-saved office files, downloads, deletions,
    logs growing, browser databases' page writes, a git commit now and then."""
    t = r.t
    lam = hourly_rate(hour, weekday)
    n_edit = _poisson(rng, lam)
    docs = t.cat("docs")
    for p in rng.sample(docs, min(len(docs), n_edit)):
        f = t.files[p]
        c = f.content.copy()
        if c.kind in ("zip", "pdf"):  # re-saved whole
            c = Content(c.kind, t.new_seed(), int(c.size * rng.uniform(0.95, 1.08)))
            r.change(p, c, None)
        else:
            a = rng.randrange(0, max(1, c.size))
            grow = rng.randrange(0, 4 * KiB)
            c.size += grow
            c.overlays.append(Overlay(a - a % UNIT, min(c.size, a + rng.randrange(64, 16 * KiB)),
                                      "plain", t.new_seed()))
            r.change(p, c, [(a, a + grow + 1)])
    # logs append every hour
    for p in list(t.cat("log")[:3]):
        c = t.files[p].content.copy()
        add = rng.randrange(1 * KiB, 200 * KiB)
        c.overlays.append(Overlay(c.size - c.size % UNIT, c.size + add, "plain", t.new_seed()))
        c.size += add
        r.change(p, c, [(c.size - add, c.size)])
    # browser databases: a few pages
    if 8 <= hour < 24:
        for p in list(t.cat("db")[:2]):
            c = t.files[p].content.copy()
            ranges = []
            for _ in range(rng.randrange(1, 12)):
                a = rng.randrange(0, max(1, c.size // UNIT)) * UNIT
                c.overlays.append(Overlay(a, a + UNIT, "plain", t.new_seed()))
                ranges.append((a, a + UNIT))
            r.change(p, c, ranges)
    if rng.random() < lam / 12:  # a download
        ext = rng.choice(["pdf", "zip", "jpg", "docx", "png", "mp4", "txt"])
        path = f"Downloads/dl{t.new_seed() % 10**8}.{ext}"
        r.add(path, new_content(rng, ext, t.new_seed()))
    if rng.random() < lam / 15:  # a deletion
        pool = t.cat(rng.choice(["docs", "pictures"]))
        if pool:
            r.delete(rng.choice(pool))
    if rng.random() < lam / 10:  # a git commit: a few loose objects
        for _ in range(rng.randrange(2, 12)):
            path = f"src/project/.git/objects/{t.new_seed() % 256:02x}/{t.new_seed():012x}"
            r.add(path, new_content(rng, "", t.new_seed()))
    if rng.random() < 0.02:  # the password safe is saved
        for p in list(t.cat("kdbx")[:1]):
            c = t.files[p].content
            r.change(p, Content(c.kind, t.new_seed(), c.size + rng.randrange(-500, 900)), None)
    if rng.random() < 0.005:  # an encrypted archive downloaded (AES zip / 7z: random)
        ext = rng.choice(["zip", "7z"])
        r.add(f"Downloads/secure{t.new_seed() % 10**6}.{ext}",
              Content("aes-zip" if ext == "zip" else "aes-7z", t.new_seed(),
                      rng.randrange(100 * KiB, 50 * MiB)))
    if rng.random() < 0.01:  # an encrypted file the user makes (gpg)
        r.add(f"Documents/tax-{t.new_seed() % 10**6}.pdf.gpg",
              Content("kdbx", t.new_seed(), rng.randrange(50 * KiB, 5 * MiB)))


def _poisson(rng: random.Random, lam: float) -> int:
    L, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= L:
            return k
        k += 1


# -- benign hard cases --

def vm_rewrite(r: Recorder, rng: random.Random) -> None:
    t = r.t
    vms = t.cat("qcow2") + t.cat("img")
    if not vms:
        vms = [f"vms/disk{t.new_seed() % 1000}.qcow2"]
        t.put(File(vms[0], new_content(rng, "qcow2", t.new_seed())))
    for p in vms[:2]:
        c = t.files[p].content.copy()
        ranges = []
        for _ in range(rng.randrange(20, 400)):
            a = rng.randrange(0, max(1, c.size // CHUNK)) * CHUNK
            n = rng.randrange(1, 64) * UNIT
            c.overlays.append(Overlay(a, a + n, "plain", t.new_seed()))
            ranges.append((a, a + n))
        r.change(p, c, ranges)


def archive_folder(r: Recorder, rng: random.Random) -> None:
    t = r.t
    folders = sorted({_folder(p) for p in t.files if p.startswith(("Documents/", "Pictures/",
                                                                    "src/"))})
    folder = rng.choice(folders)
    members = [p for p in t.files if _folder(p) == folder]
    total = sum(t.files[p].content.size for p in members)
    for p in members:
        r.delete(p)
    r.add(f"{folder}.tar.zst", Content("zstd", t.new_seed(), max(4 * KiB, int(total * 0.6))))


def photo_import(r: Recorder, rng: random.Random) -> None:
    t = r.t
    folder = f"Pictures/import-{t.new_seed() % 10**6}"
    ext = rng.choice(["jpg", "jpg", "heic", "cr2"])
    for i in range(rng.randrange(100, 800)):
        e = ext if rng.random() < 0.9 else "mov"
        r.add(f"{folder}/IMG_{i:04d}.{e}", new_content(rng, e, t.new_seed()))


def transcode(r: Recorder, rng: random.Random) -> None:
    t = r.t
    vids = t.cat("avi") + t.cat("mkv") + t.cat("mov") + t.cat("mp3")
    vids = rng.sample(vids, min(len(vids), rng.randrange(5, 60)))
    if not vids:
        for i in range(10):
            p = f"Videos/old{t.new_seed() % 10**6}-{i}.avi"
            t.put(File(p, new_content(rng, "avi", t.new_seed())))
            vids.append(p)
    for p in vids:
        target = {"mp3": "ogg"}.get(ext_of(p), "mp4")
        new = p.rsplit(".", 1)[0] + "." + target
        r.delete(p)
        r.add(new, new_content(rng, target, t.new_seed()))


def bulk_rename(r: Recorder, rng: random.Random) -> None:
    t = r.t
    victims = _pick(t, rng, lambda p: p.startswith(("Pictures/", "Documents/")),
                    rng.randrange(50, 500))
    as_pairs = rng.random() < 0.5  # the pipeline does not always see a rename
    for p in victims:
        folder, stem, ext = an.observe.split_ext(p)
        new_ext = {"jpeg": "jpg", "jpg": "jpeg", "txt": "md"}.get(ext, ext) \
            if rng.random() < 0.5 else ext
        new = f"{folder}/2026-{rng.randrange(1, 13):02d}_{stem}" + (f".{new_ext}" if new_ext else "")
        if new in t.files:
            continue
        if as_pairs:
            f = t.files[p]
            r.delete(p)
            r.add(new, f.content)
        else:
            r.rename(p, new)


def git_gc(r: Recorder, rng: random.Random) -> None:
    t = r.t
    loose = list(t.cat("loose"))
    size = max(64 * KiB, sum(t.files[p].content.size for p in loose) // 2)
    for p in loose:
        r.delete(p)
    name = f"src/project/.git/objects/pack/pack-{t.new_seed():016x}"
    r.add(name + ".pack", Content("git-pack", t.new_seed(), max(size, 200 * KiB)))
    r.add(name + ".idx", Content("git-idx", t.new_seed(), 40 * KiB))


def package_upgrade(r: Recorder, rng: random.Random) -> None:
    t = r.t
    old = t.cat("venv")
    for p in rng.sample(old, min(len(old), rng.randrange(50, 400))):
        r.delete(p)
    for k in range(rng.randrange(5, 40)):
        pkg = f".local/lib/venv/site-packages/pkg{t.new_seed() % 10**6}"
        for i in range(rng.randrange(3, 25)):
            ext = rng.choice(["py", "py", "pyc", "so", "json", "txt"])
            r.add(f"{pkg}/m{i}.{ext}", new_content(rng, ext, t.new_seed()))
        info = f"{pkg}-{k}.dist-info"
        r.add(f"{info}/INSTALLER", Content("tiny", 0, 4, literal=b"pip\n"))
        r.add(f"{info}/WHEEL", Content("tiny", 0, 80, literal=(
            b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.43.0)\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n")))
        r.add(f"{info}/LICENSE.txt", Content("tiny", 0, 1067, literal=(
            b"MIT License\n\nPermission is hereby granted, free of charge, to any person "
            b"obtaining a copy of this software ... THE SOFTWARE IS PROVIDED AS IS.\n" * 6)))
        r.add(f"{info}/RECORD", new_content(rng, "csv", t.new_seed(), 3 * KiB))


def db_vacuum(r: Recorder, rng: random.Random) -> None:
    t = r.t
    for p in list(t.cat("db")):
        c = t.files[p].content
        r.change(p, Content(c.kind, t.new_seed(), int(c.size * rng.uniform(0.6, 1.0))), None)


def log_rotation(r: Recorder, rng: random.Random) -> None:
    t = r.t
    for p in list(t.cat("log")):
        c = t.files[p].content
        r.add(f"{p}.{t.new_seed() % 1000}.gz", Content("gzip", t.new_seed(),
                                                       max(1 * KiB, c.size // 8)))
        r.change(p, Content(c.kind, t.new_seed(), rng.randrange(100, 4 * KiB)), None)


BENIGN_HARD: dict[str, Callable[[Recorder, random.Random], None]] = {
    "vm-image-rewrite": vm_rewrite,
    "archive-to-tar-zst": archive_folder,
    "photo-import": photo_import,
    "media-transcode": transcode,
    "bulk-rename": bulk_rename,
    "git-gc": git_gc,
    "package-upgrade": package_upgrade,
    "database-vacuum": db_vacuum,
    "log-rotation": log_rotation,
}


# -- attacks --

MEDIA = ("jpg", "jpeg", "png", "heic", "mp4", "mov", "mkv", "avi", "mp3", "cr2", "zip",
         "docx", "xlsx", "pptx", "odt", "gz", "zst")


def _victims(t: Tree, rng: random.Random, share: float) -> list[str]:
    """User files an attack goes for (not the git objects or the venv); one attack in four
    goes for compressed files only (photos, videos, office files: the hardest to tell)."""
    media_only = rng.random() < 0.25
    pool = sorted(p for p in t.files if not p.startswith(("src/project/.git/", ".local/"))
                  and (not media_only or ext_of(p) in MEDIA))
    rng.shuffle(pool)
    return pool[:max(1, round(share * len(t.files)))]


def _cipher_size(size: int, rng: random.Random) -> int:
    return size + rng.choice([0, 0, 16, 32, 256, 512 + rng.randrange(512)])


def attack_rename_notes(r: Recorder, rng: random.Random, share: float = 0.05) -> None:
    t = r.t
    suffix = rng.choice(["locked", "enc", "crypt", "crypted", "id-" + str(rng.randrange(10**6)),
                         "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))])
    note = rng.choice(NOTE_NAMES)
    text = NOTE_TEXT.replace(b"0.05", str(rng.randrange(1, 99) / 100).encode())
    folders: set[str] = set()
    for p in _victims(t, rng, share):
        f = t.files[p]
        r.delete(p, target=p)
        r.add(f"{p}.{suffix}", Content(f.content.kind, t.new_seed(),
                                       _cipher_size(f.content.size, rng),
                                       [Overlay(0, 1 << 62, "cipher", t.new_seed())]), target=p)
        if _folder(p) not in folders:
            folders.add(_folder(p))
            r.add(f"{_folder(p)}/{note}", Content("tiny", 0, len(text), literal=text))


def attack_in_place(r: Recorder, rng: random.Random, share: float = 0.05) -> None:
    t = r.t
    for p in _victims(t, rng, share):
        f = t.files[p]
        c = Content(f.content.kind, t.new_seed(), _cipher_size(f.content.size, rng),
                    [Overlay(0, 1 << 62, "cipher", t.new_seed())])
        r.change(p, c, None, target=p)


def attack_intermittent(r: Recorder, rng: random.Random, share: float = 0.05) -> None:
    t = r.t
    block = rng.choice([4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB])
    for p in _victims(t, rng, share):
        c = t.files[p].content.copy()
        seed = t.new_seed()
        # header kept: block 0 plain, then every other block encrypted
        c.overlays.append(Overlay(block, 1 << 62, "cipher", seed, period=block))
        if c.size <= block:  # a small file: all but the head
            c.overlays.append(Overlay(min(c.size - 1, 512), 1 << 62, "cipher", seed))
        r.change(p, c, [(block, c.size)] if c.size > block else None, target=p)


def attack_header_kept(r: Recorder, rng: random.Random, share: float = 0.05) -> None:
    t = r.t
    head = rng.choice([16, 512, 4 * KiB, 64 * KiB])
    for p in _victims(t, rng, share):
        c = t.files[p].content.copy()
        start = min(head, max(1, c.size // 2))
        c.overlays.append(Overlay(start, 1 << 62, "cipher", t.new_seed()))
        r.change(p, c, [(start, c.size)], target=p)


def attack_base64(r: Recorder, rng: random.Random, share: float = 0.05) -> None:
    t = r.t
    rename = rng.random() < 0.5
    head = rng.choice([0, 0, 4 * KiB])  # sometimes the header is kept too
    for p in _victims(t, rng, share):
        f = t.files[p]
        start = min(head, f.content.size // 2)
        c = Content(f.content.kind, f.content.seed, start + (f.content.size - start) * 4 // 3 + 4,
                    [*f.content.overlays, Overlay(start, 1 << 62, "base64", t.new_seed())])
        if rename:
            r.delete(p, target=p)
            r.add(f"{p}.b64", c, target=p)
        else:
            r.change(p, c, None, target=p)


ATTACKS: dict[str, Callable[[Recorder, random.Random], None]] = {
    "encrypt+rename+notes": attack_rename_notes,
    "in-place-overwrite": attack_in_place,
    "intermittent": attack_intermittent,
    "header-kept": attack_header_kept,
    "base64-masked": attack_base64,
}
FULL_FILE = ("encrypt+rename+notes", "in-place-overwrite")
THROTTLED = "throttled-1%"


def attack_throttled_step(r: Recorder, rng: random.Random, done: set[str]) -> None:
    """One snapshot of a slow attack: 1% of the files, in place, no notes."""
    t = r.t
    for p in _victims(t, rng, 0.02):
        if p in done:
            continue
        if len(done) and sum(1 for q in r.snap.attacked) >= max(1, round(0.01 * len(t.files))):
            break
        done.add(p)
        f = t.files[p]
        r.change(p, Content(f.content.kind, t.new_seed(), _cipher_size(f.content.size, rng),
                            [Overlay(0, 1 << 62, "cipher", t.new_seed())]), None, target=p)
