"""Wire and on-disk formats. No policy; ``protocol.p2p`` is the only libp2p adapter."""
