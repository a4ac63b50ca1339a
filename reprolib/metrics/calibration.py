"""Calibration: the expected calibration error and the reliability diagram's bins.

Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks" (ICML 2017), arXiv 1706.04599,
eq. (3): with the confidences p_i = max_k softmax(z_i)_k split into B equal-width bins I_b = ((b-1)/B, b/B],

    ECE = sum_b |B_b| / n * | acc(B_b) - conf(B_b) |

acc(B_b) the fraction of correct predictions in the bin, conf(B_b) their mean confidence. B = 15 as the
paper and the IDER evaluation.
"""
from __future__ import annotations

import torch


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> dict:
    """Per bin (equal width on (0, 1], right-closed): count, mean confidence, accuracy (NaN if empty)."""
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=confidence.device)
    b = (torch.bucketize(confidence, edges[1:-1], right=False)).clamp_(0, n_bins - 1)   # (lo, hi] bins
    count = torch.zeros(n_bins, dtype=torch.float64, device=confidence.device).index_add_(0, b, torch.ones_like(confidence))
    conf_sum = torch.zeros_like(count).index_add_(0, b, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, b, correct)
    return dict(edges=edges, count=count, confidence=conf_sum / count, accuracy=acc_sum / count)


def ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error of a classifier's logits [n, C] against labels [n] (Guo et al. eq. 3)."""
    prob = logits.double().softmax(-1)
    confidence, pred = prob.max(-1)
    bins = reliability_bins(confidence, pred == labels, n_bins)
    full = bins["count"] > 0
    gap = (bins["accuracy"][full] - bins["confidence"][full]).abs()
    return float((bins["count"][full] / bins["count"].sum() * gap).sum())
