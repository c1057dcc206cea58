"""Systematic Reed-Solomon over GF(2^8), the share format and proofs of storage."""
