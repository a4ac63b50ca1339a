"""Spectral statistics of weight matrices.

For W in R^{m x n} with singular values sigma_1 >= ... >= sigma_r >= 0:

    spectral_norm(W)  = sigma_1, by power iteration on W^T W
    stable_rank(W)    = ||W||_F^2 / sigma_1^2 = sum_i sigma_i^2 / sigma_1^2
    effective_rank(W) = exp(H(p)),  p_i = sigma_i / sum_j sigma_j,
                        H(p) = -sum_i p_i log p_i  (nats, 0 log 0 = 0)
                        (Roy & Vetterli 2007, "The effective rank")
    row_norm_cv(W)    = std(r) / mean(r),  r_i = ||W_i,:||_2  (population std)
                        (NorMuon, arXiv 2510.05491: Muon's per-neuron update
                        norms are uneven)

Every function takes a 2-D W and returns a Python float, or a batch
[..., m, n] and returns a tensor of shape [...].
"""

import torch

__all__ = ["spectral_norm", "stable_rank", "effective_rank", "row_norm_cv"]


def _as_float(W: torch.Tensor) -> torch.Tensor:
    if W.ndim < 2:
        raise ValueError(f"expected a matrix or a batch of matrices, got shape {tuple(W.shape)}")
    W = W.detach()
    # svd / power iteration are unsupported or too lossy in half precision
    return W if W.dtype in (torch.float32, torch.float64) else W.float()


def _out(x: torch.Tensor, W: torch.Tensor):
    return x.item() if W.ndim == 2 else x


def spectral_norm(W: torch.Tensor, iters: int = 100, tol: float = 1e-7, seed: int = 0):
    """sigma_1(W) by power iteration v <- W^T W v / ||W^T W v||, sigma = ||W v||.

    The start vector is drawn from N(0, I) with `seed`; iteration stops when the
    relative change of sigma is below `tol` for every matrix of the batch. The
    error after k steps is O((sigma_2 / sigma_1)^{2k}), so nearly degenerate top
    singular values need more `iters`.
    """
    W = _as_float(W)
    gen = torch.Generator().manual_seed(seed)
    # drawn on the CPU so a seed gives the same start on every device
    v = torch.randn(*W.shape[:-2], W.shape[-1], 1, generator=gen, dtype=torch.float64)
    v = v.to(W.device, W.dtype)
    tiny = torch.finfo(W.dtype).tiny
    v = v / v.norm(dim=-2, keepdim=True).clamp_min(tiny)
    sigma = (W @ v).norm(dim=(-2, -1))
    for _ in range(iters):
        v = W.mT @ (W @ v)
        v = v / v.norm(dim=-2, keepdim=True).clamp_min(tiny)
        sigma_new = (W @ v).norm(dim=(-2, -1))
        rel = (sigma_new - sigma).abs() / sigma_new.clamp_min(tiny)
        sigma = sigma_new
        if bool((rel < tol).all()):
            break
    return _out(sigma, W)


def stable_rank(W: torch.Tensor):
    """||W||_F^2 / sigma_1^2, with sigma_1 from exact torch.linalg.svdvals (not power iteration)."""
    W = _as_float(W)
    s = torch.linalg.svdvals(W)
    return _out((s**2).sum(-1) / (s[..., 0] ** 2), W)


def effective_rank(W: torch.Tensor):
    """exp(-sum_i p_i log p_i) with p_i = sigma_i / sum_j sigma_j (Roy & Vetterli 2007)."""
    W = _as_float(W)
    s = torch.linalg.svdvals(W)
    p = s / s.sum(-1, keepdim=True)
    H = -torch.special.xlogy(p, p).sum(-1)  # xlogy makes 0 log 0 = 0
    return _out(torch.exp(H), W)


def row_norm_cv(W: torch.Tensor):
    """std(r) / mean(r) of the row norms r_i = ||W_i,:||_2 (population std).

    For an nn.Linear weight (shape [out_features, in_features]) rows are output
    neurons, so this measures how unevenly an update spreads across neurons
    (NorMuon, arXiv 2510.05491). Pass the update, not the weight, for that use.
    """
    W = _as_float(W)
    r = torch.linalg.vector_norm(W, dim=-1)
    return _out(r.std(dim=-1, correction=0) / r.mean(dim=-1), W)
