#!/usr/bin/env python3
"""Seeded generator of a realistic home-lab file tree, and a mutator, for the backup benchmarks.

`generate(root, size, seed)` writes a tree of about `size` bytes of regular-file content:
many small source and config files (code-like text that zstd compresses about 3-5x), git
objects (small, incompressible), documents (pdf mixed, office incompressible, markdown and
csv compressible), photos, logs (repetitive timestamped lines), three large incompressible
media files (~35% of the bytes), VM images that share most of their bytes with small
overwritten and inserted spans, identical duplicates, hardlinks, relative, absolute and
dangling symlinks, a symlink loop, a folder chain deeper than 20 levels, empty files and
empty folders. About 30k files per GiB.

`mutate(root, percent, seed)` changes about `percent`% of the bytes the way a day of use
does: appends to logs, edits the middle of text files and of one large file in place, adds
new files, deletes and renames some (renames and deletes count as no changed bytes).

Invariants:
- The same (size, seed) gives the same names, bytes, modes, mtimes, link targets and
  hardlink groups, whatever the machine (only the absolute symlinks embed `root`).
- The same tree and (percent, seed) give the same mutation.
- All randomness comes from numpy `Generator`s seeded here; nothing reads the clock.

Usable as a library (`generate`, `mutate`, `scan`, `parse_size`) and as a script:
    treegen.py generate DIR --size 1GiB --seed 1     (or: treegen.py DIR --size 1GiB)
    treegen.py mutate DIR --percent 5 --seed 2
    treegen.py stats DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# Generated mtimes lie in the three years before T0 (2024-06-01T00:00:00Z); a mutation
# stamps what it touches one day after the newest mtime in the tree.
T0_NS = 1_717_200_000 * 10**9
SPAN_NS = 3 * 365 * 86_400 * 10**9

# Share of the requested size per kind; source/config files take what is left (~24%).
SHARE_MEDIA = 0.35  # three large incompressible files
SHARE_VM_BASE = 0.025  # one VM image, plus two near-copies of it
SHARE_LOGS = 0.10
SHARE_DOCS = 0.19
SHARE_DUPS = 0.04


def _wordlist(text: str) -> list[str]:
    return text.split()


TEXT_EXTS = frozenset(
    _wordlist(
        ".py .go .js .ts .c .h .rs .java .md .txt .csv .html .toml .yaml .yml .conf .ini .cfg "
        ".json .sh .service .rules"
    )
)

_SYLLABLES = _wordlist(
    "ba co de fi gu ha ke li mo nu pa qui ro sa te vi wo xa ya zu st tr an en in on er al "
    "or ic ex pro con ser get set data node user file path item list map key val buf msg "
    "req res tab row col log net io fs db"
)

_COMMON_WORDS = _wordlist(
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port "
    "large spell add even land here must big high such follow act why ask men change went "
    "light kind off need house picture try us again animal point mother world near build "
    "self earth father backup server disk network storage snapshot restore volume cluster"
)


def parse_size(text: str | int) -> int:
    """Parse `1GiB`, `64MiB`, `512M`, `1.5G`, `4096` (binary units) into bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (try 64MiB or 1GiB)")
    mult = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, *tags])))


def random_bytes(rng: np.random.Generator, n: int) -> bytes:
    """n incompressible bytes; random_raw is ~10x faster than Generator.bytes here."""
    if n <= 0:
        return b""
    return rng.bit_generator.random_raw((n + 7) // 8).tobytes()[:n]


def _random_blocks(rng: np.random.Generator, n: int, block: int = 4 * MiB) -> Iterator[bytes]:
    while n > 0:
        k = min(block, n)
        yield random_bytes(rng, k)
        n -= k


# --------------------------------------------------------------------------------------
# Text: a pool of generated lines, sampled with Zipf weights, so text repeats the way code
# and prose do (common lines often, most lines rarely) and compresses ~3x in 4 KiB files,
# ~5x in 1 MiB chunks. Sampling whole lines keeps generation near 100 MB/s.
# --------------------------------------------------------------------------------------


def _zipf_cdf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return cdf


def _words(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(lo, hi + 1))
        out.add("".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), k)))
    words = sorted(out)
    rng.shuffle(words)  # rank order (Zipf) independent of spelling
    return words


class _LinePool:
    """Endless text made of pool lines; `take(n)` gives n bytes starting at a line start."""

    def __init__(self, rng: np.random.Generator, lines: list[bytes], a: float) -> None:
        self._rng = rng
        self._lines = np.array(lines, dtype=object)
        self._cdf = _zipf_cdf(len(lines), a)
        self._buf = b""
        self._pos = 0

    def _refill(self, need: int) -> None:
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        while have < need:
            idx = np.searchsorted(self._cdf, self._rng.random(16384))
            idx = np.minimum(idx, len(self._lines) - 1)
            chunk = b"".join(self._lines[idx].tolist())
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts)
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n <= 0:
            return b""
        if len(self._buf) - self._pos < n + 4 * KiB:
            self._refill(n + 64 * KiB)
        nl = self._buf.find(b"\n", self._pos, self._pos + 4 * KiB)
        start = nl + 1 if nl >= 0 else self._pos
        out = self._buf[start : start + n]
        self._pos = start + n
        return out[:-1] + b"\n" if n > 1 else out


