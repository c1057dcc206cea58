"""Synthetic file contents, made lazily: only the bytes the pipeline samples are ever built.

A file is a *kind* (text, deflate-compressed container, JPEG, zstd, media, SQLite, VM image,
...), a seed, a size and a list of *overlays* (byte ranges rewritten later: new ordinary
content of the same kind, ciphertext, base64 text). :func:`read` builds any byte range from
those, 4 KiB unit by unit: unit 0 is the kind's header (its real magic bytes), other units
come from a pool of real encoder output for that kind (zlib, zstandard, JPEG byte stuffing,
H.264-like emulation prevention), picked by the file's seed. So the probes the model sees are
the real feature functions run on real encoder bytes, not made-up numbers; and a 5 GiB VM
image costs 64 KiB of work.
"""

from __future__ import annotations

import base64
import random
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import zstandard

UNIT = 4096

_WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "by", "this", "be", "are", "from", "at", "or", "an", "it", "was", "report", "budget", "meeting", "notes", "plan", "quarter", "review", "draft", "team", "project", "client", "invoice", "total", "summary", "update", "results", "data", "analysis", "figure", "table", "section", "chapter", "version", "final", "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "holiday", "family", "photo", "trip", "school", "homework"]
_CODE = ["def", "return", "if", "else", "for", "while", "import", "from", "class", "self", "None", "True", "False", "in", "not", "and", "or", "print", "len", "range", "dict", "list", "str", "int", "float", "try", "except", "raise", "with", "as", "yield", "lambda", "async", "await", "=", "==", "+=", "(", ")", "[", "]", "{", "}", ":", ",", ".", "->", "#", "value", "result", "items", "key", "name", "path", "data", "config"]


def _text_unit(rng: random.Random, style: str) -> bytes:
    out: list[str] = []
    n = 0
    while n < UNIT + 200:
        if style == "code":
            line = "    " * rng.randrange(4) + " ".join(rng.choice(_CODE)
                                                      for _ in range(rng.randrange(2, 12)))
        elif style == "csv":
            line = ",".join(str(rng.randrange(10 ** rng.randrange(1, 7)))
                            for _ in range(rng.randrange(3, 9)))
        elif style == "log":
            line = (f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                    f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} "
                    f"{rng.choice(['INFO', 'DEBUG', 'WARN', 'ERROR'])} "
                    f"{rng.choice(['sshd', 'kernel', 'nginx', 'app', 'cron'])}"
                    f"[{rng.randrange(99999)}]: "
                    + " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 14))))
        elif style == "json":
            line = "{" + ", ".join(f'"{rng.choice(_WORDS)}": {rng.randrange(100000)}'
                                   for _ in range(rng.randrange(2, 6))) + "},"
        else:
            line = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(4, 20))) + "."
        out.append(line)
        n += len(line) + 1
    return ("\n".join(out)).encode()[:UNIT]


