"""Rank-k weight compression with a per-matrix rank allocation.

"From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge from Low-Rank Gradients",
Jaiswal, Yin, Zhang, Liu, Zhao, Tian, Wang, 2024, https://arxiv.org/abs/2407.11239
(official code: https://github.com/VITA-Group/welore).

For W in R^{m x n} with SVD W = U diag(sigma) V^T (sigma descending, r = min(m, n)):

    rank-k truncation  W_k = U_k diag(sigma_k) V_k^T, stored as the two factors
                       A = U_k diag(sqrt sigma_k)  (m x k),  B = diag(sqrt sigma_k) V_k^T  (k x n)
                       (the official rank_reduction factorises U sqrt(S), sqrt(S) V^T);
    Eckart-Young       ||W - W_k||_F^2 = sum_{i>k} sigma_i^2, the smallest of any rank-k matrix.

WeLore's allocation (the official adaptive_rank_pruning): each matrix's spectrum is min-max normalised,
    s_i = (sigma_i - sigma_min) / (sigma_max - sigma_min),
and one global threshold tau keeps k_W = #{i : s_i > tau}; tau is chosen so that the total rank reduction
    R(tau) = sum_W (r_W - k_W) / sum_W r_W
hits the target (the official code reads tau from a table; here tau is found by bisection).
A heavy-tailed spectrum (few large sigma, many near sigma_min) loses most of its rank; a flat one keeps it.
The uniform baseline keeps the same fraction of every matrix's rank.
"""
import torch

__all__ = ["low_rank_factors", "normalised_spectrum", "welore_ranks", "uniform_ranks", "rank_reduction"]


def low_rank_factors(W: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) = (U_k sqrt(S_k), sqrt(S_k) V_k^T): A @ B is the best rank-k approximation of W (Eckart-Young)."""
    # svd is unsupported in half precision; float64 stays float64
    U, S, Vh = torch.linalg.svd(W if W.dtype == torch.float64 else W.float(), full_matrices=False)
    root = S[:k].sqrt()
    return (U[:, :k] * root).to(W.dtype), (root[:, None] * Vh[:k]).to(W.dtype)


def normalised_spectrum(sigma: torch.Tensor) -> torch.Tensor:
    """(sigma - sigma_min) / (sigma_max - sigma_min): WeLore's per-matrix scale-free spectrum, in [0, 1]."""
    lo, hi = sigma.min(), sigma.max()
    return (sigma - lo) / (hi - lo).clamp_min(torch.finfo(sigma.dtype).tiny)


def rank_reduction(ranks: dict, full: dict) -> float:
    """sum_W (r_W - k_W) / sum_W r_W: the share of all singular directions removed."""
    return sum(full[n] - ranks[n] for n in full) / sum(full.values())


def _ranks_at(norm: dict, tau: float) -> dict:
    # at least one direction per matrix: a rank-0 weight would delete the layer
    return {n: max(1, int((s > tau).sum())) for n, s in norm.items()}


def welore_ranks(spectra: dict, target: float, iters: int = 60) -> tuple[dict, float]:
    """WeLore ranks {name: k} and the global tau whose total rank reduction is closest to `target`.

    spectra: {name: singular values}. R(tau) is a non-decreasing step function of tau, so bisection
    finds the step nearest the target; ties among normalised values make the exact target unreachable
    only by the size of one step.
    """
    norm = {n: normalised_spectrum(s.double()) for n, s in spectra.items()}
    full = {n: len(s) for n, s in spectra.items()}
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if rank_reduction(_ranks_at(norm, mid), full) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda t: abs(rank_reduction(_ranks_at(norm, t), full) - target))
    return _ranks_at(norm, best), best


def uniform_ranks(full: dict, target: float) -> dict:
    """Every matrix keeps round((1 - target) r_W) of its r_W directions (at least one)."""
    return {n: max(1, round((1 - target) * r)) for n, r in full.items()}