def _code_lines(rng: np.random.Generator, n: int, ids: list[str]) -> list[bytes]:
    cdf = _zipf_cdf(len(ids), 1.05)
    pick = np.minimum(np.searchsorted(cdf, rng.random(4 * n)), len(ids) - 1).tolist()
    kinds = rng.integers(0, 14, n).tolist()
    depth = rng.integers(0, 4, n).tolist()
    nums = rng.integers(0, 1000, n).tolist()
    out = []
    for j in range(n):
        a, b, c, d = (ids[i] for i in pick[4 * j : 4 * j + 4])
        k, num = kinds[j], nums[j]
        if k == 0:
            s = f"def {a}_{b}({c}, {d}):"
        elif k == 1:
            s = f"{a} = {b}.{c}({d})"
        elif k == 2:
            s = f"return {a}"
        elif k == 3:
            s = f"if {a} == {num}:"
        elif k == 4:
            s = f"import {a}.{b}"
        elif k == 5:
            s = f"# {a} {b} {c} {d}"
        elif k == 6:
            s = f"{a}.{b} = {c}[{num}]"
        elif k == 7:
            s = f"for {a} in {b}({c}):"
        elif k == 8:
            s = f'raise {a.title()}Error("{b} {c}")'
        elif k == 9:
            s = f"self.{a} = {b}"
        elif k == 10:
            s = ""
        elif k == 11:
            s = f"{a}_{b} := {c}.{d}({num})"
        elif k == 12:
            s = "}" if num % 2 else "end"
        else:
            s = f"{a}({b}, {c}={num})"
        out.append(("    " * depth[j] + s + "\n").encode())
    return out


def _prose_lines(rng: np.random.Generator, n: int, words: list[str]) -> list[bytes]:
    cdf = _zipf_cdf(len(words), 1.0)
    lens = rng.integers(5, 22, n).tolist()
    pick = np.minimum(np.searchsorted(cdf, rng.random(sum(lens))), len(words) - 1).tolist()
    ends = rng.integers(0, 10, n).tolist()
    out = []
    pos = 0
    for j in range(n):
        ws = [words[i] for i in pick[pos : pos + lens[j]]]
        pos += lens[j]
        s = " ".join(ws).capitalize()
        e = ends[j]
        if e == 0:
            s = "## " + s + "\n\n"
        elif e < 3:
            s = s + ".\n\n"
        else:
            s = s + ".\n"
        out.append(s.encode())
    return out


_LOG_TEMPLATES = (
    "sshd[{pid}]: Accepted publickey for {user} from {ip} port {port} ssh2",
    "sshd[{pid}]: Connection closed by {ip} port {port} [preauth]",
    'nginx: {ip} - - "GET /{w1}/{w2}?id={n} HTTP/1.1" {status} {size} "-" "Mozilla/5.0"',
    "kernel: [{up}.{n}] eth0: link up, 1000 Mbps, full duplex, flow control rx/tx",
    "CRON[{pid}]: ({user}) CMD (/usr/local/bin/{w1}-{w2}.sh >/dev/null 2>&1)",
    "systemd[1]: Started {w1}-{w2}.service - {W1} {w2} daemon.",
    "systemd[1]: {w1}.timer: Succeeded.",
    "postgres[{pid}]: LOG:  checkpoint complete: wrote {n} buffers; {size} WAL file(s) added",
    'app[{pid}]: level=info msg="{w1} {w2} done" req_id={hex} duration_ms={n}',
    'app[{pid}]: level=warn msg="retrying {w1}" attempt={d} err="timeout after {n}ms"',
    "smartd[{pid}]: Device: /dev/sd{c}, SMART Usage Attribute: 194 Temperature_Celsius changed from {d}0 to {d}1",
    'dockerd[{pid}]: level=info msg="container {hex} {w1}" namespace=moby',
    "zed[{pid}]: eid={n} class=scrub_finish pool='tank' errors={d}",
)


