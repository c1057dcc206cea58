"""The backup engine: walk, chunk, dedup, compress, encrypt, pack, and the reverse."""
