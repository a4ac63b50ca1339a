"""An adversarial smoothness penalty on a stack of networks: the robust regulariser that keeps a value
function's local Lipschitz constant small.

Zheng, Wang, Xu & Huang, "Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz
Regularized Value Function" (ICLR 2023, arXiv 2302.01244), robust regularisation of the value network,
in the form of Shen et al. (SR2L, ICML 2020, arXiv 2003.09534): inside an l_inf ball of radius eps,

    P(x) = max_{||delta||_inf <= eps} || f(x + delta) - f(x) ||^2

approximated by one signed-gradient (FGSM) step from a uniform random start delta_0 (at delta = 0 the
gradient of the squared difference vanishes, hence the random start):

    delta = clip(delta_0 + eps * sign(grad_delta ||f(x + delta_0) - f(x)||^2), -eps, eps)

The penalty is then || f(x + delta) - f(x) ||^2 (summed over outputs, averaged over the batch) with
gradient through both terms. eps is one radius per member ([R]); a member with eps = 0 gets 0.
"""
from __future__ import annotations

import torch


def adversarial_smoothness(f, x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None = None,
                           start: torch.Tensor | None = None):
    """f maps inputs [R, B, d] to outputs [R, B, k]; x is [B, d] (shared) or [R, B, d]; returns [R].
    start: the uniform [0, 1) draw [R, B, d] of the random start, when drawn beforehand (else drawn here)."""
    R = eps.numel()
    x = x.expand(R, *x.shape) if x.ndim == 2 else x
    radius = eps.to(x.dtype).view(R, 1, 1)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if start is None else start
    delta0 = (2 * u - 1) * radius
    clean = f(x)
    d = delta0.detach().requires_grad_(True)
    with torch.enable_grad():
        gap = (f(x + d) - clean.detach()).pow(2).sum()
        (g,) = torch.autograd.grad(gap, d)
    delta = torch.maximum(torch.minimum(delta0 + radius * torch.sign(g), radius), -radius).detach()
    return (f(x + delta) - clean).pow(2).sum(-1).mean(-1)
