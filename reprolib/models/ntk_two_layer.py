"""The two-layer ReLU network of over-parameterised convergence theory, in NTK parameterisation, with any
number of independent copies side by side.

Li, Song & Yang, "Federated Adversarial Learning: A Framework with Convergence Analysis" (ICML 2023),
https://arxiv.org/abs/2208.03635, after Du et al. (2019):

    f_W(x) = (1 / sqrt(m)) sum_{r=1..m} a_r relu(<w_r, x>),   w_r ~ N(0, I_d),   a_r ~ Unif{-1, +1}

Only W is trained; a stays at its random draw. With ||x|| = 1, f_W(x) at initialisation is a sum of m
independent terms divided by sqrt(m): its variance, E[relu(g)^2] = 1/2 for g ~ N(0, 1), does not depend
on m, and neither does the scale of the tangent kernel, so one learning rate suits every width.

W has shape [*batch, m, d] and a [*batch, m] (batch: runs, clients, ...); x is [*batch, n, d] with the
same leading shape; f is [*batch, n].
"""
from __future__ import annotations

import math

import torch


def ntk_two_layer_init(runs: int, m: int, d: int, generator: torch.Generator | None = None, dtype=torch.float32,
                       device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`runs` independent draws: W [runs, m, d] with w_r ~ N(0, I_d), a [runs, m] with a_r ~ Unif{-1, +1}."""
    W = torch.randn(runs, m, d, generator=generator, dtype=dtype)
    a = torch.randint(0, 2, (runs, m), generator=generator).to(dtype) * 2 - 1
    return W.to(device), a.to(device)


def ntk_two_layer(W: torch.Tensor, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f_W(x) = m^{-1/2} sum_r a_r relu(<w_r, x>) for every leading index: [*batch, n]."""
    pre = x @ W.transpose(-1, -2)                          # [*batch, n, m]: <w_r, x_i>
    return (torch.relu(pre) @ a.unsqueeze(-1)).squeeze(-1) / math.sqrt(W.shape[-2])
