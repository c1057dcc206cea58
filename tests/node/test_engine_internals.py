"""Engine invariants that the CLI tests cannot pin down."""

from __future__ import annotations

import os
from pathlib import Path

from corestate.node.engine.backup import Backup
from corestate.node.engine.inspect import check
from corestate.node.engine.repo import Repository
from corestate.node.engine.store import LocalPackStore
from corestate.node.home import Config
from corestate.protocol.keys import NodeKeys


def test_worker_processes_never_reuse_a_pack_salt(tmp_path: Path) -> None:
    # A tree emitted by the walking process before the workers are forked sits in its
    # open pack; a worker must start a pack of its own (fresh salt, fresh nonces).
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "link").symlink_to("nowhere")
    (src / "file").write_bytes(os.urandom(100_000))
    keys = NodeKeys.from_root(b"\5" * 32)
    store = LocalPackStore(tmp_path / "store")
    store.create()
    repo = Repository(keys, store, str(tmp_path / "db"))
    b = Backup(repo, Config(), skip_dirs=[], exclude=[], workers=2)
    b.max_pending = 0  # finish every directory as soon as it is walked
    b.run([src])
    salts = [salt for _, salt, _, _ in repo.packs()]
    assert len(salts) >= 3 and len(salts) == len(set(salts))
    assert check(repo, read_data=True).ok
    repo.close()
