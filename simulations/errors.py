"""Errors of the simulator: a scenario or grid that cannot run, and a missing optional extra.

Both derive from :class:`corestate.errors.CoreStateError`; only the CLI turns them into words.
"""

from __future__ import annotations

from corestate.errors import CoreStateError


class ScenarioError(CoreStateError):
    """A scenario or sweep grid file is malformed (``where`` says which table and key)."""

    def __init__(self, where: str, problem: str, *, hint: str = "") -> None:
        super().__init__(f"{where}: {problem}", hint=hint or "see simulations/README.md for the keys")
        self.where = where
        self.problem = problem


class ExtraMissing(CoreStateError):
    """An optional dependency (matplotlib, dask) is not installed."""

    def __init__(self, module: str) -> None:
        super().__init__(f"the simulator needs {module} for this",
                         hint="install the simulator's extra: pip install 'corestate[sim]'")
        self.module = module
