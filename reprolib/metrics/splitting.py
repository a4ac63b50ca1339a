"""Splitting matrices of Gaussian splats, and PSNR.

"Steepest Descent Density Control for Compact 3D Gaussian Splatting", Wang et al., CVPR 2025,
https://arxiv.org/abs/2505.05587 (after splitting steepest descent, Liu et al. 2019,
https://arxiv.org/abs/1910.02366).

Replace Gaussian k by m offspring with weights w_j (opacities w_j o_k, sum_j w_j = 1) at p_k + delta_j.
To second order in the displacements the loss becomes (the paper's splitting theorem)

    L + grad_p^T mu + 1/2 mu^T H mu + 1/2 sum_j w_j delta_j^T S_k delta_j,   mu = sum_j w_j delta_j,

with the splitting matrix

    S_k = sum_x dL/dsigma_k(x) * grad^2_p sigma_k(x),
    grad^2_p sigma_k(x) = sigma_k(x) (u u^T - Sigma_k^{-1}),   u = Sigma_k^{-1} (x - p_k).

For the additive 2-D renderer dL/dsigma_k(x) = sum_c dL/dI_c(x) c_{k,c}. A symmetric split
(mu = 0, w = 1/2, delta_j = +-delta) changes the loss by 1/2 delta^T S_k delta: it helps only when
S_k has a negative eigenvalue, most along the eigenvector v_min of the smallest one.
"""
from __future__ import annotations

import torch

from ..models.splat2d import colors, gaussian_values, inverse_covariance


def splitting_matrices(params: dict, pixels: torch.Tensor, dl_dimage: torch.Tensor,
                       chunk: int = 2048) -> torch.Tensor:
    """S_k for every Gaussian, [K, 2, 2], in closed form from dL/dI at `pixels` ([P, 3], from autograd)."""
    params = {k: v.detach() for k, v in params.items()}
    conic = inverse_covariance(params["log_scale"], params["angle"])
    opacity = torch.sigmoid(params["opacity_logit"])
    out = []
    for i in range(0, conic.shape[0], chunk):
        sl = slice(i, i + chunk)
        g, _, u = gaussian_values({"xy": params["xy"][sl]}, pixels, conic[sl])
        dl_dsigma = colors(params)[sl] @ dl_dimage.T                     # [k, P]
        w = dl_dsigma * opacity[sl, None] * g                              # dL/dsigma * sigma
        s = torch.einsum("kp,kpi,kpj->kij", w, u, u) - w.sum(1)[:, None, None] * conic[sl]
        out.append(s)
    return torch.cat(out)


def smallest_eigen(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda_min [K] and its unit eigenvector v_min [K, 2] of symmetric 2x2 matrices."""
    vals, vecs = torch.linalg.eigh(0.5 * (s + s.transpose(-1, -2)))
    return vals[:, 0], vecs[:, :, 0]


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """10 log10(1 / MSE) for images in [0, 1] (the rendering is clipped to [0, 1] first)."""
    mse = (image.clamp(0, 1) - target).square().mean()
    return float(-10 * torch.log10(mse))


def position_gradients(params: dict, pixels: torch.Tensor, dl_dimage: torch.Tensor, views: list,
                       chunk: int = 2048) -> torch.Tensor:
    """dL_v/dp_k for each view v (a list of pixel-index tensors), [V, K, 2], in closed form:
    dL_v/dp_k = sum_{x in v} dL_v/dsigma_k(x) sigma_k(x) u,  u = Sigma_k^{-1} (x - p_k), where
    L_v is the mean loss over v's pixels (dL_v/dI = dL/dI * P / |v| on v for a loss that is a mean)."""
    params = {k: v.detach() for k, v in params.items()}
    conic = inverse_covariance(params["log_scale"], params["angle"])
    opacity = torch.sigmoid(params["opacity_logit"])
    n_pix = pixels.shape[0]
    out = []
    for i in range(0, conic.shape[0], chunk):
        sl = slice(i, i + chunk)
        g, _, u = gaussian_values({"xy": params["xy"][sl]}, pixels, conic[sl])
        w = (colors(params)[sl] @ dl_dimage.T) * opacity[sl, None] * g          # [k, P]
        out.append(torch.stack([torch.einsum("kp,kpi->ki", w[:, v], u[:, v]) * (n_pix / len(v)) for v in views]))
    return torch.cat(out, 1)


def count_at_psnr(counts, psnrs, target: float) -> float:
    """Gaussians a method needs to reach PSNR `target`, read off its count-vs-PSNR frontier (the best
    PSNR among runs with at most that many Gaussians, `metrics.pareto_frontier`): log-linear
    interpolation between the last frontier run below the target and the first at or above it (a run is
    on the frontier when it beats every run with fewer Gaussians). inf when
    no run reaches the target; the smallest run's count when every run is above it (an upper bound)."""
    import numpy as np

    from .lipschitz import pareto_frontier
    counts, psnrs = np.asarray(counts, dtype=np.float64), np.asarray(psnrs, dtype=np.float64)
    order = np.argsort(counts)
    c, f = counts[order], pareto_frontier(counts, psnrs, counts[order])
    on = np.r_[True, f[1:] > f[:-1]]                 # the runs that set the frontier
    c, f = c[on], f[on]
    above = np.nonzero(f >= target)[0]
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    if i == 0:
        return float(c[0])
    w = (target - f[i - 1]) / (f[i] - f[i - 1])
    return float(np.exp(np.log(c[i - 1]) + w * (np.log(c[i]) - np.log(c[i - 1]))))
