"""Self-supervised objectives on two views of a batch: SimCLR's NT-Xent, Barlow Twins, and their
Adaptive Multi-head Contrastive Learning (AMCL) versions with pair-adaptive temperatures.

Adaptive Multi-head Contrastive Learning. Lei Wang, Piotr Koniusz, Tom Gedeon, Liang Zheng (ECCV 2024).
https://arxiv.org/abs/2310.05615 · official code https://github.com/LeiWangR/cl (`amcl/losses.py`)

Notation (the paper's): C projection heads give z_i^c for view i; s = cos(z_i^c, z_j^c); every pair
(i, j) of a head has its own temperature tau_ij^c from a shared map phi (Eq. 3):

    tau(a, b) = tau_min + (tau_max - tau_min) * sigmoid(-phi(a) . phi(b)),   tau in (1e-5, 2)

    Omega(tau) = d/2 log tau + 1/tau                    (the regulariser of Eq. 2.1-2.3, d = head width)

SimCLR (Eq. 2.1 with the Top-k approximation of Eq. 5), per head c and anchor i with positive i+ and
the k hardest of its 2B - 2 negatives n (largest similarity):

    l_i^c = -s_{i,i+} / tau_{i,i+} + mean_k s_{i,n} / tau_{i,n}
            + beta Omega(tau_{i,i+}) - beta sum_k (log tau_{i,n} + 1 / tau_{i,n})

    L = sum_c mean_i l_i^c         (both views serve as anchors: the mean over 2B anchors)

Barlow Twins (Eq. 2.3), per head, with the cross-correlation R of the batch-standardised features and
temperatures from pairs of batch-wise channel vectors (phi maps R^N -> R^N, N the batch size):

    L^c = sum_l (1 - R_ll / tau_ll)^2 + lambda sum_{l != m} R_lm^2 / tau_lm
          + beta sum_l Omega(tau_ll) - beta sum_{l != m} Omega(tau_lm)

The temperature, Omega and the Top-k form follow the official `amcl/losses.py` (its v2 reference
implementation), whose defaults are C = 3, k = 100, beta = 1e-4 (SimCLR) and 1e-6 (Barlow Twins),
phi = Linear(d, 128) - ReLU - Linear(128, d) shared by the heads. Every AMCL term is computed in
float32 with autocast off: tau can be 1e-5, so 1/tau reaches 1e5.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PairTemperature", "amcl_barlow_twins", "amcl_nt_xent", "barlow_twins", "nt_xent", "omega"]


def _fp32(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False) if device.type in ("cuda", "cpu") \
        else contextlib.nullcontext()


def omega(tau: torch.Tensor, dim: int) -> torch.Tensor:
    """Omega(tau) = dim/2 log tau + 1/tau, the temperature regulariser of Eq. 2.1-2.3."""
    return 0.5 * dim * torch.log(tau) + torch.reciprocal(tau)


class PairTemperature(nn.Module):
    """Eq. 3: tau(a, b) = tau_min + (tau_max - tau_min) sigmoid(-phi(a) . phi(b)), for every pair of rows.

    forward(u [n, dim], v [m, dim]) -> tau [n, m]. One module is shared by all heads (official code)."""

    def __init__(self, dim: int, hidden: int = 128, tau_min: float = 1e-5, tau_max: float = 2.0):
        super().__init__()
        if not 0 < tau_min < tau_max:
            raise ValueError(f"need 0 < tau_min < tau_max, got {tau_min}, {tau_max}")
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with _fp32(u.device):
            score = self.phi(u.float()) @ self.phi(v.float()).T
            return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)


def _partner(b: int, device) -> torch.Tensor:
    """Index of each row's positive in the stacked views [z1; z2]: i <-> i + b."""
    return (torch.arange(2 * b, device=device) + b) % (2 * b)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, Eq. 1): mean over the 2B anchors of
    -log exp(s_{i,i+}/tau) / sum_{j != i} exp(s_ij/tau), s the cosine similarity. z: [B, d]."""
    with _fp32(z1.device):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
        logits = z @ z.T / tau
        logits.fill_diagonal_(float("-inf"))
        return F.cross_entropy(logits, _partner(len(z1), z.device))


def amcl_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: nn.Module, beta: float = 1e-4,
                 topk: int = 100, return_pairs: bool = False):
    """AMCL-SimCLR (Eq. 2.1, Top-k form of Eq. 5), summed over heads. z1, z2: [B, C, d] (C heads).
    `temperature(u, v)` gives the [n, m] pair temperatures (PairTemperature). return_pairs=True also
    returns, for every head, the similarity and temperature matrices over the 2B views and the
    positive index, for diagnostics."""
    b, c, d = z1.shape
    if b < 2:
        raise ValueError("AMCL needs at least two images per batch")
    k = min(topk, 2 * b - 2)
    with _fp32(z1.device):
        zs = F.normalize(torch.cat([z1, z2]).float(), dim=-1)          # [2B, C, d]
        pos = _partner(b, zs.device)
        rows = torch.arange(2 * b, device=zs.device)
        negative = torch.ones(2 * b, 2 * b, dtype=torch.bool, device=zs.device)
        negative[rows, rows] = False
        negative[rows, pos] = False                                     # the 2B - 2 negatives of each anchor
        total, pairs = zs.new_zeros(()), []
        for h in range(c):
            z = zs[:, h]
            sim, tau = z @ z.T, temperature(z, z)                       # s_ij and tau_ij (Eq. 3)
            s_pos, t_pos = sim[rows, pos], tau[rows, pos]
            vals, idx = sim.masked_fill(~negative, float("-inf")).topk(k, dim=1)   # the k hardest negatives
            t_neg = tau.gather(1, idx)
            loss = (-s_pos / t_pos + (vals / t_neg).mean(1)                              # Eq. 2.1 / 5
                    + beta * omega(t_pos, d) - beta * (torch.log(t_neg) + 1 / t_neg).sum(1))
            total = total + loss.mean()                                 # mean over anchors, sum over heads
            if return_pairs:
                pairs.append(dict(sim=sim.detach(), tau=tau.detach(), pos=pos, negative=negative))
    return (total, pairs) if return_pairs else total


def _standardise(z: torch.Tensor) -> torch.Tensor:
    return (z - z.mean(0)) / (z.std(0) + 1e-9)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, Eq. 1): sum_l (1 - R_ll)^2 + lambda sum_{l != m} R_lm^2, R the
    cross-correlation of the batch-standardised features. z: [B, D]."""
    with _fp32(z1.device):
        r = _standardise(z1.float()).T @ _standardise(z2.float()) / len(z1)
        diag = torch.diagonal(r)
        return (1 - diag).pow(2).sum() + lambd * (r.pow(2).sum() - diag.pow(2).sum())


def amcl_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, temperature: nn.Module, beta: float = 1e-6,
                      lambd: float = 5e-3) -> torch.Tensor:
    """AMCL-Barlow Twins (Eq. 2.3), summed over heads. z1, z2: [B, C, D]; `temperature` maps the
    batch-wise channel vectors (rows of z^T, length B: PairTemperature(dim=B)) to [D, D] temperatures."""
    b, c, dim = z1.shape
    with _fp32(z1.device):
        off = ~torch.eye(dim, dtype=torch.bool, device=z1.device)
        total = z1.new_zeros((), dtype=torch.float32)
        for h in range(c):
            x, y = z1[:, h].float(), z2[:, h].float()
            r = _standardise(x).T @ _standardise(y) / b
            tau = temperature(x.T, y.T)                                 # tau_lm from channel vectors z_l:, z_m:
            t_pos, r_pos = torch.diagonal(tau), torch.diagonal(r)
            total = total + ((1 - r_pos / t_pos).pow(2).sum() + lambd * (r[off].pow(2) / tau[off]).sum()
                             + beta * omega(t_pos, dim).sum() - beta * omega(tau[off], dim).sum())   # Eq. 2.3
    return total
