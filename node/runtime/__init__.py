"""The trio runtime: daemon, peers, control socket. Not built yet (mesh issue)."""
