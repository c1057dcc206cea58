"""The calling side of the share service against a lying holder (issue 11).

A real ``Mesh`` (its own libp2p host, vault, ledger and address book in a temp folder)
fetches a share whose size it recorded at upload from a holder built from the protocol
modules that announces far more bytes than that. The client must refuse on the
announcement, before it takes the body: a holder must not make it buffer up to 1 GiB.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
from corestate.erasure.share import HEADER_SIZE
from corestate.node.ledger import Ledger, ShareRow
from corestate.node.peers import AddressBook
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.mesh import SHARE_PROTOCOL, Mesh
from corestate.node.runtime.vault import ShareVault
from corestate.protocol import messages as m
from corestate.protocol.keys import NodeKeys
from corestate.protocol.p2p import open_host
from corestate.protocol.streams import Channel, Stream

MiB = 1 << 20


async def test_a_fetch_refuses_an_announced_size_other_than_the_recorded_one(tmp_path: Path) -> None:
    announced = 64 * MiB
    pushed: list[int] = []

    async def liar(stream: Stream) -> None:
        ch = Channel(stream, timeout=10)
        req = await ch.receive()
        assert isinstance(req, m.GetShare)
        await ch.send(m.ShareData(size=announced, digest=bytes(32)))
        sent = 0
        try:
            while sent < announced:
                with trio.fail_after(6):
                    await stream.send_all(bytes(MiB))
                sent += MiB
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        pushed.append(sent)

    keys = NodeKeys.from_root(os.urandom(32))
    vault = ShareVault(tmp_path / "shares")
    book = AddressBook(tmp_path / "peers.db")
    ledger = Ledger(str(tmp_path / "mesh.db"))
    try:
        async with open_host(os.urandom(32), ["/ip4/127.0.0.1/tcp/0"]) as holder, \
                open_host(keys.identity_seed, ["/ip4/127.0.0.1/tcp/0"]) as host:
            holder.set_handler(SHARE_PROTOCOL, liar)
            addr = next(a for a in holder.addrs() if a.startswith("/ip4/127.0.0.1/"))
            book.add(holder.peer_id, [addr.rsplit("/p2p/", 1)[0]], trusted=True)
            mesh = Mesh(host, keys, vault, book, ledger, EventBus(), timeout=10)
            row = ShareRow(os.urandom(32), 0, holder.peer_id, os.urandom(32), 100_000)
            problems: list[str] = []
            slot = memoryview(bytearray(row.size - HEADER_SIZE))
            with trio.fail_after(60):
                # Both ways a share comes in: whole, and a data share's payload straight
                # into its place in the pack's buffer.
                whole = await mesh._fetch_share_whole(row, problems, "")
                header = await mesh._fetch_share(row, problems, "", slot)
                while len(pushed) < 2:
                    await trio.sleep(0.05)
            assert whole is None and header is None and len(problems) == 2, problems
            assert all("size" in p for p in problems), problems
            # It hung up on the announcement: the holder could push no more than the
            # transport buffers for a stream nobody reads.
            assert max(pushed) < 16 * MiB, f"the client took {max(pushed) / MiB:.0f} MiB"
    finally:
        ledger.close()
        book.close()
        vault.close()
