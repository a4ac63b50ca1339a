"""Federated adversarial learning (FAL): FedAvg whose clients train on PGD adversarial examples.

Li, Song & Yang, "Federated Adversarial Learning: A Framework with Convergence Analysis" (ICML 2023),
https://arxiv.org/abs/2208.03635, Algorithm 1. One communication round t, for every client c at once:

    W_c^{t,0} = W^t                                                           (server broadcasts)
    for k = 0 .. K-1:
        x~_i = A(W_c^{t,k}, x_i)  for i in client c      (inner loop: rho-bounded l2 PGD on the loss)
        W_c^{t,k+1} = W_c^{t,k} - eta_local grad_W L_c(W_c^{t,k}),
                      L_c(W) = (1/n_c) sum_{i in c} 1/2 (f_W(x~_i) - y_i)^2        (outer loop: local GD)
    Delta W^t = (1/C) sum_c (W_c^{t,K} - W^t)                                 (server aggregates)
    W^{t+1} = W^t + eta_global Delta W^t

Any number of independent runs go side by side (a leading run axis S): W [S, m, d], a [S, m], the
clients' padded data xc [S, C, n_max, d], yc and wc [S, C, n_max] (wc: 1/n_c on client c's points, 0 on
padding; data.client_tensors). The gradient of the sum of every run's and client's loss is each one's own
gradient, so one backward pass serves them all.
"""
from __future__ import annotations

import torch

from ..metrics.robust import pgd_l2
from ..models.ntk_two_layer import ntk_two_layer


def client_losses(Wc, a, xc, yc, wc) -> torch.Tensor:
    """L_c(W_c) on the given (possibly adversarial) inputs, per run and client: [S, C]."""
    return (wc * 0.5 * (ntk_two_layer(Wc, a.unsqueeze(1), xc) - yc) ** 2).sum(-1)


def fal_round(W, a, xc, yc, wc, lr_local, local_steps: int, rho: float, pgd_steps: int,
              lr_global: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One FAL communication round; returns W^{t+1} [S, m, d]. lr_local: a float or one per run [S]."""
    C = xc.shape[1]
    lr = torch.as_tensor(lr_local, dtype=W.dtype, device=W.device).reshape(-1, 1, 1, 1)
    Wc = W.detach().unsqueeze(1).expand(-1, C, -1, -1).clone()                 # broadcast W^t to the clients
    ac = a.unsqueeze(1)
    point_loss = lambda z: 0.5 * (ntk_two_layer(Wc, ac, z) - yc) ** 2
    for _ in range(local_steps):
        x_adv = pgd_l2(point_loss, xc, rho, pgd_steps, generator=generator)    # A(W_c^{t,k}, x)
        Wc.requires_grad_(True)
        with torch.enable_grad():
            g, = torch.autograd.grad(client_losses(Wc, a, x_adv, yc, wc).sum(), Wc)
        Wc = (Wc - lr * g).detach()                                             # local GD step
    return W.detach() + lr_global * (Wc - W.detach().unsqueeze(1)).mean(1)     # FedAvg of the updates
