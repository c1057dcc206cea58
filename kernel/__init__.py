"""What the OS gives a node: copy-on-write snapshots, change tracking, extents, HSM."""
