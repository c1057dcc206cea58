"""Content features of one file version, computed on a few sampled blocks of its bytes.

The backup pipeline already reads every changed file; it hands this module the bytes at the
offsets :func:`sample_plan` names (a head block plus blocks spread evenly over the file) and
keeps the resulting :class:`ContentProbe` with the file, so the next backup can compare the
new version with the old one without reading the old bytes again.

What each measure is good for:

- ``entropy`` (bits per byte, 0..8) separates text and structured data (< 6.5) from
  compressed or encrypted data (> 7.5), but not compressed from encrypted.
- ``chi2`` (chi-square of the byte histogram against the uniform one, 255 degrees of
  freedom) separates them: ciphertext stays near 255 however many bytes are sampled (a
  sample of n bytes is random with 99.9% probability below ~330), while compressed formats
  (deflate, JPEG's entropy coding with its 0xFF00 stuffing, zstd's literals) keep a skew
  whose chi-square grows with n.
- ``random_blocks``: the share of sampled blocks that look like ciphertext on their own;
  intermittent encryption (every other block, header kept) shows as a share well above 0
  in a file whose type is not random, even when the whole-sample measures are blurred.
- ``magic``: the format named by the first bytes (:data:`MAGIC`), compared with the
  extension (:data:`EXTENSION_TYPES`) and with the previous version's.
- ``text``, ``base64``: printable text (ransom notes) and base64-looking output (masked
  ciphertext: 64 symbols, ~6 bits per byte, random over its alphabet).

Pure: bytes in, numbers out; numpy for the histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK = 4096          # bytes per sampled block
MAX_BLOCKS = 16       # head + up to 15 more: at most 64 KiB read per file version

# First bytes -> format name. Checked in order; the first match wins. Offsets other than 0
# are written as (offset, bytes).
MAGIC: tuple[tuple[str, int, bytes], ...] = (
    ("zip", 0, b"PK\x03\x04"),
    ("zip", 0, b"PK\x05\x06"),
    ("pdf", 0, b"%PDF-"),
    ("png", 0, b"\x89PNG\r\n\x1a\n"),
    ("jpeg", 0, b"\xff\xd8\xff"),
    ("gif", 0, b"GIF8"),
    ("gzip", 0, b"\x1f\x8b"),
    ("zstd", 0, b"\x28\xb5\x2f\xfd"),
    ("xz", 0, b"\xfd7zXZ\x00"),
    ("bzip2", 0, b"BZh"),
    ("7z", 0, b"7z\xbc\xaf\x27\x1c"),
    ("sqlite", 0, b"SQLite format 3\x00"),
    ("elf", 0, b"\x7fELF"),
    ("ole", 0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),  # old .doc/.xls
    ("qcow", 0, b"QFI\xfb"),
    ("mp4", 4, b"ftyp"),
    ("tar", 257, b"ustar"),
    ("riff", 0, b"RIFF"),  # wav, avi, webp
    ("mkv", 0, b"\x1a\x45\xdf\xa3"),
    ("mp3", 0, b"ID3"),
    ("flac", 0, b"fLaC"),
    ("ogg", 0, b"OggS"),
    ("git-pack", 0, b"PACK"),
    ("git-idx", 0, b"\xfftOc"),
    ("pem", 0, b"-----BEGIN"),
    ("tiff", 0, b"II*\x00"),  # TIFF, and the raw photo formats built on it (cr2, nef, dng)
    ("tiff", 0, b"MM\x00*"),
    ("zlib", 0, b"\x78\x01"),  # zlib streams (git loose objects): levels 0-1, 2-5, 6, 7-9
    ("zlib", 0, b"\x78\x5e"),
    ("zlib", 0, b"\x78\x9c"),
    ("zlib", 0, b"\x78\xda"),
    ("kdbx", 0, b"\x03\xd9\xa2\x9a"),
    ("age", 0, b"age-encryption.org/"),
    ("pgp", 0, b"-----BEGIN PGP MESSAGE"),
)

# Formats with an end-of-file structure: format -> (bytes, how far from the end they may
# be). The last block of :func:`sample_plan` always ends at the end of the file, so the
# probe sees it; an encryption that keeps the header rarely keeps this too.
TRAILERS: dict[str, tuple[bytes, int]] = {
    "zip": (b"PK\x05\x06", 4096),   # end of central directory (docx, xlsx, jar, epub ...)
    "pdf": (b"%%EOF", 1024),
    "png": (b"IEND", 12),
    "jpeg": (b"\xff\xd9", 512),
}

# Extension (lower case, no dot) -> the formats its content may have. An extension absent
# here expects nothing (agreement is "unknown", never a mismatch).
EXTENSION_TYPES: dict[str, frozenset[str]] = {
    **{e: frozenset({"zip"}) for e in ("zip", "docx", "xlsx", "pptx", "odt", "ods", "odp",
                                       "jar", "apk", "epub")},
    "pdf": frozenset({"pdf"}), "png": frozenset({"png"}),
    "jpg": frozenset({"jpeg"}), "jpeg": frozenset({"jpeg"}), "gif": frozenset({"gif"}),
    "gz": frozenset({"gzip"}), "tgz": frozenset({"gzip"}), "zst": frozenset({"zstd"}),
    "xz": frozenset({"xz"}), "bz2": frozenset({"bzip2"}), "7z": frozenset({"7z"}),
    "sqlite": frozenset({"sqlite"}), "sqlite3": frozenset({"sqlite"}),
    "doc": frozenset({"ole"}), "xls": frozenset({"ole"}),
    "ppt": frozenset({"ole"}), "qcow2": frozenset({"qcow"}),
    "mp4": frozenset({"mp4"}), "m4a": frozenset({"mp4"}), "mov": frozenset({"mp4"}),
    "heic": frozenset({"mp4"}), "tar": frozenset({"tar"}),
    "wav": frozenset({"riff"}), "avi": frozenset({"riff"}), "webp": frozenset({"riff"}),
    "mkv": frozenset({"mkv"}), "webm": frozenset({"mkv"}), "mp3": frozenset({"mp3"}),
    "flac": frozenset({"flac"}), "ogg": frozenset({"ogg"}), "pack": frozenset({"git-pack"}),
    "idx": frozenset({"git-idx"}), "so": frozenset({"elf", "text"}), "o": frozenset({"elf"}),
    "kdbx": frozenset({"kdbx"}), "age": frozenset({"age"}),
    **{e: frozenset({"tiff"}) for e in ("tif", "tiff", "cr2", "nef", "arw", "dng", "orf")},
    **{e: frozenset({"text"}) for e in ("txt", "md", "csv", "tsv", "json", "xml", "html",
                                        "htm", "py", "c", "h", "js", "ts", "go", "rs",
                                        "java", "rb", "sh", "yaml", "yml", "toml", "ini",
                                        "cfg", "log", "tex", "svg", "css", "sql", "rst")},
}

# Formats whose bytes are compressed (or random) by design: high entropy there is no news.
COMPRESSED_TYPES = frozenset({"zip", "png", "jpeg", "gif", "gzip", "zstd", "xz", "bzip2", "7z",
                              "mp4", "mkv", "mp3", "flac", "ogg", "git-pack", "zlib",
                              "git-idx", "kdbx", "age", "tiff", "pdf"})  # and hash tables, ciphertext

# Extensions whose content is ciphertext by design (a password safe, an encrypted file the
# user made): random bytes there are no news, unless the file was renamed into them.
ENCRYPTED_EXTENSIONS = frozenset({"gpg", "pgp", "asc", "age", "kdbx", "kdb", "p12", "pfx",
                                  "keystore", "jks", "luks", "vc", "hc", "tc", "aes256"})

# Below this many sampled bytes past the head, a compressed body cannot be told from
# ciphertext by its chi-square (the skew of compression needs bytes to show).
BODY_MIN = 32 * 1024

# A block of 4 KiB of ciphertext has entropy ~7.95 and chi-square ~255 +- 23.
RANDOM_BLOCK_ENTROPY = 7.90
RANDOM_BLOCK_CHI2 = 340.0
# A whole sample looks like ciphertext when its chi-square stays this low.
RANDOM_CHI2 = 330.0

_B64 = np.zeros(256, dtype=bool)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\r\n":
    _B64[_c] = True
_TEXT = np.zeros(256, dtype=bool)
for _c in range(32, 127):
    _TEXT[_c] = True
for _c in b"\t\r\n\x0c":
    _TEXT[_c] = True
_TEXT[128:] = True  # UTF-8 continuation and lead bytes: judged by decoding below

NOTE_WORDS = ("encrypt", "decrypt", "bitcoin", "btc", "ransom", "restore your files",
              "private key", "payment", "wallet", "tor browser", ".onion", "recover your")


def sample_plan(size: int, *, block: int = BLOCK, max_blocks: int = MAX_BLOCKS
                ) -> list[tuple[int, int]]:
    """The (offset, length) of each block to sample from a file of ``size`` bytes: the head,
    then blocks spread evenly to the end. Same size, same plan (so two versions of a file
    are sampled at the same places)."""
    if size <= 0:
        return []
    if size <= block * max_blocks:
        return [(o, min(block, size - o)) for o in range(0, size, block)]
    step = (size - block) / (max_blocks - 1)
    return [(round(i * step), block) for i in range(max_blocks)]


def histogram(data: bytes | bytearray | memoryview) -> np.ndarray:
    return np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)


def entropy_of(counts: np.ndarray) -> float:
    """Shannon entropy in bits per byte of a byte histogram (0 for no bytes)."""
    n = int(counts.sum())
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(p * np.log2(p)).sum())


def chi2_of(counts: np.ndarray) -> float:
    """Chi-square of a byte histogram against the uniform distribution (255 dof)."""
    n = int(counts.sum())
    if n == 0:
        return 0.0
    expected = n / 256.0
    return float(((counts - expected) ** 2).sum() / expected)


def entropy(data: bytes) -> float:
    return entropy_of(histogram(data))


def chi2(data: bytes) -> float:
    return chi2_of(histogram(data))


def detect_magic(head: bytes) -> str:
    """The format named by the first bytes, "text" for printable text, or "" (unknown)."""
    name = _magic_of(head)
    if name:
        return name
    if head and looks_like_text(head[:BLOCK]):
        return "text"
    return ""


def _magic_of(head: bytes) -> str:
    """The format the first bytes name by a signature, or ""."""
    for name, offset, sig in MAGIC:
        if head[offset:offset + len(sig)] == sig:
            return name
    return ""


def looks_like_text(data: bytes) -> bool:
    """Printable ASCII or valid UTF-8 with at most 2% control bytes."""
    if not data:
        return False
    counts = histogram(data)
    if counts[0]:
        return False
    # Control bytes (not tab, CR, LF, FF) at most 2%; bytes >= 128 are allowed whatever
    # the encoding (UTF-8, Latin-1, CP1252 text): random or compressed data has ~11%
    # control bytes and NULs, so it never passes.
    return not counts[~_TEXT].sum() > 0.02 * len(data)


def looks_like_base64(data: bytes) -> bool:
    """Long runs of the base64 alphabet only, and close to uniform over it (6 bits/byte):
    what masked ciphertext looks like. English text uses the same letters but is far from
    uniform (and has spaces)."""
    if len(data) < 256:
        return False
    counts = histogram(data)
    if counts[~_B64].sum():
        return False
    body = counts.copy()
    for c in b"\r\n=":
        body[c] = 0
    h = entropy_of(body)
    return h > 5.7


def extension_agrees(ext: str, magic: str) -> bool | None:
    """True when the content's format is one the extension allows, False when it is not,
    None when the extension expects nothing in particular or the magic is unknown text."""
    allowed = EXTENSION_TYPES.get(ext.lower().lstrip("."))
    if allowed is None:
        return None
    # PEM is text with a header of its own.
    return magic in allowed or ("text" in allowed and magic == "pem")


def note_words(data: bytes) -> int:
    """How many ransom-note phrases a small text contains."""
    low = bytes(data[:16384]).lower()
    return sum(1 for w in NOTE_WORDS if w.encode() in low)


@dataclass(frozen=True, slots=True)
class ContentProbe:
    """What the sampled bytes of one file version say. Small (kept per file by the node)."""

    magic: str              # format from the first bytes, "text", or "" (unknown)
    entropy: float          # bits per byte over all sampled bytes
    chi2: float             # chi-square over all sampled bytes
    random_blocks: float    # share of sampled blocks that look like ciphertext alone
    text: bool              # the sampled bytes are text
    base64: bool            # the sampled bytes (past the head) look like base64 output
    note_words: int = 0     # ransom-note phrases (text files only)
    sampled: int = 0        # bytes sampled (0 in records made before this field existed)
    body_entropy: float = 0.0  # the same measures over the blocks after the head
    body_chi2: float = 0.0
    trailer: int = -1       # the format's end-of-file structure: 1 there, 0 missing, -1 n/a

    @property
    def random_like(self) -> bool:
        """The sample as a whole looks like ciphertext (not merely compressed)."""
        # The chi-square of random data does not grow with the sample size: one bound fits.
        return self.entropy > 7.9 and self.chi2 < RANDOM_CHI2

    @property
    def body_random(self) -> bool:
        """The blocks after the head look like ciphertext (and there are enough of them to
        tell): what "header kept, the rest encrypted" leaves."""
        return (self.sampled - BLOCK >= BODY_MIN and self.body_entropy > 7.9
                and self.body_chi2 < RANDOM_CHI2)

    def to_record(self) -> list[object]:
        """A compact list for the node to keep with the file (CBOR/JSON friendly)."""
        return [self.magic, round(self.entropy, 3), round(self.chi2, 1),
                round(self.random_blocks, 3), self.text, self.base64, self.note_words,
                self.sampled, round(self.body_entropy, 3), round(self.body_chi2, 1),
                self.trailer]

    @classmethod
    def from_record(cls, rec: Sequence[object]) -> ContentProbe:
        """Inverse of :meth:`to_record` (also reads the 7-field records of the first
        version); raises ValueError on anything else."""
        if not isinstance(rec, (list, tuple)) or len(rec) not in (7, 10, 11):
            raise ValueError("not a content probe record")
        magic, ent, c2, rb, text, b64, nw, *body = rec
        if not (isinstance(magic, str) and isinstance(text, bool) and isinstance(b64, bool)):
            raise ValueError("not a content probe record")
        nums: list[Any] = [ent, c2, rb, nw, *(body or (0, 0.0, 0.0)),
                           *((-1,) if len(body) < 4 else ())]
        try:
            return cls(magic, float(nums[0]), float(nums[1]), float(nums[2]), text, b64,
                       int(nums[3]), int(nums[4]), float(nums[5]), float(nums[6]),
                       int(nums[7]))
        except (TypeError, ValueError):
            raise ValueError("not a content probe record")


def _block_counts(blocks: Sequence[bytes], joined: bytes) -> np.ndarray:
    """Each block's byte histogram (row i: block i), from one ``bincount`` over the joined
    bytes (each byte offset by 256 times its block's index): one pass instead of one call,
    cast and stack per block."""
    data = np.frombuffer(joined, dtype=np.uint8)
    lengths = [len(b) for b in blocks]
    n = len(blocks)
    if n <= MAX_BLOCKS and all(x == BLOCK for x in lengths[:-1]) and lengths[-1] <= BLOCK:
        key = _BLOCK_OFFSETS[:len(data)] + data  # the usual plan: full blocks, the last may be short
    else:
        key = np.repeat(np.arange(n, dtype=np.intp) * 256, lengths) + data
    return np.bincount(key, minlength=n * 256).reshape(n, 256)


# Block index * 256 of each byte offset of the joined blocks of a usual plan.
_BLOCK_OFFSETS = np.repeat(np.arange(MAX_BLOCKS, dtype=np.intp) * 256, BLOCK)


def _text_counts(counts: np.ndarray, n: int) -> bool:
    """``looks_like_text`` of ``n`` bytes whose histogram is ``counts``."""
    return n > 0 and not counts[0] and not counts[~_TEXT].sum() > 0.02 * n


def probe(blocks: Sequence[bytes]) -> ContentProbe:
    """Probe a file version from the blocks :func:`sample_plan` names, head block first
    (the last one ends at the end of the file)."""
    if not blocks or not blocks[0]:
        return ContentProbe("", 0.0, 0.0, 0.0, False, False, 0)
    head = blocks[0]
    joined = b"".join(blocks)
    counts = _block_counts(blocks, joined)  # row i: block i's byte histogram
    lengths = counts.sum(axis=1)
    total = counts.sum(axis=0)
    body = total - counts[0]
    full = lengths >= 1024
    counted = int(full.sum())
    rnd = 0
    if counted:
        c = counts[full].astype(np.float64)
        n = lengths[full].astype(np.float64)[:, None]
        p = c / n
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(c > 0, p * np.log2(p), 0.0).sum(axis=1)
        chi = ((c - n / 256.0) ** 2 / (n / 256.0)).sum(axis=1)
        # Entropy measured on n bytes of random data falls short of 8 by ~255/(2n ln 2).
        floor = RANDOM_BLOCK_ENTROPY - 255.0 / (2 * n[:, 0] * 0.6931) + 255.0 / (2 * BLOCK * 0.6931)
        rnd = int(((ent > floor) & (chi < RANDOM_BLOCK_CHI2)).sum())
    # (the histograms at hand stand for the slices they cover: the head block up to BLOCK
    # bytes, all of the sample up to 64 KiB)
    magic = (detect_magic(head) if len(head) > BLOCK
             else _magic_of(head) or ("text" if _text_counts(counts[0], len(head)) else ""))
    text = magic == "text" and (looks_like_text(joined[:65536]) if len(joined) > 65536
                                else _text_counts(total, len(joined)))
    # Base64 output: the blocks past the head (which may be kept) are base64; a file of
    # one block is judged past its first 64 bytes. The cheap histogram test goes first.
    if len(joined) - len(head) < 1024:
        b64 = looks_like_base64(joined[64:] if len(joined) > 320 else joined)
    else:
        b64 = not body[~_B64].any() and looks_like_base64(joined[len(head):])
    if (not b64 and len(joined) >= 512
            and _B64[np.frombuffer(joined[-64:], dtype=np.uint8)].all()):
        # A kept header as long as half a small file: the second half is base64.
        b64 = looks_like_base64(joined[len(joined) // 2:])
    return ContentProbe(
        magic=magic,
        entropy=entropy_of(total),
        chi2=chi2_of(total),
        random_blocks=rnd / counted if counted else 0.0,
        text=text,
        base64=b64,
        note_words=note_words(joined) if text else 0,
        sampled=len(joined),
        body_entropy=entropy_of(body),
        body_chi2=chi2_of(body),
        trailer=_trailer(magic, blocks[-1]),
    )


def _trailer(magic: str, tail: bytes) -> int:
    t = TRAILERS.get(magic)
    if t is None:
        return -1
    sig, within = t
    return int(sig in tail[-within:])
