"""Hutchinson's trace estimator: tr(H) = E[z^T H z] for any z with E[z z^T] = I (Hutchinson 1990),
with Rademacher z (+-1 entries: the lowest-variance choice) and Hessian-vector products by double
backward (`metrics.curvature`). "Same Pre-training Loss, Better Downstream: Implicit Bias Matters
for Language Models" (Liu et al., ICML 2023, arXiv 2210.14199) measures flatness this way (their code
draws Gaussian z; both are unbiased).
"""
from __future__ import annotations

import math

import torch

from .curvature import _exact, _Hessian


def hutchinson_trace(loss_fns, params, n_probes: int, generator: torch.Generator) -> dict:
    """tr of the Hessian of the mean of the losses in `loss_fns` (zero-argument callables, e.g. one per
    fixed batch) w.r.t. `params`: for each loss, n_probes Rademacher z share one forward pass.
    Returns trace (the mean of z^T H z over all draws, averaged over losses), se (its standard error
    over the n_probes probe rounds) and the per-round estimates."""
    params = list(params)
    rounds = torch.zeros(n_probes, dtype=torch.float64)
    with _exact(params):
        for loss_fn in loss_fns:
            hess = _Hessian(loss_fn, params)
            for i in range(n_probes):
                z = [torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype) * 2 - 1
                     for p in params]
                hz = hess(z, retain=i < n_probes - 1)
                rounds[i] += float(sum((a * b).sum() for a, b in zip(z, hz))) / len(loss_fns)
    se = float(rounds.std(unbiased=True)) / math.sqrt(n_probes) if n_probes > 1 else float("nan")
    return dict(trace=float(rounds.mean()), se=se, rounds=rounds.tolist())
