"""Silent corruption: re-read a few files the files cache vouched for, and compare.

A backup skips a file whose stat (inode, size, mtime, ctime) matches its files-cache entry.
Content that changed under an unchanged stat — bit rot on the source disk, a tool that
restores mtimes — would never be read again, and the next snapshots would quietly keep
pointing at the old chunks while the disk holds something else. So each backup re-reads a
small random sample of cache hits, cuts them exactly as a backup would (keyed FastCDC, keyed
BLAKE3) and compares the chunk ids with the cached ones.

Invariants:

- bounded: at most ``max_files`` files and ``max_bytes`` bytes are read per backup; a file
  larger than the budget left is passed over, never read in part;
- the sample is drawn by an RNG the caller seeds (from the node's key and the backup's
  time): reproducible for one backup, different across backups, unguessable from outside;
- only a file whose stat matches its cache entry before and after the read, and is not
  racy (its ctime older than the cache's racy window when it was cached: ``exact``), can
  be a finding: a file written meanwhile is not corruption;
- nothing is stored and nothing changes in the cache: the snapshot keeps the content the
  cache knew (the last good one), and the finding is reported for a person to look at.
"""

from __future__ import annotations

import io
import os
import random
import stat
from dataclasses import dataclass, field

from corestate.node.engine.repo import Repository
from corestate.node.home import Config

_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# How many random draws at most per file wanted (rows may be outside the paths, or gone).
DRAWS_PER_FILE = 8


@dataclass(slots=True)
class Resampled:
    checked: int = 0
    bytes_read: int = 0
    mismatches: list[bytes] = field(default_factory=list)  # paths whose content changed


def resample(repo: Repository, cfg: Config, roots: list[bytes], rng: random.Random, *,
             max_files: int, max_bytes: int, skip: set[bytes] = frozenset()) -> Resampled:  # type: ignore[assignment]
    """Re-read up to ``max_files`` cache hits under ``roots`` (not those in ``skip``: read
    by this backup anyway) within ``max_bytes``; report those whose content changed."""
    out = Resampled()
    if max_files <= 0 or max_bytes <= 0:
        return out
    row = repo.db.execute("SELECT max(rowid) FROM files_cache").fetchone()
    top = row[0] if row and row[0] else 0
    if not top:
        return out
    prefixes = [r.rstrip(b"/") + b"/" for r in roots]

    def under(p: bytes) -> bool:
        return any(p == r or p.startswith(pre) for r, pre in zip(roots, prefixes, strict=True))

    tried: set[bytes] = set()
    for _ in range(max_files * DRAWS_PER_FILE):
        if out.checked >= max_files or out.bytes_read >= max_bytes:
            break
        hit = repo.db.execute(
            "SELECT path, ino, size, mtime_ns, ctime_ns, chunks, exact FROM files_cache "
            "WHERE rowid >= ? ORDER BY rowid LIMIT 1", (rng.randint(1, top),)).fetchone()
        if hit is None:
            continue
        path, ino, size, mtime_ns, ctime_ns, chunks, exact = hit
        if path in tried or path in skip or not exact or not under(path):
            continue
        tried.add(path)
        if size > max_bytes - out.bytes_read:
            continue
        got = _ids_now(repo, cfg, path, (ino, size, mtime_ns, ctime_ns))
        if got is None:
            continue  # gone, changed visibly, or unreadable: the next backup sees it
        out.checked += 1
        out.bytes_read += size
        if b"".join(got) != chunks:
            out.mismatches.append(path)
    return out


def _ids_now(repo: Repository, cfg: Config, path: bytes, cached: tuple[int, int, int, int]) -> list[bytes] | None:
    """The chunk ids of the file as it is now, cut as a backup cuts it; None when its
    stat does not match ``cached`` before and after the read."""
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != cached:
            return None
        keys = repo.keys
        ids: list[bytes] = []
        if st.st_size < cfg.min_size:
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:
                return None
            if data:
                ids.append(keys.chunk_id(data))
        else:
            from pyfastcdc import FastCDC
            cdc = FastCDC(cfg.avg_size, min_size=cfg.min_size, max_size=cfg.max_size, seed=keys.chunker_seed)
            for c in cdc.cut_stream(io.FileIO(fd, closefd=False)):
                ids.append(keys.chunk_id(c.data))
        after = os.fstat(fd)
        if (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) != cached:
            return None
        return ids
    except OSError:
        return None
    finally:
        os.close(fd)


__all__ = ["Resampled", "resample"]
