"""Continual-learning summaries of an accuracy matrix.

A[t, j] is the accuracy on task j's test data after training on tasks 0..t (class-incremental: the
prediction ranges over every class). As in the mammoth framework (Buzzega et al., NeurIPS 2020) and
Chaudhry et al., "Riemannian Walk for Incremental Learning" (ECCV 2018), arXiv 1801.10112, eq. (9):

    final average accuracy  = mean_j A[T-1, j]
    forgetting              = mean_{j < T-1} ( max_{t < T-1} A[t, j] - A[T-1, j] )
"""
from __future__ import annotations

import numpy as np


def final_accuracy(A) -> float:
    A = np.asarray(A, dtype=float)
    return float(A[-1].mean())


def forgetting(A) -> float:
    """Mean drop from each old task's best accuracy to its final one (0 for a single task)."""
    A = np.asarray(A, dtype=float)
    T = A.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([A[:T - 1, j].max() - A[T - 1, j] for j in range(T - 1)]))
