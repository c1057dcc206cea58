"""The application layer: one typed operation per thing a user or a daemon asks of a node.

Each operation takes a typed request and the ports it needs, returns a typed result (the
control protocol's result types, protocol/control.py) and reports progress through events;
the CLI renders results as text or JSON, the daemon sends them over the control socket.
Nothing here parses argv or prints. (Under construction: ``status`` is the first
operation here; the others still live in the CLI and move here one by one.)
"""
