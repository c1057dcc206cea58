"""Pure decision cores: no trio, no libp2p, no clock, no I/O (DESIGN.md section 2)."""
