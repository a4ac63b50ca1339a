"""Weight constraints on the spectral norm, applied to a weight after each optimizer step.

Newhouse, Hess, Cesista, Zahorodnii, Bernstein & Isola, "Training Transformers with Enforced Lipschitz
Constants" (2025), arXiv 2507.13338; official code github.com/Arongil/lipschitz-transformers
(modula/atom.py), which every function here follows. For M = U diag(s) V^T with top singular triple
(sigma_1, u_1, v_1) and a cap w_max:

    spectral normalize   M <- M / max(1, sigma_1 / w_max)               every s shrinks by one factor
    spectral hammer      M <- M + (w_max - sigma_1) u_1 v_1^T           only s_1 is moved, to w_max
    spectral soft cap    M <- M - alpha M M^T M,  then  M <- M + alpha M M^T M
                         i.e.  s -> p + alpha p^3,  p = s - alpha s^3  (soft_cap_map)
    SVD clip (exact)     M <- U diag(min(s, w_max)) V^T                 the official `_pure_svd`

sigma_1, u_1, v_1 come from 16 power iterations from a fresh random start on every call (official
`_power_iterate`), so normalize and hammer see a slightly low sigma_1 when the top of the spectrum is
flat. The soft cap has no w_max of its own: its strength alpha is coupled to the optimizer's step
(official `soft_cap_coupling`). If every s <= w_max before a step that decays W by (1 - wd) and adds an
update of spectral norm <= eta, every s is <= k = w_max (1 - wd) + eta after it; alpha is the smallest
non-negative real root of

    soft_cap_map(k, alpha) - w_max = -k^9 alpha^4 + 3 k^7 alpha^3 - 3 k^5 alpha^2 + (k - w_max) = 0,

so the cap sends k back to w_max, and, where the map increases on all of [0, k] (alpha k^2 <= 1/3), every
s back into [0, w_max]. That holds while the step is small next to the cap, eta <= 0.31 w_max; beyond, the
map's hump between 0 and k exceeds w_max (by 5% at eta = 0.6 w_max). As in the official code alpha is min(1, that root), and 1 when there is none: then the guarantee
is void.
There is none when the decay outweighs the step (k < w_max: the quartic is negative for every alpha;
the official configs pair the soft cap with wd = 0), and none below 1 when w_max is small: the root grows
like 1 / w_max^2 and passes 1 near w_max = 0.3-0.45 for eta between 0.01 and 0.3.

Layer norms. The official Linear.project works on M = W / sqrt(fan_out / fan_in): sigma_1(M) is W's
RMS -> RMS operator norm, sqrt(fan_in / fan_out) ||W||_2, so w_max caps that norm (`project_rms`). Its
soft-cap coupling receives wd * lr * tn as `wd` and lr * tn / sqrt(fan_out / fan_in) as the update norm
(tn: the layer's share of the update norm); reprolib.optim.constrained passes the same.

Every function takes one matrix (m, n) or a stack (..., m, n); w_max and alpha may be numbers or
tensors of shape (...) (one per matrix).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

PROJECTIONS = ("none", "spec_normalize", "spec_hammer", "soft_cap", "svd_clip")


def _per_matrix(x, M: Tensor) -> Tensor:
    """A number or a tensor of shape M.shape[:-2], as a tensor broadcastable against M."""
    return torch.as_tensor(x, dtype=M.dtype, device=M.device).reshape(*np.shape(x), 1, 1)


def power_iteration(M: Tensor, iters: int = 16, generator: torch.Generator | None = None):
    """(u, sigma, v): the top singular triple of each matrix, from a random start (official `_power_iterate`:
    iterate on M M^T for u when m < n, else on M^T M for v)."""
    m, n = M.shape[-2:]
    wide = m < n
    A = M.mT if wide else M                       # iterate on A^T A: the smaller Gram
    v = torch.randn(*M.shape[:-2], A.size(-1), 1, generator=generator, device=M.device, dtype=M.dtype)
    v = v / v.norm(dim=-2, keepdim=True)
    for _ in range(iters):
        v = A.mT @ (A @ v)
        v = v / v.norm(dim=-2, keepdim=True)
    Av = A @ v
    sigma = Av.norm(dim=-2, keepdim=True)
    u = Av / sigma
    u, v = (v, u) if wide else (u, v)
    return u[..., 0], sigma[..., 0, 0], v[..., 0]


def spectral_normalize(M: Tensor, w_max=1.0, iters: int = 16, generator=None) -> Tensor:
    """M / max(1, sigma_1 / w_max) (official `_spectral_normalize` on M / w_max, then times w_max)."""
    _, sigma, _ = power_iteration(M, iters, generator)
    return M / torch.clamp(sigma[..., None, None] / _per_matrix(w_max, M), min=1.0)


def spectral_hammer(M: Tensor, w_max=1.0, iters: int = 16, generator=None) -> Tensor:
    """M + (w_max - sigma_1) u_1 v_1^T: the top singular value set to w_max (official `_spectral_hammer`;
    it also raises a sigma_1 below w_max)."""
    u, sigma, v = power_iteration(M, iters, generator)
    change = _per_matrix(w_max, M) - sigma[..., None, None]
    return M + change * (u[..., :, None] * v[..., None, :])


def soft_cap_map(s, alpha):
    """What the soft cap does to one singular value: p = s - alpha s^3, then p + alpha p^3."""
    p = s - alpha * s ** 3
    return p + alpha * p ** 3


def spectral_soft_cap(M: Tensor, alpha) -> Tensor:
    """Two odd polynomial steps, M <- M (I - alpha M^T M) then M <- M (I + alpha M^T M) (official `_soft_cap`),
    computed on the smaller Gram matrix."""
    alpha = _per_matrix(alpha, M)
    wide = M.size(-2) <= M.size(-1)
    X = M if wide else M.mT
    for sign in (-1.0, 1.0):
        X = X + sign * alpha * (X @ X.mT) @ X
    return X if wide else X.mT


def svd_clip(M: Tensor, w_max=1.0) -> Tensor:
    """U diag(min(s, w_max)) V^T, exactly (official `_pure_svd`)."""
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    S = torch.minimum(S, torch.as_tensor(w_max, dtype=S.dtype, device=S.device).reshape(*np.shape(w_max), 1))
    return (U * S[..., None, :]) @ Vh


def _polynomial_roots(coeffs: np.ndarray) -> np.ndarray:
    """Roots of many degree-4 polynomials at once (rows of coeffs, highest power first), as np.roots finds
    them: the eigenvalues of the companion matrix."""
    coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    deg = coeffs.shape[1] - 1
    comp = np.zeros((len(coeffs), deg, deg))
    comp[:, 0, :] = -coeffs[:, 1:] / coeffs[:, :1]
    comp[:, np.arange(1, deg), np.arange(deg - 1)] = 1.0
    return np.linalg.eigvals(comp)


def soft_cap_coupling(w_max, wd, max_update_norm):
    """alpha for the soft cap (official `soft_cap_coupling`): the smallest non-negative real root of
    -k^9 a^4 + 3 k^7 a^3 - 3 k^5 a^2 + (k - w_max), k = w_max (1 - wd) + max_update_norm; 1 if none.
    Arguments broadcast (numbers or arrays); returns a float or an array."""
    w_max, wd, eta = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (w_max, wd, max_update_norm)))
    k = (w_max * (1 - wd) + eta).ravel()
    coeffs = np.stack([-k ** 9, 3 * k ** 7, -3 * k ** 5, np.zeros_like(k), k - w_max.ravel()], axis=1)
    roots = _polynomial_roots(coeffs)
    usable = (np.abs(roots.imag) < 1e-6) & (roots.real >= 0)
    alpha = np.where(usable, roots.real, 1.0).min(axis=1).reshape(w_max.shape)
    return float(alpha) if alpha.ndim == 0 else alpha


def project_rms(W: Tensor, method: str, w_max=1.0, alpha=None, iters: int = 16, generator=None) -> Tensor:
    """The official Linear.project: cap W's RMS -> RMS norm by projecting M = W / sqrt(fan_out / fan_in)."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; valid: {PROJECTIONS}")
    if method == "none":
        return W
    scale = math.sqrt(W.size(-2) / W.size(-1))
    M = W / scale
    if method == "spec_normalize":
        M = spectral_normalize(M, w_max, iters, generator)
    elif method == "spec_hammer":
        M = spectral_hammer(M, w_max, iters, generator)
    elif method == "soft_cap":
        if alpha is None:
            raise ValueError("the soft cap needs alpha (soft_cap_coupling)")
        M = spectral_soft_cap(M, alpha)
    else:
        M = svd_clip(M, w_max)
    return scale * M
