"""The address book against discovery: addresses the user gave stay pinned whatever mDNS
announces (a trusted peer's PeerID included), and discovery adds a bounded number of
addresses per peer and of untrusted peers in all."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import nacl.signing
import pytest
from corestate.node import peers
from corestate.node.peers import AddressBook
from corestate.protocol.keys import peer_id_from_public_key


def _peer() -> str:
    return peer_id_from_public_key(bytes(nacl.signing.SigningKey(os.urandom(32)).verify_key))


def _announce(n: int, start: int = 0) -> list[str]:
    return [f"/ip4/10.66.{(i >> 8) & 255}.{i & 255}/tcp/4001" for i in range(start, start + n)]


def test_mdns_cannot_push_out_user_added_addresses(tmp_path: Path) -> None:
    book = AddressBook(tmp_path / "peers.db")
    friend = _peer()
    mine = ["/ip4/192.168.1.7/tcp/4001", "/dns/nas.home/tcp/4001"]
    book.add(friend, mine, trusted=True, domains=["home", "nas"])
    # Someone on the LAN announces the friend's PeerID with many addresses, again and again.
    for round_ in range(10):
        book.add(friend, _announce(40, round_ * 40), trusted=False, source="mdns")
    e = book.get(friend)
    assert e is not None
    assert sorted(e.addrs[:2]) == sorted(mine), e.addrs  # dialed first, both still there
    assert len(e.addrs) <= 2 + peers.MAX_FOUND
    assert e.trusted and e.source == "user" and e.domains == ["home", "nas"]
    book.close()
    # And after a restart.
    book = AddressBook(tmp_path / "peers.db")
    e = book.get(friend)
    assert e is not None and sorted(e.addrs[:2]) == sorted(mine) and e.trusted
    # The user adding an address pins it too; a found address the user names becomes pinned.
    found = e.addrs[2]
    book.add(friend, [found], trusted=True)
    e = book.get(friend)
    assert e is not None and found in e.pinned and found not in e.found
    book.close()


def test_discovery_keeps_a_bounded_number_of_untrusted_peers(tmp_path: Path) -> None:
    book = AddressBook(tmp_path / "peers.db")
    friend = _peer()
    book.add(friend, ["/ip4/192.168.1.7/tcp/4001"], trusted=True)
    flood = [f"12D3KooWfake{i:06d}" for i in range(peers.MAX_UNTRUSTED + 40)]
    for i, p in enumerate(flood):
        book.add(p, _announce(8, i), trusted=False, source="mdns")
    everyone = book.all()
    untrusted = [e for e in everyone if not e.trusted]
    assert len(untrusted) <= peers.MAX_UNTRUSTED
    assert all(len(e.addrs) <= peers.MAX_FOUND for e in untrusted)
    assert flood[-1] in {e.peer for e in untrusted}  # the newest stay, the stalest went
    assert book.get(friend) is not None and book.get(friend).trusted  # type: ignore[union-attr]
    book.close()


def test_the_daemons_discovery_callback_goes_through_the_same_bounds(tmp_path: Path) -> None:
    from corestate.node.runtime.events import EventBus
    from corestate.node.runtime.port import discovered
    book = AddressBook(tmp_path / "peers.db")
    me, friend, stranger = _peer(), _peer(), _peer()
    book.add(friend, ["/ip4/192.168.1.7/tcp/4001"], trusted=True)
    bus = EventBus()
    for i in range(5):
        discovered(book, bus, me, friend, _announce(20, i * 20))
        discovered(book, bus, me, stranger, _announce(20, i * 20))
    discovered(book, bus, me, me, _announce(3))
    e, s = book.get(friend), book.get(stranger)
    assert e is not None and e.addrs[0] == "/ip4/192.168.1.7/tcp/4001" and e.trusted
    assert s is not None and not s.trusted and len(s.addrs) <= peers.MAX_FOUND
    assert book.get(me) is None
    book.close()


def test_entries_written_before_the_split_read_back(tmp_path: Path) -> None:
    """An older book kept every address in ``addrs``: a user's stay pinned, an mDNS-only
    peer's become found."""
    book = AddressBook(tmp_path / "peers.db")
    a, b = _peer(), _peer()
    book._db[a] = {"addrs": ["/ip4/1.2.3.4/tcp/1"], "trusted": True, "source": "user"}
    book._db[b] = {"addrs": ["/ip4/1.2.3.5/tcp/1"], "trusted": False, "source": "mdns"}
    ea, eb = book.get(a), book.get(b)
    assert ea is not None and ea.pinned == ["/ip4/1.2.3.4/tcp/1"]
    assert eb is not None and eb.pinned == [] and eb.addrs == ["/ip4/1.2.3.5/tcp/1"]
    book.close()


