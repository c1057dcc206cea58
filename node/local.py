"""A node opened on this machine without a daemon: home, keys, repository, under the lock.

This is what the CLI uses when no daemon runs for the home (the mesh issue adds the
daemon; it opens the same object once and keeps it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from corestate.node import keystore
from corestate.node.engine.repo import Repository
from corestate.node.engine.store import LocalPackStore, StagingPackStore
from corestate.node.errors import HomeBusy, StoreError
from corestate.node.group import GroupNode
from corestate.node.home import Config, Home
from corestate.node.ledger import Ledger
from corestate.node.peers import AddressBook
from corestate.protocol.keys import NodeKeys

if TYPE_CHECKING:
    from corestate.node.targets.registry import TargetSpec


class LocalNode:
    def __init__(self, home: Home, cfg: Config, keys: NodeKeys, repo: Repository,
                 ledger: Ledger, book: AddressBook, group: GroupNode) -> None:
        self.home, self.cfg, self.keys, self.repo = home, cfg, keys, repo
        self.ledger, self.book, self.group = ledger, book, group

    @classmethod
    def open(cls, home: Home, passphrase: bytes, *, hsm_module: str | None = None) -> LocalNode:
        """``hsm_module``: a PKCS#11 module the user named (``--hsm-module``), loaded instead
        of the one the key file names (keystore.unseal)."""
        home.require()
        home.lock()
        try:
            cfg = home.config()
            root = keystore.unseal(home.key_path.read_bytes(), passphrase, hsm_module=hsm_module)
            keys = NodeKeys.from_root(root, generation=read_generation(home))
            # The PeerIDs this node had under earlier identity generations (newest first).
            earlier = [NodeKeys.from_root(root, generation=g).peer_id for g in range(keys.generation - 1, -1, -1)]
            ledger = Ledger(str(home.path / "mesh.db"))
            book = AddressBook(home.path / "peers.db")
            store = StagingPackStore(home.store_dir(cfg), ledger.remote_only)
            try:
                store.create()
            except OSError as exc:
                raise StoreError(f"cannot create the store at {store.root}: {exc.strerror}",
                                 hint="check config.toml [store] path and its permissions")
            repo = Repository(keys, store, str(home.db_path))
            node = cls(home, cfg, keys, repo, ledger, book, GroupNode(home.path / "group.db", keys))
            node.earlier_ids = earlier
            node.problems = repo.sync()
            return node
        except BaseException:
            home.unlock()
            raise

    problems: list[tuple[bytes, str]]
    earlier_ids: list[str]

    def close(self) -> None:
        self.repo.close()
        self.ledger.close()
        self.book.close()
        self.group.close()
        self.home.unlock()

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def skip_dirs(self) -> list[Path]:
        """Never back these up: the node's own home and store."""
        return [self.home.path, self.home.store_dir(self.cfg)]

    def trusted_peers(self) -> list[str]:
        """Who may hold this node's shares: peers the user added and group members,
        never a removed member, never this node."""
        removed = self.group.removed()
        peers = {e.peer for e in self.book.trusted()} | set(self.group.members())
        return sorted(p for p in peers if p != self.keys.peer_id and p not in removed)

    def targets(self) -> list[TargetSpec]:
        """The storage targets of this home (``targets.json``): holders named
        ``target:NAME``, used only by this node."""
        from corestate.node.targets import registry
        return registry.load(self.home.path)

    def has_holders(self) -> bool:
        """Whether anything can hold this node's shares (trusted peers, group members or
        storage targets): such a node sends its packs out through the mesh; one without is
        a standalone repository."""
        return bool(self.trusted_peers() or self.targets())

    def authorized(self, peer: str) -> bool:
        """May ``peer`` use this node's services beyond the small global quota? In a
        group: members (and peers the user added) only."""
        if peer in self.group.removed():
            return False
        if self.group.is_member(peer):
            return True
        e = self.book.get(peer)
        return e is not None and e.trusted

    def metadata_packs(self) -> set[bytes]:
        """Packs holding trees or snapshot records: kept locally as a cache even when
        their shares are on peers, so listing and planning need no network."""
        return {r[0] for r in self.repo.db.execute("SELECT DISTINCT pack FROM blobs WHERE kind != 0")}


def read_generation(home: Home) -> int:
    """The identity generation of this home (``HOME/generation``; absent = 0). A stolen
    machine's identity is removed from the group and its owner recovers with the next
    generation: a new PeerID, the same data keys."""
    try:
        return int((home.path / "generation").read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        raise StoreError(f"{home.path / 'generation'} is not a number", hint="it holds the identity generation, e.g. 1")


def init_home(home: Home, root: bytes, passphrase: bytes, *, hsm: tuple[str, str] | None = None,
              generation: int = 0, kdf_cost: tuple[int, int] = (keystore.OPS, keystore.MEM)) -> NodeKeys:
    """Create a node home holding ``root`` sealed under ``passphrase`` (or, with ``hsm``,
    by a key in that PKCS#11 module's token, ``passphrase`` being the PIN). ``kdf_cost``
    is the Argon2id cost (``keystore.seal``): lowered only for throwaway test homes."""
    home.create()
    try:
        home.lock()
    except HomeBusy:
        raise
    try:
        keystore.write_key(home.key_path, root, passphrase, hsm=hsm, cost=kdf_cost)
        cfg = home.config()
        LocalPackStore(home.store_dir(cfg)).create()
        if generation:
            (home.path / "generation").write_text(f"{generation}\n")
        keys = NodeKeys.from_root(root, generation=generation)
        Repository(keys, LocalPackStore(home.store_dir(cfg)), str(home.db_path)).close()
        os.chmod(home.key_path, 0o600)
        return keys
    finally:
        home.unlock()
