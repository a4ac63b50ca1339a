"""Certified Lipschitz bounds of feed-forward networks, and the bound-vs-accuracy trade-off.

Newhouse, Hess, Cesista, Zahorodnii, Bernstein & Isola, "Training Transformers with Enforced Lipschitz
Constants" (2025), arXiv 2507.13338; official code github.com/Arongil/lipschitz-transformers
(utils.py `calculate_lipschitz_constant`, modula/atom.py `Linear.log`).

Norms. The official code measures every layer in the RMS -> RMS operator norm,

    ||W||_rms = sqrt(fan_in / fan_out) ||W||_2          (||x||_rms = ||x||_2 / sqrt(dim)),

and bounds an MLP x -> W_L s(W_{L-1} ... s(W_1 x)) with 1-Lipschitz activations s by the product

    L <= prod_l ||W_l||_rms                               (lipschitz_bound; norm="l2" multiplies ||W_l||_2)

The product certifies ||f(x) - f(y)||_rms <= L ||x - y||_rms for every x, y. For a bias-free ReLU
network the Jacobian at x is J(x) = W_L D_{L-1}(x) ... D_1(x) W_1, D_l the 0/1 pattern of the units that
are on, so sup_x ||J(x)|| is the true constant and local_lipschitz (the largest ||J(x_i)|| over inputs
x_i) is a lower bound of it: local_lipschitz <= true constant <= lipschitz_bound.

Trade-off. A method's Pareto frontier is F(B) = the best accuracy among its runs whose bound is <= B
(pareto_frontier). Two methods compare on a log-spaced grid of B inside the range every run set
covers (shared_bound_grid): frontier_gap is the mean over that grid of F_a(B) - F_b(B), or of F_a(B)
minus the best of several frontiers at each B (their upper envelope).
"""
from __future__ import annotations

import numpy as np
import torch


def _out(x: torch.Tensor, W: torch.Tensor):
    return x.item() if W.ndim == 2 else x


def rms_operator_norm(W: torch.Tensor):
    """sqrt(fan_in / fan_out) * sigma_1(W), exactly (SVD), for W (fan_out, fan_in) or a stack (..., fo, fi)."""
    W = W.detach().double()
    sigma = torch.linalg.matrix_norm(W, ord=2)
    return _out(sigma * (W.size(-1) / W.size(-2)) ** 0.5, W)


def lipschitz_bound(weights, norm: str = "rms") -> torch.Tensor:
    """Product over layers of each layer's operator norm ("rms": the official RMS -> RMS norm; "l2": ||W||_2).
    weights: matrices (fan_out, fan_in) or stacks [R, fan_out, fan_in]; returns a 0-d tensor or [R]
    (inf for a run with non-finite weights)."""
    if norm not in ("rms", "l2"):
        raise ValueError(f"norm must be 'rms' or 'l2', got {norm!r}")
    out = None
    for W in weights:
        W = W.detach().double()
        finite = torch.isfinite(W).all(dim=(-2, -1))            # a diverged run: its bound is inf
        n = torch.linalg.matrix_norm(torch.where(finite[..., None, None], W, 0.0), ord=2)
        n = torch.where(finite, n, torch.inf)
        if norm == "rms":
            n = n * (W.size(-1) / W.size(-2)) ** 0.5
        out = n if out is None else out * n
    return out


@torch.no_grad()
def local_lipschitz(weights, x: torch.Tensor, norm: str = "rms", chunk: int = 32) -> torch.Tensor:
    """max_i ||J(x_i)|| of a bias-free ReLU MLP with stacked weights [R, fo, fi], at inputs x [N, in]:
    the largest local sensitivity seen, a lower bound of the network's Lipschitz constant. Returns [R]
    (NaN for a run with non-finite weights)."""
    Ws = [W.detach().double() for W in weights]
    finite = torch.stack([torch.isfinite(W).all(dim=(-2, -1)) for W in Ws]).all(0)   # [R]
    Ws = [torch.where(finite[:, None, None], W, 0.0) for W in Ws]
    best = None
    for xs in x.double().split(chunk):
        h, masks = xs, []
        for W in Ws[:-1]:
            pre = h @ W.mT if h.ndim == 3 else torch.einsum("ni,roi->rno", h, W)
            masks.append((pre > 0).double())
            h = pre.clamp(min=0)
        J = Ws[-1][:, None]                                             # [R, 1, out, hidden]
        for W, D in zip(reversed(Ws[:-1]), reversed(masks)):
            J = (J * D[:, :, None, :]) @ W[:, None]                     # [R, n, out, fan_in]
        sigma = torch.linalg.eigvalsh(J @ J.mT)[..., -1].clamp(min=0).sqrt()   # the out x out Gram: cheap
        if norm == "rms":
            sigma = sigma * (J.size(-1) / J.size(-2)) ** 0.5
        sigma = sigma.amax(dim=1)
        best = sigma if best is None else torch.maximum(best, sigma)
    return torch.where(finite, best, torch.nan)


def pareto_frontier(bounds, values, grid) -> np.ndarray:
    """F(B) = max{values_j : bounds_j <= B} for every B of `grid` (NaN where no run is <= B).
    bounds, values: [..., J] (J runs); grid: [G]; returns [..., G]. NaN values never count."""
    bounds, values = np.asarray(bounds, dtype=np.float64), np.asarray(values, dtype=np.float64)
    ok = (bounds[..., None, :] <= np.asarray(grid, dtype=np.float64)[:, None]) & ~np.isnan(values[..., None, :])
    masked = np.where(ok, values[..., None, :], -np.inf)
    best = masked.max(axis=-1)
    return np.where(np.isfinite(best), best, np.nan)


def shared_bound_grid(bound_sets, n: int = 20) -> np.ndarray:
    """n log-spaced bounds from the largest of the sets' smallest bounds to the smallest of their largest:
    the range where every set has a run at or below each grid point and is not past its own range.
    Empty if the ranges do not overlap."""
    lo = max(float(np.nanmin(b)) for b in bound_sets)
    hi = min(float(np.nanmax(b)) for b in bound_sets)
    if not (0 < lo <= hi):
        return np.array([])
    return np.geomspace(lo, hi, n)


def frontier_gap(bounds, values, others, grid) -> np.ndarray:
    """Mean over the grid of F(B) minus the envelope max_k F_k(B) of the other run sets, others =
    [(bounds_k, values_k), ...] (one set: a plain frontier difference). Leading dims (e.g. seeds) are
    kept: [..., J] -> [...]."""
    envelope = np.max([pareto_frontier(b, v, grid) for b, v in others], axis=0)
    return np.mean(pareto_frontier(bounds, values, grid) - envelope, axis=-1)