def test_a_port_of_non_ascii_digits_is_a_bad_address_not_a_crash() -> None:
    """Found by fuzzing (tests/fuzz, target peer-address): "²".isdigit() is true, int("²")
    raises ValueError, which escaped split_peer_addr — and a member's address advert goes
    through it (groupsvc catches only CoreStateError)."""
    import pytest

    peer = _peer()
    for port in ("²", "٤٠٠١", "𝟒𝟎𝟎𝟏"):
        with pytest.raises(peers.BadAddress, match="transports"):
            peers.split_peer_addr(f"/ip4/10.0.0.1/tcp/{port}/p2p/{peer}")
    assert peers.split_peer_addr(f"/ip4/10.0.0.1/tcp/4001/p2p/{peer}") == (peer, "/ip4/10.0.0.1/tcp/4001")


def test_an_entry_of_any_shape_reads_as_defaults(tmp_path: Path) -> None:
    """Found by fuzzing (tests/fuzz, target address-book): a stored entry whose fields have
    other types (a damaged or hand-edited peers.db) made ``get`` raise TypeError or
    ValueError; now what is not of its field's type reads as the default."""
    book = AddressBook(tmp_path / "peers.db")
    friend = _peer()
    book._db[friend] = {"addrs": 5, "found": "x", "domains": {"a": 1}, "trusted": "no",
                        "source": ["mdns"], "added_ns": "soon", "seen_ns": 1.5}
    e = book.get(friend)
    assert e is not None
    assert (e.pinned, e.found, e.domains, e.trusted, e.source, e.added_ns, e.seen_ns) == (
        [], [], [], False, "user", 0, 0)
    book.add(friend, ["/ip4/10.0.0.9/tcp/4001"], trusted=True)  # and it can be repaired
    assert book.get(friend).addrs == ["/ip4/10.0.0.9/tcp/4001"]  # type: ignore[union-attr]
    book.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_fails_the_write_that_hit_it_and_nothing_later(tmp_path: Path) -> None:
    """Found by the chaos campaign (tests/chaos, disk-full): sqlitedict raised a write that
    failed on a full disk at the next, unrelated call on the book; the daemon's backup then
    failed with an internal error while asking peers for capacity. A note that a peer
    answered is best effort; a write the user asked for fails where it was asked."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        book = AddressBook(small / "peers.db")
        friend = _peer()
        book.add(friend, ["/ip4/192.168.1.7/tcp/4001"], trusted=True)
        try:
            with open(small / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        for _ in range(3):
            book.seen(friend, _announce(1))  # logged, not raised
        e = book.get(friend)  # no error deferred from the failed notes
        assert e is not None and e.trusted
        with pytest.raises(sqlite3.Error):
            book.add(_peer(), _announce(1), trusted=True)
        assert [p.peer for p in book.trusted()] == [friend]
        (small / "filler").unlink()
        book.seen(friend, _announce(1, 7))  # room again: noted
        assert _announce(1, 7)[0] in book.get(friend).addrs  # type: ignore[union-attr]
        book.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
