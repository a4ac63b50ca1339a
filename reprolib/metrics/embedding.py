"""Diagnostics of embedding tables and of competing losses on shared parameters.

    mean_pairwise_cosine(E) = mean over rows i != j of cos(E_i, E_j)        (DeBERTaV3, Table 1's measure)
    grad_cosine(a, b, p)    = cos(dL_a/dp, dL_b/dp), both flattened        (< 0: the losses pull p apart)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_pairwise_cosine(E: torch.Tensor) -> float:
    """Average cosine similarity over all ordered pairs of distinct rows of E (n, d)."""
    u = F.normalize(E.detach().float(), dim=-1)
    n = len(u)
    total = u.sum(0).pow(2).sum() - u.pow(2).sum()    # sum_{i != j} u_i . u_j without the n x n matrix
    return float(total / (n * (n - 1)))


def grad_cosine(loss_a: torch.Tensor, loss_b: torch.Tensor, param: torch.Tensor) -> float:
    """Cosine between the gradients of two losses with respect to one parameter (NaN if either is 0)."""
    ga, = torch.autograd.grad(loss_a, param, retain_graph=True, allow_unused=True)
    gb, = torch.autograd.grad(loss_b, param, retain_graph=True, allow_unused=True)
    if ga is None or gb is None or not ga.any() or not gb.any():
        return float("nan")
    return float(F.cosine_similarity(ga.flatten().float(), gb.flatten().float(), dim=0))
