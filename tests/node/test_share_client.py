"""The calling side of the share service against a lying holder (issue 11).

A real ``Mesh`` (its own libp2p host, vault, ledger and address book in a temp folder)
fetches a share whose size it recorded at upload from a holder built from the protocol
modules that announces far more bytes than that. The client must refuse on the
announcement, before it takes the body: a holder must not make it buffer up to 1 GiB.

Also the owner's coding: ``code_pack`` gives make_shares' bytes without copying the data
shares, and all coding runs in the mesh's one coding thread (one codec scratch buffer).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import blake3
import pytest
import trio
from corestate.erasure.share import HEADER_SIZE, make_shares, read_header
from corestate.node.ledger import Ledger, ShareRow
from corestate.node.peers import AddressBook
from corestate.node.runtime.events import EventBus
from corestate.node.runtime.mesh import SHARE_PROTOCOL, Mesh, MeshError, code_pack, in_coder
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


@pytest.mark.parametrize("size", [16 * MiB, 5 * MiB + 3])  # a full pack; one with a padded tail
def test_coded_shares_are_make_shares_without_the_copies(size: int) -> None:
    data = os.urandom(size)
    pack = blake3.blake3(data).digest()
    coded = code_pack(data, 2, 4, pack)
    made = make_shares(data, 2, 4, pack_id=pack)
    assert [b"".join(c.parts) for c in coded] == made
    for c, share in zip(coded, made, strict=True):
        assert c.size == len(share) and c.digest == blake3.blake3(share).digest()
        assert c.root == read_header(share).root
    # A full data share's payload is the pack's own memory, not a copy.
    assert isinstance(coded[0].parts[1], memoryview) and coded[0].parts[1].obj is data
    with pytest.raises(MeshError, match="does not match its id"):
        code_pack(data, 2, 4, bytes(32))


async def test_all_coding_runs_in_one_thread() -> None:
    seen: set[int] = set()

    async def one() -> None:
        seen.add(await in_coder(threading.get_ident))
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)
    assert len(seen) == 1 and threading.get_ident() not in seen
