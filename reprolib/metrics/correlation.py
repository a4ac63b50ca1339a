"""Rank correlation, in numpy (no scipy at run time).

    spearman(x, y) = pearson(rank(x), rank(y)),  ties get the mean of the ranks they span
    (scipy.stats.spearmanr's definition, which the tests compare against).
"""
from __future__ import annotations

import numpy as np


def rankdata(x) -> np.ndarray:
    """Ranks 1..n; tied values share the average of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x, y):
    """Spearman's rank correlation; NaN with fewer than 3 finite pairs or a constant side. Arrays with
    leading axes (one row per seed) give one correlation per row, along the last axis."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(f"x and y must have one shape with at least one axis, got {x.shape} and {y.shape}")
    if x.ndim > 1:
        rows = [spearman(a, b) for a, b in zip(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))]
        return np.array(rows).reshape(x.shape[:-1])
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")
