"""Direct Coverage Optimization (DCO): a training loss aligned with pass@N.

Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence Improves Mathematical
Reasoning (Chen, Raventos, Cheng, Ganguli, Druckmann, 2025), https://arxiv.org/abs/2502.07154

With p = p(y | x) the model's probability of the correct answer, the DCO loss is minus the log of
that item's pass@N (its coverage):

    L_DCO^N(x, y) = -log(1 - (1 - p)^N)                                            (DCO loss)

N = 1 gives cross-entropy. Its gradient is cross-entropy's times a per-item factor

    grad L_DCO^N = F(N, p) grad L_CE,   F(N, p) = N p (1 - p)^(N-1) / (1 - (1 - p)^N)   (DCO gradient)

F falls from 1 (p -> 0) to 0 (p -> 1): items the model already answers confidently stop pulling
towards p = 1, which is how DCO limits confidence.
"""
from __future__ import annotations

import math

import torch

_LN2 = math.log(2.0)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate on both sides of -ln 2 (Maechler's rule), with finite
    gradients in the branch torch.where does not take."""
    near = torch.log(-torch.expm1(a.clamp(min=-_LN2)))
    far = torch.log1p(-torch.exp(a.clamp(max=-_LN2)))
    return torch.where(a > -_LN2, near, far)


def log_miss_probability(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 - p)) of the correct class, logits [..., B, K], labels [B] or [..., B]. log(1 - p)
    comes from the other classes' logsumexp where p > 1/2, so it stays exact as p -> 1."""
    labels = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    lse = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, labels).squeeze(-1) - lse
    others = torch.logsumexp(logits.scatter(-1, labels, float("-inf")), -1) - lse
    return logp, torch.where(logp > -_LN2, others, log1mexp(logp.clamp(max=-_LN2)))


def dco_loss(logits: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Per-item DCO loss -log(1 - (1 - p)^N) (DCO loss), logits [..., B, K] -> [..., B].
    Where p < 1e-9 it uses -log(N p), whose error N p / 2 is below 1e-5 for N <= 1e4: there
    N log(1 - p) rounds to 0 in float32 and the exact form would read log(0)."""
    logp, log_miss = log_miss_probability(logits.float() if logits.dtype in (torch.float16, torch.bfloat16)
                                          else logits, labels)
    log_cover = log1mexp((n * log_miss).clamp(max=-1e-30))   # keeps the untaken branch's gradient finite
    return -torch.where(logp < math.log(1e-9), logp + math.log(n), log_cover)


def dco_gradient_factor(p: torch.Tensor, n: int) -> torch.Tensor:
    """F(N, p) = N p (1 - p)^(N-1) / (1 - (1 - p)^N) (DCO gradient), elementwise in p."""
    miss = torch.log1p(-p)
    return n * p * torch.exp((n - 1) * miss) / -torch.expm1(n * miss)
