"""Compare two directory trees by content and metadata (used by ``demo`` and the tests).

Compared per entry: type, mode, uid, gid, mtime in ns (not for symlinks' own times on
file systems that cannot set them), size, content, symlink target, xattrs, and which
regular files are hard links of one another.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot_tree(root: Path, *, mtimes: bool = True) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], str] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(p, base))
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            extra: tuple = ()
            if stat.S_ISREG(st.st_mode):
                h = hashlib.blake2b()
                with open(p, "rb") as f:
                    while b := f.read(1 << 20):
                        h.update(b)
                link = inodes.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else None
                extra = (st.st_size, h.hexdigest(), link)
            elif stat.S_ISLNK(st.st_mode):
                extra = (os.readlink(p),)
            try:
                xattrs = tuple(sorted(
                    (n, os.getxattr(p, n, follow_symlinks=False))
                    for n in os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xattrs = ()
            mt = st.st_mtime_ns if mtimes and not stat.S_ISDIR(st.st_mode) else 0
            dmt = st.st_mtime_ns if mtimes and stat.S_ISDIR(st.st_mode) else 0
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mt, dmt, xattrs, *extra)
    return out


def differences(a: Path, b: Path, *, mtimes: bool = True) -> list[str]:
    """Human-readable differences between two trees; empty when identical."""
    x, y = snapshot_tree(a, mtimes=mtimes), snapshot_tree(b, mtimes=mtimes)
    out = []
    for k in sorted(x.keys() | y.keys()):
        if k not in y:
            out.append(f"missing: {k}")
        elif k not in x:
            out.append(f"extra: {k}")
        elif x[k] != y[k]:
            out.append(f"differs: {k}: {x[k]} != {y[k]}")
    return out
