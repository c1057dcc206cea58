"""``mount DIR``: browse the snapshots as a read-only file system until Ctrl-C
(node/runtime/mountfs.py).

Not a typed call: the file system lives in this process (FUSE talks to it), which holds the
key and decrypts. Beside a running daemon it takes no home lock and asks the daemon for the
packs that live only on holders (``pack-read``); without one it holds the home like any
command run in place and fetches those packs itself (the same operation, a transient host).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from corestate.node.cli.context import _passphrase
from corestate.node.cli.output import Out
from corestate.node.home import Home

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.local import LocalNode
    from corestate.node.runtime.port import TransientMeshPort

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
    from corestate.node.local import LocalNode, read_generation
    from corestate.node.runtime.client import connect
    from corestate.node.runtime.mountfs import MountStore, SnapshotFS, serve
    from corestate.node.runtime.port import TransientMeshPort
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
    s = connect(home.path)
    with_daemon = s is not None
    if s is not None:
        s.close()
    passphrase = _passphrase(args)
    in_place: LocalNode | None = None
    port: TransientMeshPort | None = None
    remote = None
    if with_daemon:
        root = keystore.unseal(home.key_path.read_bytes(), passphrase, hsm_module=args.hsm_module)
        keys = NodeKeys.from_root(root, generation=read_generation(home))
    else:
        # No daemon: this process holds the home, like any command run in place, and
        # fetches the packs that live only on holders itself (a transient host).
        # A node without peers has every pack here: it lets the home go at once.
        in_place = LocalNode.open(home, passphrase, hsm_module=args.hsm_module)
        keys = in_place.keys
        if in_place.has_holders():
            port = TransientMeshPort(lambda: in_place)
            remote = _in_place_reader(in_place, port)
        else:
            in_place.close()
            in_place = None
    cfg = home.config()
    store = MountStore(LocalPackStore(home.store_dir(cfg)), home.path, remote=remote)
    repo = Repository(keys, store, str(home.db_path), readonly=True)
    try:
        fs = SnapshotFS(repo)
        snaps = fs.snapshots()

        def ready() -> None:
            how = ("packs that live only on holders come through the daemon" if with_daemon
                   else "no daemon runs: this mount holds the home until it ends and fetches "
                   "from the holders itself" if in_place is not None else "every pack is local")
            out.say(f"mounted {len(snaps)} snapshot(s) read-only on {target} ({how}); Ctrl-C unmounts")
            sys.stdout.flush()
        trio.run(lambda: serve(fs, target, ready=ready, debug=args.debug))
    finally:
        repo.close()
        if port is not None:
            port.close()
        if in_place is not None:
            in_place.close()
    out.say(f"unmounted {target}")
    return 0


def _in_place_reader(node: LocalNode, port: TransientMeshPort) -> Callable[[bytes, int, int], bytes]:
    """Ciphertext ranges of a pack, read the way the daemon would (node/app/mount.py)."""
    from corestate.node.app import Local
    from corestate.node.app.mount import pack_read
    from corestate.protocol import control as c
    ctx = Local(port=port)

    def read(pack: bytes, offset: int, length: int) -> bytes:
        return pack_read(node, c.PackReadCall(pack=pack, offset=offset, length=length), ctx).data
    return read


__all__ = ["INSTALL_HINT", "cmd_mount"]
