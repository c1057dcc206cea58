"""CoreState: a peer-to-peer backup mesh.

The components live in top-level folders of the repository and install under this import
root (see pyproject.toml): ``corestate.node``, ``corestate.protocol``, ``corestate.erasure``,
``corestate.kernel``, ``corestate.tui`` and ``corestate.simulations``.
"""

__version__ = "0.1.0"
