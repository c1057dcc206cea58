"""Small CBOR inputs that cbor2 decodes at once but whose canonical re-encoding takes
time exponential in their size (found by fuzzing, tests/fuzz: target catalog-sync).
Shared by the decoders' regression tests (test_sync_core, test_catalog, test_membership)."""

from __future__ import annotations


def map_key_bomb(depth: int) -> bytes:
    """``{{{...{0: 0}...: 0}: 0}: 0}``: maps nested as map keys, ``2 * depth + 1`` bytes;
    canonical encoding re-encodes every nested key at every level (~1.9x per level)."""
    return b"\xa1" * depth + b"\x00" + b"\x00" * depth


def shared_bomb(levels: int, fan: int = 8) -> bytes:
    """An array of ``levels`` shareable arrays (tag 28), each holding ``fan`` references
    (tag 29) to the one before: ~25 bytes per level stand for ``fan ** levels`` items."""
    out = bytearray([0x80 + levels])
    out += b"\xd8\x1c" + bytes([0x80 + fan]) + b"\x01" * fan
    for i in range(1, levels):
        out += b"\xd8\x1c" + bytes([0x80 + fan]) + (b"\xd8\x1d" + bytes([i - 1])) * fan
    return bytes(out)
