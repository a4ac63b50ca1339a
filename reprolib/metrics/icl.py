"""In-context learning curves: accuracy at every position of a sequence, for a model and for the
1-nearest-neighbour learner fitted on the sequence's own earlier (x, y) pairs (the reference a
general-purpose in-context learner should approach; Kirsch et al. 2022, https://arxiv.org/abs/2212.04458).
"""
from __future__ import annotations

import torch


def accuracy_by_position(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean accuracy over sequences at each position: logits [B, L, C], targets [B, L] -> [L]."""
    return (logits.argmax(-1) == targets).float().mean(0)


def nearest_neighbour_by_position(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-NN accuracy at each position i, predicting from the pairs j < i of the same sequence (Euclidean
    distance; the earliest of equally near pairs). Position 0 has no pair: it predicts class 0.
    x [B, L, D], targets [B, L] -> [L]."""
    L = x.shape[1]
    dist = torch.cdist(x.double(), x.double())   # [B, L, L]; float64: on a GPU, float32 cdist goes through TF32 matmuls
    future = torch.ones(L, L, dtype=torch.bool, device=x.device).triu()         # j >= i: not yet seen
    dist = dist.masked_fill(future, float("inf"))
    nearest = dist.argmin(-1)                                                     # [B, L]
    pred = targets.gather(1, nearest)
    pred[:, 0] = 0
    return (pred == targets).float().mean(0)
