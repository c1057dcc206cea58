"""The anomaly model's synthetic corpus, its training and its evaluation (issue 14).

One command does all three (see ``__main__``)::

    .venv/bin/python -m corestate.simulations.anomaly            # full run, writes weights
    .venv/bin/python -m corestate.simulations.anomaly --quick    # a small run, no writing

Modules: ``content`` (lazy synthetic file bytes from real encoders), ``corpus`` (trees, the
benign churn and attack families as per-file observations made by the node's own pure
feature functions), ``train`` (logistic regression, numpy), ``evaluate`` (leave-one-family-
out, confusion tables, the three-year benign run, cold start).

Imports only ``corestate.node.core`` (a contract in ``pyproject.toml``).
"""
