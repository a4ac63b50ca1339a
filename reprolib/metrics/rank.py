"""Rank correlation: Spearman's rho as the Pearson correlation of average ranks (ties share their mean rank)."""
from __future__ import annotations

import numpy as np


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of x along the last axis, tied values sharing their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, np.arange(1, x.shape[-1] + 1, dtype=np.float64) * np.ones_like(x), axis=-1)
    flat_x, flat_r = x.reshape(-1, x.shape[-1]), ranks.reshape(-1, x.shape[-1])
    for xs, rs in zip(flat_x, flat_r):
        for v in np.unique(xs):
            tie = xs == v
            if tie.sum() > 1:
                rs[tie] = rs[tie].mean()
    return flat_r.reshape(x.shape)


def spearman(x, y) -> np.ndarray:
    """Spearman's rank correlation of x and y along the last axis (leading axes are kept: one per seed)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
