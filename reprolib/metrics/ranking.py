"""Area under the ROC curve, by ranks (the Mann-Whitney U statistic), in torch:

    AUC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    ties sharing the average of their ranks (equal to sklearn's roc_auc_score).
"""
from __future__ import annotations

import torch


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counted half; NaN if one class
    is missing."""
    s, y = scores.detach().flatten().double(), labels.detach().flatten().bool()
    n_pos, n = int(y.sum()), y.numel()
    if n_pos == 0 or n_pos == n:
        return float("nan")
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    uniq, inverse = torch.unique(s, return_inverse=True)        # ties: the mean rank of their group
    mean_rank = torch.zeros(len(uniq), dtype=s.dtype, device=s.device).index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=len(uniq)).to(s.dtype)
    r = mean_rank[inverse]
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))
