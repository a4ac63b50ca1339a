"""Fira: GaLore's low-rank Adam plus a scaled full-rank residual.

Chen, Feng, Li, Chu, Zhou, Wang, Zhao, Chen, Zhang, "Fira: Can We Achieve Full-rank Training of LLMs
Under Low-rank Constraint?", arXiv 2410.01623; official code https://github.com/xichen-fy/Fira
(fira/fira_adamw.py and gradient_projection.py, the PyPI package `fira` 1.0.2), followed step for step.

GaLore (reprolib/optim/galore.py) gives R (the projected gradient) and psi(R) = Adam(R). Fira adds
the part of G outside the subspace, scaled as Adam would have scaled it:

    phi_i = ||psi(R)_{:,i}|| / (||R_{:,i}|| + 1e-8)        Eq. (6): norm-based scaling, per column of R
                                                            (per row when R is tall: m >= n)
    S_t   = phi ⊙ (G - alpha back(R))                        Eq. (7): the residual, scaled
    if ||S_t|| / ||S_{t-1}|| > gamma:                       Eq. (8): the norm-growth limiter,
        S_t <- S_t * gamma ||S_{t-1}|| / ||S_t||                     gamma = 1.01
    W <- W - lr_t (alpha back(psi(R)) + S_t)                 Eq. (9), lr_t with Adam's bias corrections

As in the official code, alpha scales the projected-back part (so the residual subtracts alpha P R:
with alpha = 0.25 a quarter of the in-subspace gradient is removed, not all of it), the stored
norm ||S_{t-1}|| is the norm after limiting, and 1e-8 guards both ratios. The ablations
scaling=False (phi = 1: the raw residual) and limiter=False switch one part off.
"""
import torch
from torch import Tensor

from .galore import GaLore, project_back


def fira_scaling(R: Tensor, psi: Tensor) -> Tensor:
    """phi, Eq. (6): the ratio of Adam's output norm to its input norm, per column of a wide R
    (1 x n, broadcast over rows) or per row of a tall one (m x 1, broadcast over columns)."""
    dim = 0 if R.shape[0] < R.shape[1] else 1
    return (psi.norm(dim=dim, keepdim=True) / (R.norm(dim=dim, keepdim=True) + 1e-8))


def norm_growth_limit(S: Tensor, prev_norm: Tensor | None, gamma: float = 1.01) -> tuple[Tensor, Tensor]:
    """Eq. (8): shrink S so that ||S_t|| <= gamma ||S_{t-1}||; returns (S, ||S|| after limiting)."""
    norm = S.norm()
    if prev_norm is None:
        return S, norm
    limiter = torch.clamp(norm / (prev_norm + 1e-8), min=gamma) / gamma  # 1 when within the bound
    return S / limiter, norm / limiter


class Fira(GaLore):
    """GaLore plus the scaled residual (Eq. 9). gamma: the limiter's growth bound (1.01)."""

    def __init__(self, params, gamma: float = 1.01, scaling: bool = True, limiter: bool = True, **kwargs):
        self.gamma, self.scaling, self.limiter = gamma, scaling, limiter
        super().__init__(params, **kwargs)

    def direction(self, p, grad, R, psi, state, group) -> Tensor:
        low = super().direction(p, grad, R, psi, state, group)
        if state.get("basis") is None:
            return low
        S = grad - project_back(R, state["basis"], state["wide"]).mul_(group["scale"])  # Eq. (7)
        if self.scaling:
            S = S * fira_scaling(R, psi)                                                 # Eq. (6)
        if self.limiter:
            S, state["residual_norm"] = norm_growth_limit(S, state.get("residual_norm"), self.gamma)  # Eq. (8)
        return low.add_(S)                                                               # Eq. (9)