def _mixed_source(rng: random.Random, size: int) -> bytes:
    """Input for the compressors: text, numbers and some noise, like real documents."""
    parts: list[bytes] = []
    while sum(map(len, parts)) < size:
        r = rng.random()
        if r < 0.5:
            parts.append(_text_unit(rng, rng.choice(["prose", "code", "csv", "json"])))
        elif r < 0.8:
            # image-like rows: smooth values with noise
            base = rng.randrange(256)
            parts.append(bytes((base + int(rng.gauss(0, 6)) + i // 64) & 0xFF
                               for i in range(UNIT)))
        else:
            parts.append(rng.randbytes(UNIT // 4) * 2 + bytes(UNIT // 2))
    return b"".join(parts)[:size]


def _chop(stream: bytes, skip: int = 64) -> list[bytes]:
    s = stream[skip:]
    return [s[i:i + UNIT] for i in range(0, len(s) - UNIT + 1, UNIT)]


def _jpeg_stuff(data: bytes) -> bytes:
    return data.replace(b"\xff", b"\xff\x00")


def _h264_like(data: bytes) -> bytes:
    # emulation prevention (00 00 -> 00 00 03) and a NAL start code every ~2 KiB
    out = data.replace(b"\x00\x00", b"\x00\x00\x03")
    return b"".join(out[i:i + 2048] + b"\x00\x00\x01\x41" for i in range(0, len(out), 2048))


@lru_cache(maxsize=1)
def pools(seed: int = 1234) -> dict[str, list[bytes]]:
    """Body units per kind, from real encoders (built once; about a second)."""
    rng = random.Random(seed)
    deflate: list[bytes] = []
    zstd_: list[bytes] = []
    jpeg: list[bytes] = []
    media: list[bytes] = []
    for i in range(24):
        src = _mixed_source(rng, 160 * 1024)
        # Office files and .gz hold deflated *text*: its 4 KiB blocks look random alone and
        # its chi-square over 64 KiB is only a little above ciphertext's (measured on real
        # .gz files: 300-460), unlike deflated images.
        doc = b"".join(_text_unit(rng, rng.choice(["prose", "code", "csv", "json", "log"]))
                       for _ in range(40))
        deflate += _chop(zlib.compress(doc if i % 3 else src, rng.choice([6, 9])))
        zstd_ += _chop(zstandard.ZstdCompressor(level=rng.choice([3, 9, 19])).compress(src))
        if i % 2 == 0:
            jpeg += _chop(_jpeg_stuff(zlib.compress(src, 9)))
            media += _chop(_h264_like(zstandard.ZstdCompressor(level=1).compress(src)))
    text = {s: [_text_unit(rng, s) for _ in range(48)]
            for s in ("prose", "code", "csv", "log", "json")}
    binary = [bytes((rng.randrange(256) if rng.random() < 0.45 else rng.choice(
        (0, 0, 0, 0x48, 0x89, 0xff, 0x0f, 0xe8))) for _ in range(UNIT)) for _ in range(32)]
    sqlite = []
    for _ in range(32):
        page = bytearray(UNIT)
        rec = _text_unit(rng, rng.choice(["csv", "prose"]))[: rng.randrange(200, 3000)]
        page[UNIT - len(rec):] = rec
        page[0] = 0x0D
        sqlite.append(bytes(page))
    return {
        "deflate": deflate, "zstd": zstd_, "jpeg": jpeg, "media": media, "binary": binary,
        "sqlite": sqlite, **{f"text-{k}": v for k, v in text.items()},
        "zero": [bytes(UNIT)],
    }


# kind -> (header bytes, body pools with weights)
_HEADERS: dict[str, bytes] = {
    "zip": b"PK\x03\x04\x14\x00\x06\x00\x08\x00",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01",
    "gzip": b"\x1f\x8b\x08\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00",
    "mkv": b"\x1a\x45\xdf\xa3",
    "riff": b"RIFF\x00\x00\x00\x00AVI LIST",
    "sqlite": b"SQLite format 3\x00\x10\x00\x01\x01",
    "qcow": b"QFI\xfb\x00\x00\x00\x03",
    "elf": b"\x7fELF\x02\x01\x01\x00",
    "git-pack": b"PACK\x00\x00\x00\x02",
    "kdbx": b"\x03\xd9\xa2\x9a\x67\xfb\x4b\xb5",
    "raw": b"",
    "loose": b"x\x01",  # zlib header of a git loose object
    "pyc": b"\xa7\x0d\x0d\x0a\x00\x00\x00\x00",
    "mp3": b"ID3\x03\x00\x00\x00",
    "ogg": b"OggS\x00\x02",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
    "git-idx": b"\xfftOc\x00\x00\x00\x02",
    "7z": b"7z\xbc\xaf\x27\x1c\x00\x04",
    "tiff": b"II*\x00\x10\x00\x00\x00CR\x02\x00",
}

KINDS: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    # kind: (header, ((pool, weight), ...))
    "prose": ("", (("text-prose", 1.0),)),
    "code": ("", (("text-code", 1.0),)),
    "csv": ("", (("text-csv", 1.0),)),
    "log": ("", (("text-log", 1.0),)),
    "json": ("", (("text-json", 1.0),)),
    "zip": ("zip", (("deflate", 1.0),)),
    "pdf": ("pdf", (("deflate", 0.7), ("text-prose", 0.3))),
    "png": ("png", (("deflate", 1.0),)),
    "jpeg": ("jpeg", (("jpeg", 1.0),)),
    "gzip": ("gzip", (("deflate", 1.0),)),
    "zstd": ("zstd", (("zstd", 1.0),)),
    "mp4": ("mp4", (("media", 1.0),)),
    "mkv": ("mkv", (("media", 1.0),)),
    "avi": ("riff", (("media", 1.0),)),
    "sqlite": ("sqlite", (("sqlite", 0.8), ("zero", 0.2))),
    "vm": ("qcow", (("zero", 0.3), ("binary", 0.25), ("text-prose", 0.15),
                    ("text-log", 0.1), ("deflate", 0.1), ("jpeg", 0.05), ("zstd", 0.05))),
    "elf": ("elf", (("binary", 1.0),)),
    "pyc": ("pyc", (("binary", 0.6), ("text-code", 0.4))),
    "git-pack": ("git-pack", (("deflate", 1.0),)),
    "loose": ("loose", (("deflate", 1.0),)),
    "kdbx": ("kdbx", (("cipher", 1.0),)),
    "raw-photo": ("tiff", (("jpeg", 0.9), ("binary", 0.1))),
    "mp3": ("mp3", (("media", 1.0),)),
    "ogg": ("ogg", (("media", 1.0),)),
    "heic": ("heic", (("media", 1.0),)),
    "git-idx": ("git-idx", (("binary", 0.5), ("cipher", 0.5))),
    "vm-raw": ("raw", (("zero", 0.3), ("binary", 0.25), ("text-prose", 0.15),
                       ("text-log", 0.1), ("deflate", 0.1), ("jpeg", 0.05), ("zstd", 0.05))),
    "tiny": ("", (("text-prose", 1.0),)),
    "aes-zip": ("zip", (("cipher", 1.0),)),
    "aes-7z": ("7z", (("cipher", 1.0),)),
}


@dataclass(frozen=True, slots=True)
class Overlay:
    start: int
    end: int
    mode: str   # "plain" (new content of the file's kind), "cipher", "base64"
    seed: int
    period: int = 0  # > 0: only every other ``period`` bytes from ``start`` (stripes)

    def covers(self, off: int) -> bool:
        if not self.start <= off < self.end:
            return False
        return self.period == 0 or ((off - self.start) // self.period) % 2 == 0


@dataclass(slots=True)
class Content:
    kind: str
    seed: int
    size: int
    overlays: list[Overlay] = field(default_factory=list)
    literal: bytes | None = None  # small files with exact bytes (notes, INSTALLER files)

    def copy(self) -> Content:
        # At most 16 overlays: older edits fall back to the file's base content (the probe
        # of the old version is kept, so nothing the model sees changes).
        return Content(self.kind, self.seed, self.size, list(self.overlays[-16:]), self.literal)


def _mix(*xs: int) -> int:
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (x & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _cipher_unit(seed: int, u: int) -> bytes:
    return random.Random(_mix(seed, u, 77)).randbytes(UNIT)


def _base64_unit(seed: int, u: int) -> bytes:
    raw = base64.encodebytes(random.Random(_mix(seed, u, 64)).randbytes(3 * UNIT // 4 + 60))
    return raw[:UNIT]


def _plain_unit(kind: str, seed: int, u: int) -> bytes:
    header, mix = KINDS[kind]
    p = pools()
    h = _mix(seed, u)
    if u == 0 and header:
        body = _plain_unit(kind, seed, 1)
        return (_HEADERS[header] + body)[:UNIT]
    r = (h % 10_000) / 10_000
    acc = 0.0
    for pool, w in mix:
        acc += w
        if r < acc or pool == mix[-1][0]:
            if pool == "cipher":
                return _cipher_unit(seed, u)
            units = p[pool]
            return units[(h >> 16) % len(units)]
    raise AssertionError("unreachable")


def unit(c: Content, u: int) -> bytes:
    """The 4 KiB unit number ``u`` of the content (the newest overlay that covers it wins;
    overlays are unit aligned except the head, which an overlay starting past 0 keeps)."""
    off = u * UNIT
    for ov in reversed(c.overlays):
        if ov.covers(off) or (off < ov.start < off + UNIT <= ov.end):
            if ov.mode == "plain":
                data = _plain_unit(c.kind, ov.seed, u)
            elif ov.mode == "cipher":
                data = _cipher_unit(ov.seed, u)
            else:
                data = _base64_unit(ov.seed, u)
            if ov.start > off:  # the overlay starts inside this unit: keep what is before
                return unit(Content(c.kind, c.seed, c.size, [o for o in c.overlays
                                                             if o is not ov]), u)[
                    : ov.start - off] + data[ov.start - off:]
            return data
    return _plain_unit(c.kind, c.seed, u)


# End-of-file structures of the formats that have one (see features.TRAILERS).
_TRAILERS: dict[str, bytes] = {
    "zip": b"PK\x05\x06" + bytes(18),
    "pdf": b"\nstartxref\n123456\n%%EOF\n",
    "png": b"\x00\x00\x00\x00IEND\xaeB`\x82",
    "jpeg": b"\xff\xd9",
}


def _trailer(c: Content) -> bytes:
    """The trailer the file ends with: its format's, unless an overlay that is not plain
    content covers the end (an encryption, a base64 rewrite)."""
    t = _TRAILERS.get(KINDS[c.kind][0], b"")
    if not t or c.size < 2 * len(t):
        return b""
    last = c.size - 1
    for ov in reversed(c.overlays):
        if ov.covers(last - last % UNIT) or (ov.start <= last < ov.end and ov.period == 0):
            return t if ov.mode == "plain" else b""
    return t


def read(c: Content, offset: int, length: int) -> bytes:
    if c.literal is not None:
        return c.literal[offset:offset + length]
    data = _read(c, offset, length)
    t = _trailer(c)
    if t and offset + len(data) > c.size - len(t):
        # overwrite the part of the trailer this range holds
        lo = max(offset, c.size - len(t))
        buf = bytearray(data)
        buf[lo - offset:] = t[lo - (c.size - len(t)):][:len(buf) - (lo - offset)]
        data = bytes(buf)
    return data


def _read(c: Content, offset: int, length: int) -> bytes:
    end = min(c.size, offset + length)
    out = bytearray()
    pos = offset
    while pos < end:
        u = pos // UNIT
        data = unit(c, u)
        lo = pos - u * UNIT
        hi = min(UNIT, end - u * UNIT)
        out += data[lo:hi]
        pos = u * UNIT + hi
    return bytes(out)


def sampled_blocks(c: Content, plan: list[tuple[int, int]]) -> list[bytes]:
    return [read(c, o, n) for o, n in plan]
