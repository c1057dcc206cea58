"""``mount DIR``: browse the snapshots as a read-only file system until Ctrl-C
(node/runtime/mountfs.py).

Not a typed call: the file system lives in this process (FUSE talks to it), which holds the
key and decrypts. It takes no home lock, so it runs beside the daemon (which it asks for
packs that live only on holders) or alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from corestate.node.cli.context import _passphrase
from corestate.node.cli.output import Out
from corestate.node.home import Home

from corestate.errors import CoreStateError

INSTALL_HINT = ("install the FUSE library and the Python binding: `apt install fuse3 libfuse3-dev "
                "pkg-config` (Debian/Ubuntu), then `pip install 'corestate[mount]'`")


def cmd_mount(args: argparse.Namespace, out: Out) -> int:
    try:
        import pyfuse3  # noqa: F401 (only to say what is missing, before asking for the passphrase)
    except ImportError as exc:
        raise CoreStateError(f"`corestate mount` needs pyfuse3, which is not installed ({exc})",
                             hint=INSTALL_HINT) from None
    if not os.path.exists("/dev/fuse"):
        raise CoreStateError("`corestate mount` needs /dev/fuse, which this machine does not have",
                             hint="load the fuse module (`modprobe fuse`), or in a container pass --device /dev/fuse")
    import trio
    from corestate.node import keystore
    from corestate.node.engine.repo import Repository
    from corestate.node.engine.store import LocalPackStore
    from corestate.node.local import read_generation
    from corestate.node.runtime.client import connect
    from corestate.node.runtime.mountfs import MountStore, SnapshotFS, serve
    from corestate.protocol.keys import NodeKeys

    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Home(args.home)
    home.require()
    target = Path(args.dir).absolute()
    if not target.is_dir():
        raise CoreStateError(f"{target} is not a folder", hint="create an empty folder to mount on")
    if os.path.ismount(target):
        raise CoreStateError(f"something is already mounted on {target}",
                             hint=f"unmount it first (`fusermount3 -u {target}`)")
    root = keystore.unseal(home.key_path.read_bytes(), _passphrase(args), hsm_module=args.hsm_module)
    keys = NodeKeys.from_root(root, generation=read_generation(home))
    cfg = home.config()
    store = MountStore(LocalPackStore(home.store_dir(cfg)), home.path)
    repo = Repository(keys, store, str(home.db_path), readonly=True)
    try:
        fs = SnapshotFS(repo)
        snaps = fs.snapshots()
        with_daemon = connect(home.path)
        if with_daemon is not None:
            with_daemon.close()

        def ready() -> None:
            how = ("packs that live only on holders come through the daemon" if with_daemon is not None
                   else "no daemon runs: packs that live only on holders cannot be read")
            out.say(f"mounted {len(snaps)} snapshot(s) read-only on {target} ({how}); Ctrl-C unmounts")
            sys.stdout.flush()
        trio.run(lambda: serve(fs, target, ready=ready, debug=args.debug))
    finally:
        repo.close()
    out.say(f"unmounted {target}")
    return 0


__all__ = ["INSTALL_HINT", "cmd_mount"]
