"""The trio runtime: the daemon, the share and group services, the control socket, the mesh calls."""
