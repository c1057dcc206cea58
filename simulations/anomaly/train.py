"""Training the global model: L2-regularised logistic regression by Newton's method (numpy).

The inputs are standardised (mean and scale kept in the model); classes are weighted to
equal total weight, so a corpus with many more benign snapshots than attacks still learns
the attacks. The result is a :class:`corestate.node.core.anomaly.GlobalModel`.
"""

from __future__ import annotations

import numpy as np
from corestate.node.core.anomaly import GlobalModel


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iters: int = 50,
        version: str = "") -> GlobalModel:
    """Fit p(y=1 | x). ``x``: rows of ``model_inputs``; ``y``: 0 benign, 1 attack."""
    if x.ndim != 2 or len(x) != len(y) or not (y == 1).any() or not (y == 0).any():
        raise ValueError("need a 2-D input with both classes")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (x - mean) / scale
    z1 = np.hstack([z, np.ones((len(z), 1))])
    w_class = np.where(y == 1, 0.5 / (y == 1).sum(), 0.5 / (y == 0).sum()) * len(y)
    beta = np.zeros(z1.shape[1])
    reg = np.full(z1.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z1 @ beta, -50, 50)))
        grad = z1.T @ (w_class * (p - y)) + reg * beta
        h = (z1 * (w_class * p * (1 - p))[:, None]).T @ z1 + np.diag(reg) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(h, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return GlobalModel(tuple(float(v) for v in beta[:-1]), float(beta[-1]),
                       tuple(float(v) for v in mean), tuple(float(v) for v in scale), version)
