"""In-memory stand-ins for the kernel layer: a file tree, snapshot sessions, a change journal.

Pure: no OS calls, no clock, no randomness; the simulator and unit tests drive it. It
implements the same protocols as the real providers (:class:`SnapshotSession` of
``corestate.kernel.snapshot``, the ``mark`` / ``changes_since`` of ``kernel.journal``) so
code written against them runs unchanged on it.

- :class:`FakeTree`: files (bytes) and folders under one root, with a change counter.
  Every write, create, delete and rename bumps the counter and records the path (both
  names on a rename), like a file system journal would.
- ``tree.snapshot()`` -> :class:`FakeSession` (provider ``"fake"``): a frozen copy of the
  tree at one instant; ``changed_paths()`` relative to the parent session kept with
  ``close(keep_as_parent=True)``; ``open_file`` gives a ``BytesIO``; ``walk()`` lists the
  frozen files (the real providers are walked with ``os.scandir`` instead).
- :class:`FakeJournal`: tokens are ``"<run>:<counter>"``; ``restart()`` starts a new run
  (tokens of the old run need a full walk, as after daemon downtime) and ``overflow()``
  records a gap.

Invariants: a session's view never changes after it was taken; at most one parent is
kept per tree; ``live_sessions`` counts sessions not yet closed (tests assert 0 to prove
cleanup).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from corestate.kernel.changes import ChangeSet

Range = tuple[int, int]


@dataclass
class _Node:
    data: bytes | None  # None = folder
    version: int  # counter value of the last change


@dataclass
class FakeTree:
    """A mutable in-memory tree; paths are relative ``Path`` objects (``Path()`` is the root).

    ``Path`` here is only a value: nothing in this module touches the file system.
    """

    nodes: dict[Path, _Node] = field(default_factory=dict)
    counter: int = 0
    log: list[tuple[int, Path | None]] = field(default_factory=list)  # None = gap
    parent: FakeSession | None = None
    live_sessions: int = 0

    def __post_init__(self) -> None:
        self.nodes.setdefault(Path(), _Node(None, 0))

    def _touch(self, p: Path) -> int:
        self.counter += 1
        self.log.append((self.counter, p))
        return self.counter

    def _parent_dir(self, p: Path) -> None:
        parent = p.parent
        node = self.nodes.get(parent)
        if node is None:
            self.mkdir(parent)
        elif node.data is not None:
            raise NotADirectoryError(str(parent))
        else:
            node.version = self._touch(parent)

    def mkdir(self, p: str | Path) -> None:
        p = Path(p)
        if p in self.nodes:
            return
        self._parent_dir(p)
        self.nodes[p] = _Node(None, self._touch(p))

    def write(self, p: str | Path, data: bytes) -> None:
        p = Path(p)
        if p not in self.nodes:
            self._parent_dir(p)
        self.nodes[p] = _Node(bytes(data), self._touch(p))

    def read(self, p: str | Path) -> bytes:
        node = self.nodes[Path(p)]
        if node.data is None:
            raise IsADirectoryError(str(p))
        return node.data

    def delete(self, p: str | Path) -> None:
        p = Path(p)
        for q in [q for q in self.nodes if q == p or p in q.parents]:
            del self.nodes[q]
            self._touch(q)
        self.nodes[p.parent].version = self._touch(p.parent)

    def rename(self, src: str | Path, dst: str | Path) -> None:
        src, dst = Path(src), Path(dst)
        if dst in self.nodes:
            self.delete(dst)
        self._parent_dir(dst)
        for q in sorted([q for q in self.nodes if q == src or src in q.parents], key=len_parts):
            node = self.nodes.pop(q)
            new = dst / q.relative_to(src)
            node.version = self._touch(new)
            self._touch(q)
            self.nodes[new] = node
        self.nodes[src.parent].version = self._touch(src.parent)

    def snapshot(self) -> FakeSession:
        self.live_sessions += 1
        frozen = {p: _Node(n.data, n.version) for p, n in self.nodes.items()}
        return FakeSession(self, frozen, self.counter, self.parent)


def len_parts(p: Path) -> int:
    return len(p.parts)


class FakeSession:
    """A frozen view of a :class:`FakeTree`; implements ``SnapshotSession``."""

    provider = "fake"

    def __init__(
        self,
        tree: FakeTree,
        nodes: dict[Path, _Node],
        at: int,
        parent: FakeSession | None,
    ) -> None:
        self._tree = tree
        self._nodes = nodes
        self.at = at
        self._parent = parent
        self.root = Path()
        self.exclude: list[Path] = []
        self._closed = False

    def walk(self) -> Iterator[tuple[Path, bool]]:
        """(path, is_folder) of everything in the snapshot, parents before children."""
        for p in sorted(self._nodes, key=lambda q: q.parts):
            yield p, self._nodes[p].data is None

    def open_file(self, walk_path: Path) -> BinaryIO:
        node = self._nodes[Path(walk_path)]
        if node.data is None:
            raise IsADirectoryError(str(walk_path))
        return io.BytesIO(node.data)

    def is_stable(self, walk_path: Path) -> bool:
        return True

    def changed_paths(self) -> Iterable[Path] | None:
        if self._parent is None:
            return None
        since = self._parent.at
        return sorted(
            {p for n, p in self._tree.log if since < n <= self.at and p is not None},
            key=lambda q: q.parts,
        )

    def block_changes(self, walk_path: Path) -> list[Range] | None:
        if self._parent is None:
            return None
        old = self._parent._nodes.get(Path(walk_path))
        new = self._nodes.get(Path(walk_path))
        if old is None or new is None or old.data is None or new.data is None:
            return None
        block = 4096  # compare block by block, like extents of a real file system
        out: list[Range] = []
        for off in range(0, len(new.data), block):
            if new.data[off : off + block] != old.data[off : off + block]:
                end = min(off + block, len(new.data))
                if out and out[-1][0] + out[-1][1] == off:
                    out[-1] = (out[-1][0], end - out[-1][0])
                else:
                    out.append((off, end - off))
        return out

    def walked(self) -> None:
        pass

    def close(self, keep_as_parent: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._tree.live_sessions -= 1
        if keep_as_parent:
            self._parent = None  # drop the chain: at most one parent is kept
            self._tree.parent = self


class FakeJournal:
    """Change source over a :class:`FakeTree`, with the journal's tokens and gap rules."""

    def __init__(self, tree: FakeTree) -> None:
        self.tree = tree
        self.run = 1
        self._start = tree.counter

    def restart(self) -> None:
        """Daemon downtime: tokens issued before need a full walk."""
        self.run += 1
        self._start = self.tree.counter

    def overflow(self) -> None:
        self.tree.counter += 1
        self.tree.log.append((self.tree.counter, None))

    def mark(self) -> str:
        return f"{self.run}:{self.tree.counter}"

    def changes_since(self, token: str | None) -> ChangeSet:
        new = self.mark()
        run, _, seq_s = (token or "").partition(":")
        if not token or not seq_s.isdigit():
            return ChangeSet(None, new, "no journal token: first backup")
        if run != str(self.run):
            return ChangeSet(None, new, "the journal was not running for part of the interval")
        seq = int(seq_s)
        changed = [p for n, p in self.tree.log if n > seq]
        if any(p is None for p in changed):
            return ChangeSet(None, new, "queue overflowed")
        return ChangeSet(frozenset(p for p in changed if p is not None), new)
