"""Synthetic data shaped like the real thing, shared by tests."""

from __future__ import annotations

import numpy as np


def outlier_features(
    rng: np.random.Generator, frames: int, dim: int, *, num_outliers: int = 3, scale: float = 60.0
) -> np.ndarray:
    """Features shaped like real SSL activations: temporally correlated channels plus a few
    channels of very large magnitude."""
    x = rng.standard_normal((frames, dim)).astype(np.float32)
    if frames > 1:  # AR(1) in time, rho = 0.8
        for t in range(1, frames):
            x[t] = 0.8 * x[t - 1] + 0.6 * x[t]
    idx = rng.choice(dim, size=min(num_outliers, dim), replace=False)
    x[:, idx] = x[:, idx] * 3 + scale * np.sign(rng.standard_normal(len(idx))).astype(np.float32)
    return x
