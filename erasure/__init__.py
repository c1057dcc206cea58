"""Systematic Reed-Solomon over GF(2^8), the share format and proofs of storage.

A pure leaf package (numpy, blake3 and the standard library; no trio, libp2p or textual):

- :func:`encode` / :func:`decode`: k-of-n share payloads, bit-compatible with reedsolo
  (every byte column is ``reedsolo.RSCodec(n - k).encode(data column)``); any k decode.
- :func:`make_shares`, :func:`verify_share`, :func:`decode_shares`, :func:`repair_shares`:
  complete shares with a versioned header whose root (BLAKE3 Merkle tree) identifies them.
- :func:`prove` / :func:`verify_proof`: proofs of storage for audits, checked with only the
  root. Byte layouts: ``FORMAT.md`` next to this file.
"""

from __future__ import annotations

from . import bulk, gf, merkle
from .errors import CorruptShare, ErasureError, InvalidParameters, NotEnoughShares
from .rs import Codec, check_parameters, codec, decode, encode, parity_matrix, rebuild, share_length
from .share import (
    DEFAULT_BLOCK_SIZE,
    HEADER_SIZE,
    Proof,
    Rejected,
    Restored,
    ShareHeader,
    decode_shares,
    make_share,
    make_shares,
    payload_of,
    prove,
    read_header,
    repair_shares,
    verify_proof,
    verify_share,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "HEADER_SIZE",
    "Codec",
    "CorruptShare",
    "ErasureError",
    "InvalidParameters",
    "NotEnoughShares",
    "Proof",
    "Rejected",
    "Restored",
    "ShareHeader",
    "bulk",
    "check_parameters",
    "codec",
    "decode",
    "decode_shares",
    "encode",
    "gf",
    "make_share",
    "make_shares",
    "merkle",
    "parity_matrix",
    "payload_of",
    "prove",
    "read_header",
    "rebuild",
    "repair_shares",
    "share_length",
    "verify_proof",
    "verify_share",
]