class _LogPool:
    """Timestamped log lines: messages from a Zipf-sampled pool, monotonic timestamps."""

    def __init__(self, rng: np.random.Generator, words: list[str], n_msgs: int) -> None:
        self._rng = rng
        t = rng.integers(0, len(_LOG_TEMPLATES), n_msgs).tolist()
        w = rng.integers(0, min(len(words), 200), (n_msgs, 2)).tolist()
        nums = rng.integers(0, 100_000, (n_msgs, 4)).tolist()
        users = ("alice", "bob", "root", "backup", "git")
        msgs = []
        for i in range(n_msgs):
            w1, w2 = words[w[i][0]], words[w[i][1]]
            a, b, c, d = nums[i]
            msgs.append(
                _LOG_TEMPLATES[t[i]]
                .format(
                    pid=a % 40000,
                    user=users[b % 5],
                    ip=f"192.168.{a % 4}.{b % 250 + 2}",
                    port=30000 + c % 30000,
                    w1=w1,
                    w2=w2,
                    W1=w1.title(),
                    n=d,
                    status=(200, 200, 200, 304, 404, 500)[c % 6],
                    size=b,
                    up=a,
                    hex=f"{a * 100003 + d:012x}",
                    d=d % 10,
                    c="abcd"[c % 4],
                )
                .encode()
                + b"\n"
            )
        self._msgs = np.array(msgs, dtype=object)
        self._cdf = _zipf_cdf(n_msgs, 1.1)

    def text(self, n: int, host: str, start_ns: int) -> bytes:
        """About n bytes of lines (never fewer), starting at start_ns (UTC)."""
        k = max(1, n // 110 + 1)
        parts: list[bytes] = []
        have = 0
        t = start_ns // 1000
        prefix = f" {host} ".encode()
        while have < n:
            idx = np.minimum(np.searchsorted(self._cdf, self._rng.random(k)), len(self._msgs) - 1)
            gaps = self._rng.exponential(2_000_000.0, k).astype(np.int64) + 1  # microseconds
            ts = t + np.cumsum(gaps)
            t = int(ts[-1])
            stamps = np.datetime_as_string(ts.astype("datetime64[us]"), unit="ms").astype("S")
            lines: list[bytes] = [b""] * (3 * k)
            lines[0::3] = stamps.tolist()
            lines[1::3] = [prefix] * k
            lines[2::3] = self._msgs[idx].tolist()
            chunk = b"".join(lines)
            parts.append(chunk)
            have += len(chunk)
            k = max(1, (n - have) // 110 + 1)
        return b"".join(parts)


class _Content:
    """The text sources of one generator or mutator, all seeded from one rng."""

    def __init__(self, rng: np.random.Generator, scale: int) -> None:
        self.rng = rng
        self.ids = _words(rng, 3000, 1, 3)
        self.words = list(_COMMON_WORDS) + _words(rng, 1500, 2, 4)
        n_lines = int(min(200_000, max(20_000, scale // (5 * KiB))))
        self.code = _LinePool(rng, _code_lines(rng, n_lines, self.ids), 1.0)
        self.prose = _LinePool(rng, _prose_lines(rng, n_lines // 4, self.words), 0.9)
        self.logs = _LogPool(rng, self.ids, max(5_000, n_lines // 8))

    def pdf(self, n: int) -> bytes:
        """Half prose objects, half random streams (images, fonts): ~2x compressible."""
        parts = [b"%PDF-1.7\n"]
        have = len(parts[0])
        while have < n:
            part = self.prose.take(int(self.rng.integers(2 * KiB, 16 * KiB)))
            parts.append(b"1 0 obj\n<< /Type /Page >>\nBT\n" + part + b"ET\nendobj\n")
            parts.append(
                b"stream\n" + random_bytes(self.rng, int(self.rng.integers(KiB, 20 * KiB)))
            )
            have += len(parts[-1]) + len(parts[-2])
        return b"".join(parts)[: max(0, n - 6)] + b"%%EOF\n"

    def csv(self, n: int) -> bytes:
        rows = n // 40 + 2
        vals = self.rng.integers(0, 100_000, (rows, 6)).tolist()
        day = self.rng.integers(0, 1000)
        text = "\n".join(
            f"2023-{(day + i // 24) % 12 + 1:02d}-{i % 28 + 1:02d},{a},{b},{c / 100:.2f},{d},{e % 7},{f % 3}"
            for i, (a, b, c, d, e, f) in enumerate(vals)
        ).encode()
        return b"date,id,count,amount,ref,weekday,flag\n" + text[: max(0, n - 40)]


# --------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------


@dataclass
class TreeStats:
    """What a tree holds. `bytes` counts regular-file content once per inode (like du)."""

    files: int = 0  # regular-file names, hardlinks included
    bytes: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0  # names beyond the first for an inode
    empty_files: int = 0
    empty_dirs: int = 0
    max_depth: int = 0


def scan(root: str | os.PathLike[str]) -> TreeStats:
    """Walk without following symlinks and count what is there."""
    st = TreeStats()
    seen: set[tuple[int, int]] = set()
    stack = [(os.fspath(root), 0)]
    while stack:
        path, depth = stack.pop()
        st.max_depth = max(st.max_depth, depth)
        n = 0
        with os.scandir(path) as it:
            for e in it:
                n += 1
                if e.is_symlink():
                    st.symlinks += 1
                elif e.is_dir(follow_symlinks=False):
                    st.dirs += 1
                    stack.append((e.path, depth + 1))
                elif e.is_file(follow_symlinks=False):
                    s = e.stat(follow_symlinks=False)
                    st.files += 1
                    key = (s.st_dev, s.st_ino)
                    if key in seen:
                        st.hardlinks += 1
                        continue
                    seen.add(key)
                    st.bytes += s.st_size
                    st.empty_files += s.st_size == 0
        if n == 0 and depth > 0:
            st.empty_dirs += 1
    return st


def _regular_files(root: str) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of regular files, sorted by path, for deterministic choices."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            if stat.S_ISREG(s.st_mode):
                out.append((os.path.relpath(p, root), s))
    out.sort(key=lambda x: x[0])
    return out


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


@dataclass
class _Rec:
    rel: str
    size: int
    kind: str
    mtime_ns: int


@dataclass
class GenerateReport:
    root: str
    size: int
    seed: int
    seconds: float
    stats: TreeStats
    bytes_by_kind: dict[str, int] = field(default_factory=dict)


class _Generator:
    def __init__(self, root: str, size: int, seed: int) -> None:
        self.root = root
        self.size = size
        self.seed = seed
        self.rng = _rng(seed, 1)
        self.c = _Content(_rng(seed, 2), size)
        self.files: list[_Rec] = []
        self.dirs: set[str] = set()
        self.names: dict[str, set[str]] = {}
        self.by_kind: dict[str, int] = {}

    # -- primitives ---------------------------------------------------------------

    def mtime(self) -> int:
        return T0_NS - int(self.rng.integers(0, SPAN_NS))

    def mkdir(self, rel: str, mode: int = 0o755) -> str:
        if rel in self.dirs or rel == "":
            return rel
        parent = os.path.dirname(rel)
        self.mkdir(parent)
        self.names.setdefault(parent, set()).add(os.path.basename(rel))
        os.mkdir(os.path.join(self.root, rel))
        os.chmod(os.path.join(self.root, rel), mode)
        self.dirs.add(rel)
        return rel

    def unique(self, d: str, name: str) -> str:
        used = self.names.setdefault(d, set())
        stem, ext = os.path.splitext(name)
        cand, i = name, 1
        while cand in used:
            i += 1
            cand = f"{stem}-{i}{ext}"
        used.add(cand)
        return os.path.join(d, cand) if d else cand

    def write(
        self,
        d: str,
        name: str,
        data: bytes | Iterator[bytes],
        kind: str,
        mode: int = 0o644,
        mtime_ns: int | None = None,
    ) -> _Rec:
        self.mkdir(d)
        rel = self.unique(d, name)
        fd = os.open(os.path.join(self.root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        n = 0
        try:
            for block in [data] if isinstance(data, bytes) else data:
                mv = memoryview(block)
                while mv:
                    k = os.write(fd, mv)
                    mv = mv[k:]
                n += len(block)
            os.fchmod(fd, mode)
            mt = self.mtime() if mtime_ns is None else mtime_ns
            os.utime(fd, ns=(mt, mt))
        finally:
            os.close(fd)
        rec = _Rec(rel, n, kind, mt)
        self.files.append(rec)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        return rec

    def lognormal(self, median: float, sigma: float, lo: int, hi: int) -> int:
        v = median * float(np.exp(self.rng.normal(0.0, sigma)))
        return int(min(max(v, lo), max(lo, hi)))

    def name(self, ext: str = "", n: int = 2) -> str:
        ids = self.c.ids
        parts = [ids[int(i)] for i in self.rng.integers(0, min(len(ids), 800), n)]
        return "_".join(parts) + ext

    # -- kinds --------------------------------------------------------------------

    def media(self) -> None:
        shares = self.rng.uniform(0.8, 1.2, 3)
        sizes = (shares / shares.sum() * SHARE_MEDIA * self.size).astype(np.int64).tolist()
        names = ("holiday-2019.mkv", "concert-bootleg.mkv", "family-archive.mkv")
        for name, n in zip(names, sizes, strict=True):
            head = b"\x1a\x45\xdf\xa3"
            self.write(
                "srv/media/video",
                name,
                iter([head, *_random_blocks(self.rng, n - len(head))]),
                "media",
            )

    def vm_images(self) -> None:
        """A disk image and two snapshots of it: shared bytes, small changed/inserted spans."""
        n = max(64 * KiB, int(SHARE_VM_BASE * self.size))
        seg_hi = max(8 * KiB, min(MiB, n // 16))
        parts: list[bytes] = []
        have = 0
        while have < n:
            k = int(self.rng.integers(seg_hi // 8, seg_hi + 1))
            r = self.rng.random()
            if r < 0.45:
                part = random_bytes(self.rng, k)
            elif r < 0.8:
                part = self.c.code.take(k)
            elif r < 0.9:
                part = bytes(k)
            else:
                part = self.c.prose.take(k)
            parts.append(part)
            have += len(part)
        base = b"".join(parts)[:n]
        d = "srv/vm/images"
        self.write(d, "debian-12-base.qcow2", base, "vm")
        for i in (1, 2):
            img = bytearray(base)
            for _ in range(8):
                span = int(self.rng.integers(max(64, n // 2000), max(128, n // 400)))
                at = int(self.rng.integers(0, max(1, len(img) - span)))
                if self.rng.random() < 0.5:
                    img[at : at + span] = random_bytes(self.rng, span)
                else:
                    img[at:at] = random_bytes(self.rng, span // 4)
            self.write(d, f"debian-12-snap{i}.qcow2", bytes(img), "vm")

    def logs(self) -> None:
        budget = int(SHARE_LOGS * self.size)
        services = ("syslog", "nginx", "postgresql", "app", "docker", "auth", "zfs", "cron")
        hosts = ("nas", "pve1", "pve2", "pi-hole", "router")
        have, i = 0, 0
        while have < budget:
            svc = services[i % len(services)]
            host = hosts[int(self.rng.integers(0, len(hosts)))]
            n = self.lognormal(256 * KiB, 1.3, 2 * KiB, min(8 * MiB, budget // 6))
            n = min(n, budget - have) if budget - have > 2 * KiB else n
            gen = i // len(services)
            name = f"{svc}.log" if gen == 0 else f"{svc}.log.{gen}"
            d = f"var/log/{svc}" if i % 5 else f"home/alice/.local/share/{svc}/logs"
            start = T0_NS - (gen + 1) * 7 * 86_400 * 10**9
            data = self.c.logs.text(n, host, start)
            rec = self.write(d, name, data, "logs", mtime_ns=T0_NS - gen * 7 * 86_400 * 10**9)
            have += rec.size
            i += 1

    def documents(self) -> None:
        """Photos 30% of the bytes, pdf 30%, office 15%, csv 10%, notes 15%."""
        budget = int(SHARE_DOCS * self.size)
        shares = {"photo": 0.30, "pdf": 0.30, "office": 0.15, "csv": 0.10, "note": 0.15}
        spent = dict.fromkeys(shares, 0)
        users = ("alice", "bob")
        photo_no = 1000
        cap = max(8 * KiB, budget // 8)
        while sum(spent.values()) < budget:
            # The kind furthest behind its share goes next, so small trees get every kind.
            kind = min(shares, key=lambda k: (spent[k] / shares[k], k))
            user = users[int(self.rng.integers(0, 2))]
            year = int(self.rng.integers(2015, 2025))
            if kind == "photo":  # incompressible
                n = self.lognormal(2.5 * MiB, 0.4, 16 * KiB, min(8 * MiB, cap))
                month = int(self.rng.integers(1, 13))
                photo_no += 1
                data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + random_bytes(self.rng, n - 11)
                d = f"home/{user}/Pictures/{year}/{month:02d}"
                rec = self.write(d, f"IMG_{photo_no}.jpg", data, "photos")
            elif kind == "pdf":  # mixed
                n = self.lognormal(300 * KiB, 1.0, 8 * KiB, min(16 * MiB, cap))
                d = f"home/{user}/Documents/{year}"
                rec = self.write(d, self.name(".pdf"), self.c.pdf(n), "docs")
            elif kind == "office":  # zip archives: incompressible
                n = self.lognormal(60 * KiB, 1.0, 4 * KiB, min(4 * MiB, cap))
                ext = (".docx", ".xlsx", ".odt")[int(self.rng.integers(0, 3))]
                data = b"PK\x03\x04" + random_bytes(self.rng, n - 4)
                rec = self.write(f"home/{user}/Documents/{year}", self.name(ext), data, "docs")
            elif kind == "csv":
                n = self.lognormal(40 * KiB, 1.2, KiB, min(4 * MiB, cap))
                d = f"home/{user}/Documents/finance"
                rec = self.write(d, self.name(".csv"), self.c.csv(n), "docs")
            else:
                n = self.lognormal(12 * KiB, 1.2, 256, min(2 * MiB, cap))
                ext = (".md", ".txt", ".html")[int(self.rng.integers(0, 3))]
                d = f"home/{user}/Documents/notes"
                rec = self.write(d, self.name(ext), self.c.prose.take(n), "docs")
            spent[kind] += rec.size

    def project(self, base: str, budget: int, lang: str) -> None:
        ext = {"py": ".py", "go": ".go", "js": ".js", "c": ".c", "rs": ".rs"}[lang]
        root = self.mkdir(base)
        license_text = self._license()
        self.write(root, "LICENSE", license_text, "source")  # the same bytes in every project
        self.write(
            root,
            "README.md",
            self.c.prose.take(self.lognormal(3 * KiB, 0.7, 200, 64 * KiB)),
            "source",
        )
        self.write(
            root, ".gitignore", b"__pycache__/\n*.o\nbuild/\nnode_modules/\n.venv/\n", "source"
        )
        self.mkdir(f"{root}/build")  # empty until someone builds
        dirs = [self.mkdir(f"{root}/{'src' if lang != 'py' else self.name(n=1)}")]
        have = 0
        git_budget = budget * 0.15
        git_have = 0
        while have < budget:
            if git_have < git_budget and self.rng.random() < 0.1:  # zlib-deflated git objects
                h = f"{int(self.rng.integers(0, 2**62)):016x}{int(self.rng.integers(0, 2**62)):016x}"
                n = self.lognormal(2 * KiB, 1.0, 40, 64 * KiB)
                rec = self.write(
                    f"{root}/.git/objects/{h[:2]}",
                    h[2:],
                    b"x\x01" + random_bytes(self.rng, n),
                    "git",
                    0o444,
                )
                git_have += rec.size
                have += rec.size
                continue
            r = self.rng.random()
            if r < 0.12 and len(dirs) < 400:
                parent = dirs[int(self.rng.integers(0, len(dirs)))]
                if parent.count("/") - base.count("/") < 8:
                    dirs.append(self.mkdir(f"{parent}/{self.name(n=1)}"))
                continue
            d = dirs[-1] if r < 0.6 else dirs[int(self.rng.integers(0, len(dirs)))]
            if lang == "py" and "__init__.py" not in self.names.get(d, set()) and r < 0.7:
                self.write(d, "__init__.py", b"", "source")  # empty, as most are
                continue
            n = self.lognormal(5 * KiB, 1.25, 64, min(512 * KiB, max(4 * KiB, budget // 4)))
            rec = self.write(d, self.name(ext), self.c.code.take(n), "source")
            have += rec.size

    def _license(self) -> bytes:
        if not hasattr(self, "_license_bytes"):
            self._license_bytes = self.c.prose.take(11 * KiB)
        return self._license_bytes

    def sources(self, budget: int) -> None:
        langs = ("py", "go", "js", "c", "rs")
        n_proj = max(1, round(budget / (6 * MiB)))
        shares = self.rng.uniform(0.3, 1.7, n_proj)
        shares = shares / shares.sum() * budget
        # etc/ configs and dotfiles first, a few percent of the source budget.
        cfg_budget = max(8 * KiB, budget // 40)
        have = 0
        while have < cfg_budget:
            d = (
                "etc",
                "etc/nginx/sites-available",
                "etc/systemd/system",
                "home/alice/.config/app",
            )[int(self.rng.integers(0, 4))]
            ext = (".conf", ".service", ".toml", ".yaml", ".ini")[int(self.rng.integers(0, 5))]
            rec = self.write(
                d,
                self.name(ext, 1),
                self.c.code.take(self.lognormal(2 * KiB, 1.0, 64, 64 * KiB)),
                "config",
            )
            have += rec.size
        self.write("home/alice/.ssh", "id_ed25519", self.c.code.take(400), "config", 0o600)
        os.chmod(os.path.join(self.root, "home/alice/.ssh"), 0o700)
        for name in ("backup.sh", "rotate-logs.sh", "wake-nas.sh"):
            self.write(
                "home/alice/bin",
                name,
                b"#!/bin/sh\nset -eu\n" + self.c.code.take(900),
                "source",
                0o755,
            )
        for i in range(n_proj):
            user = ("alice", "bob")[i % 2]
            lang = langs[int(self.rng.integers(0, len(langs)))]
            self.project(f"home/{user}/src/{self.name(n=1)}-{i}", int(shares[i]), lang)

    def deep_chain(self) -> None:
        """node_modules nesting: 12 levels of package/node_modules, depth > 24."""
        d = "home/bob/src/webapp"
        self.write(d, "package.json", b'{"name": "webapp", "version": "1.0.0"}\n', "source")
        for i in range(12):
            d = f"{d}/node_modules/{self.name(n=1)}"
            self.write(d, "package.json", f'{{"name": "pkg{i}"}}\n'.encode(), "source")
            self.write(d, "index.js", self.c.code.take(int(self.rng.integers(200, 3000))), "source")

    def duplicates(self) -> None:
        """Identical copies: a stale copy of some projects and of some documents."""
        budget = int(SHARE_DUPS * self.size)
        have = 0
        projects = sorted(
            {
                "/".join(r.rel.split("/")[:4])
                for r in self.files
                if r.rel.startswith("home/") and "/src/" in r.rel
            }
        )
        srcs = [r for r in self.files if r.kind in ("source", "git")]
        docs = [
            r
            for r in self.files
            if r.kind in ("docs", "photos") and r.size <= max(KiB, budget // 4)
        ]
        if projects:
            proj = projects[int(self.rng.integers(0, len(projects)))]
            for r in srcs:
                if have >= budget * 0.6:
                    break
                if r.rel.startswith(proj + "/"):
                    have += self._copy(r, "backup/old-laptop/" + r.rel)
        while have < budget and docs:
            r = docs[int(self.rng.integers(0, len(docs)))]
            user = r.rel.split("/")[1]
            have += self._copy(r, f"home/{user}/Downloads/{os.path.basename(r.rel)}")

    def _copy(self, r: _Rec, dst: str) -> int:
        with open(os.path.join(self.root, r.rel), "rb") as f:
            data = f.read()
        mode = stat.S_IMODE(os.lstat(os.path.join(self.root, r.rel)).st_mode)
        rec = self.write(
            os.path.dirname(dst), os.path.basename(dst), data, "dups", mode, r.mtime_ns
        )
        return rec.size

    def hardlinks(self) -> None:
        """rsnapshot-style: a daily tree whose files are hardlinks to etc/ and notes."""
        pool = [r for r in self.files if r.kind in ("config", "docs") and r.size < 4 * MiB]
        k = max(4, len(self.files) // 250)
        picks = sorted({int(i) for i in self.rng.integers(0, len(pool), k)})
        for i in picks:
            r = pool[i]
            dst_dir = self.mkdir("srv/rsnapshot/daily.0/" + os.path.dirname(r.rel))
            dst = self.unique(dst_dir, os.path.basename(r.rel))
            os.link(os.path.join(self.root, r.rel), os.path.join(self.root, dst))

    def symlinks(self) -> None:
        files = [r.rel for r in self.files]
        dirs = sorted(self.dirs)
        k = max(12, len(files) // 300)
        for i in range(k):
            at = dirs[int(self.rng.integers(0, len(dirs)))]
            kind = i % 6
            if kind == 0:  # relative, to a file
                t = files[int(self.rng.integers(0, len(files)))]
                target = os.path.relpath(t, at)
            elif kind == 1:  # relative, to a folder
                target = os.path.relpath(dirs[int(self.rng.integers(0, len(dirs)))], at)
            elif kind == 2:  # absolute, into the tree
                t = files[int(self.rng.integers(0, len(files)))]
                target = os.path.join(os.path.abspath(self.root), t)
            elif kind == 3:  # dangling, relative
                target = f"../{self.name(n=1)}/missing.txt"
            elif kind == 4:  # dangling, absolute
                target = f"/nonexistent/{self.name(n=1)}/data"
            else:  # a loop back to an ancestor
                target = ".."
            rel = self.unique(at, self.name(n=1) + ("-link" if kind != 5 else "-loop"))
            p = os.path.join(self.root, rel)
            os.symlink(target, p)
            mt = self.mtime()
            os.utime(p, ns=(mt, mt), follow_symlinks=False)

    def empties(self) -> None:
        for d in (
            "tmp",
            "home/alice/Desktop",
            "home/bob/.cache/thumbnails",
            "var/spool/cron",
            "srv/nfs/export",
        ):
            self.mkdir(d)
        self.write("home/alice/.local/state", "app.lock", b"", "empty")
        self.write("var/lib/misc", ".gitkeep", b"", "empty")
        self.write("srv/media", ".nomedia", b"", "empty")

    def finish(self) -> None:
        """Set every folder's mtime, deepest first (creating entries would change it)."""
        for d in sorted(self.dirs, key=lambda s: (-s.count("/"), s)):
            mt = self.mtime()
            os.utime(os.path.join(self.root, d), ns=(mt, mt))
        os.utime(self.root, ns=(T0_NS, T0_NS))

    def run(self) -> None:
        os.chmod(self.root, 0o755)
        self.media()
        self.vm_images()
        self.logs()
        self.documents()
        spent = sum(self.by_kind.values()) + int(SHARE_DUPS * self.size)
        self.deep_chain()
        self.sources(max(64 * KiB, self.size - spent))
        self.empties()
        self.duplicates()
        self.hardlinks()
        self.symlinks()
        self.finish()


def generate(
    root: str | os.PathLike[str], size: int | str = GiB, seed: int = 1, force: bool = False
) -> GenerateReport:
    """Write a tree of about `size` bytes under `root` (created; must be absent or empty)."""
    root = os.path.abspath(os.fspath(root))
    size = parse_size(size)
    if os.path.lexists(root):
        if force:
            shutil.rmtree(root)
        elif os.listdir(root):
            raise FileExistsError(f"{root} exists and is not empty (use force)")
    os.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    g = _Generator(root, size, seed)
    g.run()
    return GenerateReport(root, size, seed, time.perf_counter() - t, scan(root), dict(g.by_kind))


# --------------------------------------------------------------------------------------
# Mutation
# --------------------------------------------------------------------------------------


@dataclass
class MutationReport:
    """What `mutate` did. changed_bytes = appended + edited + new (what a backup must add)."""

    total_bytes_before: int
    changed_bytes: int = 0
    appended_bytes: int = 0
    edited_bytes: int = 0
    new_bytes: int = 0
    appended_files: int = 0
    edited_files: int = 0
    new_files: int = 0
    deleted_files: int = 0
    deleted_bytes: int = 0
    renamed_files: int = 0
    renamed_dirs: int = 0
    seconds: float = 0.0


def _is_text(rel: str) -> bool:
    return os.path.splitext(rel)[1] in TEXT_EXTS


def mutate(root: str | os.PathLike[str], percent: float = 5.0, seed: int = 2) -> MutationReport:
    """Change about `percent`% of the bytes of the tree at `root` (see module docstring)."""
    root = os.path.abspath(os.fspath(root))
    t0 = time.perf_counter()
    files = _regular_files(root)
    by_inode: dict[int, int] = {}
    for _, s in files:
        by_inode[s.st_ino] = s.st_size
    total = sum(by_inode.values())
    rep = MutationReport(total_bytes_before=total)
    budget = max(1, int(total * percent / 100))
    rng = _rng(seed, 0x6D757461)
    c = _Content(_rng(seed, 0x6D757462), max(budget * 4, 4 * MiB))
    tm = max(s.st_mtime_ns for _, s in files) + 86_400 * 10**9
    tick = [0]
    touched_dirs: set[str] = set()

    def stamp(rel: str) -> None:
        tick[0] += 1
        mt = tm + tick[0] * 10**9
        os.utime(os.path.join(root, rel), ns=(mt, mt), follow_symlinks=False)
        touched_dirs.add(os.path.dirname(rel))

    def pick(pool: list[tuple[str, os.stat_result]], k: int) -> list[tuple[str, os.stat_result]]:
        if not pool:
            return []
        idx = sorted({int(i) for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)})
        return [pool[i] for i in idx]

    used: set[str] = set()
    singles = [(r, s) for r, s in files if s.st_nlink == 1]

    # 1. one large file edited in place, mid-file (a VM disk or media file being rewritten).
    large = sorted(singles, key=lambda x: (-x[1].st_size, x[0]))[:3]
    if large:
        rel, s = large[int(rng.integers(0, len(large)))]
        span = int(min(0.15 * budget, s.st_size // 4))
        at = s.st_size // 4 + int(rng.integers(0, max(1, s.st_size // 2 - span)))
        with open(os.path.join(root, rel), "r+b") as f:
            f.seek(at)
            f.write(random_bytes(rng, span))
        stamp(rel)
        used.add(rel)
        rep.edited_bytes += span
        rep.edited_files += 1

    # 2. appends to a quarter of the logs.
    logs = [(r, s) for r, s in singles if ".log" in os.path.basename(r) and r not in used]
    chosen = pick(logs, max(1, len(logs) // 4))
    for rel, s in chosen:
        n = max(200, int(0.15 * budget / len(chosen)))
        data = c.logs.text(n, "nas", s.st_mtime_ns)[:n]
        with open(os.path.join(root, rel), "ab") as f:
            f.write(data)
        stamp(rel)
        used.add(rel)
        rep.appended_bytes += len(data)
        rep.appended_files += 1

    # 3. edits in the middle of text files: insert or replace a few lines.
    texts = [(r, s) for r, s in singles if _is_text(r) and s.st_size >= KiB and r not in used]
    k = max(2, len(texts) // 100)
    edit_budget = 0.10 * budget
    for rel, _s in pick(texts, k):
        p = os.path.join(root, rel)
        with open(p, "rb") as f:
            old = f.read()
        n = max(64, min(int(edit_budget / k), len(old)))
        at = old.find(b"\n", int(rng.integers(0, len(old)))) + 1 or len(old)
        new_text = c.code.take(n)
        cut = len(new_text) // 3 if rng.random() < 0.5 else 0  # replace, or pure insert
        new = old[:at] + new_text + old[at + cut :]
        with open(p, "r+b") as f:  # in place: same inode, as editors with backupcopy=yes do
            f.write(new)
            f.truncate()
        stamp(rel)
        used.add(rel)
        rep.edited_bytes += len(new_text)
        rep.edited_files += 1

    # 4. deletes and renames among files not touched above.
    rest = [(r, s) for r, s in singles if r not in used]
    k = max(2, len(files) // 100)
    victims = pick(rest, 2 * k)
    for j, (rel, s) in enumerate(victims):
        p = os.path.join(root, rel)
        if j % 2 == 0:
            os.unlink(p)
            rep.deleted_files += 1
            rep.deleted_bytes += s.st_size
            touched_dirs.add(os.path.dirname(rel))
        else:
            stem, ext = os.path.splitext(os.path.basename(rel))
            new_rel = os.path.join(os.path.dirname(rel), f"{stem}.renamed{ext}")
            os.rename(p, os.path.join(root, new_rel))
            touched_dirs.add(os.path.dirname(rel))
            rep.renamed_files += 1
    # one folder renamed: every file below it has a new path, the same content.
    dirs = sorted({os.path.dirname(r) for r, _ in rest if r.count("/") >= 4 and "/src/" in r})
    dirs = [d for d in dirs if os.path.isdir(os.path.join(root, d))]
    if dirs:
        d = dirs[int(rng.integers(0, len(dirs)))]
        os.rename(os.path.join(root, d), os.path.join(root, d + "-moved"))
        touched_dirs.add(os.path.dirname(d))
        touched_dirs.discard(d)
        touched_dirs = {
            t.replace(d, d + "-moved", 1) if t.startswith(d + "/") else t for t in touched_dirs
        }
        rep.renamed_dirs += 1

    # 5. new files for the rest of the budget: half source text, half photos.
    left = budget - rep.appended_bytes - rep.edited_bytes
    d_src = f"home/alice/src/new-{int(rng.integers(0, 10**6)):06d}"
    d_pic = "home/alice/Pictures/2024/06"
    for d in (d_src, d_pic):
        parts = d.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if not os.path.isdir(os.path.join(root, sub)):
                os.mkdir(os.path.join(root, sub))
                os.chmod(os.path.join(root, sub), 0o755)
                touched_dirs.update({sub, os.path.dirname(sub)})
    text_left, pic_left = left // 2, left - left // 2
    i = 0
    while text_left > 0:
        n = min(text_left, int(4 * KiB * np.exp(rng.normal(0, 1.0))) + 64)
        rel = f"{d_src}/module_{i:05d}.py"
        with open(os.path.join(root, rel), "wb") as f:
            f.write(c.code.take(n))
        stamp(rel)
        text_left -= n
        rep.new_bytes += n
        rep.new_files += 1
        i += 1
    i = 0
    while pic_left > 0:
        n = min(pic_left, int(2.5 * MiB * np.exp(rng.normal(0, 0.4))))
        rel = f"{d_pic}/IMG_new_{i:04d}.jpg"
        with open(os.path.join(root, rel), "wb") as f:
            for block in _random_blocks(rng, n):
                f.write(block)
        stamp(rel)
        pic_left -= n
        rep.new_bytes += n
        rep.new_files += 1
        i += 1

    for d in sorted(touched_dirs, key=lambda s: (-s.count("/"), s)):
        p = os.path.join(root, d)
        if os.path.isdir(p):
            os.utime(p, ns=(tm, tm))
    rep.changed_bytes = rep.appended_bytes + rep.edited_bytes + rep.new_bytes
    rep.seconds = time.perf_counter() - t0
    return rep


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("generate", "mutate", "stats", "-h", "--help"):
        argv.insert(0, "generate")
    ap = argparse.ArgumentParser(prog="treegen.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a new tree")
    g.add_argument("dir")
    g.add_argument("--size", default="1GiB", help="bytes of file content (default 1GiB)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--force", action="store_true", help="replace DIR if it exists")
    m = sub.add_parser("mutate", help="change about PERCENT%% of the bytes of a tree")
    m.add_argument("dir")
    m.add_argument("--percent", type=float, default=5.0)
    m.add_argument("--seed", type=int, default=2)
    s = sub.add_parser("stats", help="count what a tree holds")
    s.add_argument("dir")
    for p in (g, m, s):
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        d = asdict(generate(a.dir, a.size, a.seed, a.force))
    elif a.cmd == "mutate":
        d = asdict(mutate(a.dir, a.percent, a.seed))
    else:
        d = asdict(scan(a.dir))
    if a.json:
        print(json.dumps(d, indent=2))
    else:
        for k, v in d.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
