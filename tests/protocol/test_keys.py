"""Key derivation is stable (golden values) and every key is distinct."""

from __future__ import annotations

from corestate.protocol.keys import NodeKeys, base58btc


def test_golden_values_never_change() -> None:
    k = NodeKeys.from_root(bytes(32))
    # Changing a context string would orphan every existing store: these must not move.
    assert k.peer_id == "12D3KooWChXwzcRLk8PSiYWcUwU9eyntKzDhkFEP8PfwQT3Ja4Jn"
    assert k.chunker_seed == 7432337418893970635
    assert k.data_key.hex()[:16] == "5c56519746b634ae"


def test_keys_are_distinct_and_generation_moves_only_the_identity() -> None:
    a, b = NodeKeys.from_root(b"\1" * 32, 0), NodeKeys.from_root(b"\1" * 32, 1)
    assert len({a.identity_seed, a.data_key, a.chunk_id_key, a.tree_id_key}) == 4
    assert a.peer_id != b.peer_id
    assert (a.data_key, a.chunk_id_key) == (b.data_key, b.chunk_id_key)
    assert a.pack_subkey(b"s" * 32, "chunk") != a.pack_subkey(b"s" * 32, "tree")
    assert a.pack_subkey(b"s" * 32, "chunk") != a.pack_subkey(b"t" * 32, "chunk")


def test_base58() -> None:
    assert base58btc(b"\0\0\1") == "112"
    assert base58btc(b"hello world") == "StV1DL6CwTryKyV"
