"""Exact pass@N of a classifier that answers by sampling from its predicted distribution.

Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence Improves Mathematical
Reasoning (Chen, Raventos, Cheng, Ganguli, Druckmann, 2025), https://arxiv.org/abs/2502.07154

pass@N is the chance that at least one of N i.i.d. samples from the model is correct. With
p = p(y | x) the probability of the correct answer it is 1 - (1 - p)^N per item (the paper's
coverage), averaged over items. A classifier gives p exactly, so no sampling noise enters.
"""
from __future__ import annotations

import torch


def pass_at_n(p_correct: torch.Tensor, n) -> torch.Tensor:
    """1 - (1 - p)^N elementwise; `n` a number or a tensor that broadcasts against p.
    Computed as -expm1(N log1p(-p)) so that small p keeps its precision (pass@N ~ N p)."""
    n = torch.as_tensor(n, dtype=p_correct.dtype, device=p_correct.device)
    return -torch.expm1(n * torch.log1p(-p_correct))


def correct_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p(y | x) from logits [..., B, K] and labels [B] or [..., B] -> [..., B] (softmax in float32+)."""
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, -1)
    return logp.gather(-1, labels.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1).exp()


def pass_at_n_curve(logits: torch.Tensor, labels: torch.Tensor, ns) -> torch.Tensor:
    """Mean exact pass@N over the items, for every N in `ns`: logits [..., B, K] -> [..., len(ns)]."""
    p = correct_probability(logits, labels).double()
    n = torch.as_tensor(list(ns), dtype=p.dtype, device=p.device)
    return pass_at_n(p.unsqueeze(-1), n).mean(-2)


def pass_at_n_monte_carlo(probs: torch.Tensor, labels: torch.Tensor, n: int, draws: int,
                          generator: torch.Generator | None = None) -> tuple[float, float]:
    """Monte-Carlo pass@N: for each of `draws` trials pick an item uniformly, sample N answers from
    probs [B, K] and score 1 if any equals the label. Returns (estimate, its standard error)."""
    items = torch.randint(len(labels), (draws,), generator=generator, device=probs.device)
    answers = torch.multinomial(probs[items], n, replacement=True, generator=generator)    # [draws, N]
    hit = (answers == labels[items, None]).any(-1).double()
    return float(hit.mean()), float(hit.std() / draws ** 0.5)
