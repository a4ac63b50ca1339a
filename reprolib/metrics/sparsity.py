"""Essential sparsity of a one-shot pruning curve: where performance stops being flat.

The Emergence of Essential Sparsity in Large Pre-trained Models: The Weights that Matter
(Jaiswal, Liu, Chen, Wang; NeurIPS 2023), https://arxiv.org/abs/2306.03805

Given performance P(s) after one-shot magnitude pruning at sparsities 0 = s_0 < s_1 < ... (higher is
better), the paper calls *essential sparsity* the sharp point beyond which P "declines much faster";
operationally, the largest sparsity whose drop from the dense model is at most 1%:

    s_ess = max { s_j : P(0) - P(s_i) <= tol * P(0)  for every i <= j }      (tol = 0.01, relative)

The "for every i <= j" makes it the end of the flat region from the dense side, so a noisy
recovery at high sparsity after an earlier drop does not count. Sharpness is measured by the mean
drop per unit sparsity before and after s_ess:

    before = (P(0) - P(s_ess)) / s_ess                 after = (P(s_ess) - P(s_ess + w)) / w
"""
import numpy as np


def essential_sparsity(sparsities, perf, tol: float = 0.01, relative: bool = True) -> float:
    """s_ess of a curve (sparsities ascending, starting at 0): the last level of the flat prefix,
    where every drop from P(0) is at most tol * P(0) (relative) or tol (absolute)."""
    s, p = np.asarray(sparsities, float), np.asarray(perf, float)
    if s.ndim != 1 or s.shape != p.shape or s[0] != 0 or np.any(np.diff(s) <= 0):
        raise ValueError("sparsities must be 1-D, ascending, start at 0 and match perf")
    allowed = tol * abs(p[0]) if relative else tol
    bad = np.flatnonzero(p[0] - p > allowed)
    return float(s[-1] if bad.size == 0 else s[bad[0] - 1])


def drop_rates(sparsities, perf, s_ess: float, width: float = 0.2) -> tuple[float, float]:
    """(before, after): mean drop of P per unit sparsity over [0, s_ess] and over [s_ess, s_ess + width]
    (P interpolated linearly between grid points; the window is clipped at the last level)."""
    s, p = np.asarray(sparsities, float), np.asarray(perf, float)
    at = lambda x: float(np.interp(x, s, p))
    before = (p[0] - at(s_ess)) / s_ess if s_ess > 0 else 0.0
    end = min(s_ess + width, s[-1])
    after = (at(s_ess) - at(end)) / (end - s_ess) if end > s_ess else float("nan")
    return float(before), float(after)
