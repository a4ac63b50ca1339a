"""Numerical (epsilon-) rank: how many singular directions a matrix needs to be approximated to a
relative Frobenius error eps. By Eckart-Young the best rank-k approximation M_k leaves
||M - M_k||_F = sqrt(sum_{i>k} sigma_i^2), so

    eps_rank(M, eps) = min { k : sqrt(sum_{i>k} sigma_i^2) <= eps ||M||_F }.
"""
import torch


def eps_rank(M: torch.Tensor, eps: float) -> int:
    """min k with ||M - M_k||_F <= eps ||M||_F; M a matrix, or its singular values (1-D, any order)."""
    sig = M if M.ndim == 1 else torch.linalg.svdvals(M)
    sig = sig.detach().double().abs().sort(descending=True).values
    tail = (sig.flip(0) ** 2).cumsum(0).flip(0).sqrt()     # tail[k] = ||M - M_k||_F
    return int((tail > eps * sig.norm()).sum())
