"""Stopping rules read from a training run's per-epoch trace. Each returns the number of epochs
trained when it stops (epochs counted from 1), so applying it after the run to the logged trace
gives exactly what it would have done online: a rule reads only epochs up to the current one.

variation_stop: When do Convolutional Neural Networks Stop Learning? (Ahmad, Trahan, Islam, 2024),
https://arxiv.org/abs/2403.02473 . The paper's hypothesis: a CNN has reached its near-optimal learning
capacity once the data variation of its layers no longer changes. As the official solver_cbs.py
decides it (github.com/PaperUnderReviewDeepLearning/Optimization), with v_l(e) the data variation of
monitored layer l in epoch e = 0, 1, ... (metrics/activation_stats.py):

    r_l(e) = round(v_l(e), p)                      p = precision_point, default 2 (pandas' .round:
                                                   the value scaled by 10^p, rounded half to even)
    e* = min { e >= start : r_l(j) = r_l(j - 1) for every layer l and every j with
                            max(0, e - window + 1) < j <= e }
    train e* + 1 epochs                            (the official epoch_limit = epoch_count + 1)

with start = 5 (epochs 0-4 are only recorded) and window = 5 (the last five rows of its per-epoch
table, MeanData/data.csv, must be identical). The repository's solver_cbs_2Epoch.py is the same rule
with window = 2, start = 1.

patience_stop: validation-based early stopping (Prechelt, "Early Stopping - But When?", 1998):
stop once the monitored validation score has not improved on its best for `patience` epochs.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Stop", "patience_stop", "round_like_pandas", "variation_stop"]


def round_like_pandas(x, decimals: int) -> np.ndarray:
    """np.round / pandas .round: x * 10^decimals rounded half to even, divided back (float64)."""
    return np.round(np.asarray(x, dtype=np.float64), decimals)


def variation_stop(trace, precision: int = 2, window: int = 5, start: int = 5) -> int | None:
    """Epochs trained (e* + 1) when the data-variation rule fires, or None if it never fires in the trace.
    trace: [epochs, layers] (or [epochs] for one layer) of v_l(e)."""
    if window < 2:
        raise ValueError(f"window={window}: the rule compares consecutive epochs, so it needs window >= 2")
    if start < 1:
        raise ValueError(f"start={start}: the first epoch has no previous one to compare with; use start >= 1")
    v = np.asarray(trace, dtype=np.float64)
    r = round_like_pandas(v.reshape(len(v), -1), precision)
    same = np.all(r[1:] == r[:-1], axis=1)          # same[j - 1]: every layer's r(j) equals its r(j - 1)
    for e in range(start, len(r)):
        if same[max(0, e - window + 1):e].all():      # j = max(0, e - window + 1) + 1, ..., e
            return e + 1
    return None


class Stop(NamedTuple):
    epochs: int | None   # epochs trained when the rule stops; None: it had not stopped by the end of the trace
    best: int            # epochs trained at the best validation score so far (the checkpoint one would restore)


def patience_stop(scores, patience: int = 10, mode: str = "min", min_delta: float = 0.0) -> Stop:
    """Early stopping on a per-epoch validation score: an epoch improves on the best only by more than
    min_delta; stop after the epoch that makes `patience` epochs in a row without an improvement.
    NaN never improves."""
    if patience < 1:
        raise ValueError(f"patience={patience} must be >= 1")
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r}; valid: 'min' (a loss or error), 'max' (an accuracy)")
    s = np.asarray(scores, dtype=np.float64) * (1.0 if mode == "min" else -1.0)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("scores: one value per epoch, at least one epoch")
    best, best_e = np.inf, 0
    for e, x in enumerate(s):
        if x < best - min_delta:
            best, best_e = x, e
        elif e - best_e >= patience:
            return Stop(e + 1, best_e + 1)
    return Stop(None, best_e + 1)
