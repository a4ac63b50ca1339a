"""The l2 adversary of robust training and of the robust loss: projected gradient ascent (PGD) on the loss
within the ball ||delta||_2 <= rho, and the random-noise baseline it must beat.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks"
(ICLR 2018), https://arxiv.org/abs/1706.06083; used as the inner maximisation A(W, x) of federated
adversarial learning (Li, Song & Yang, ICML 2023, https://arxiv.org/abs/2208.03635):

    delta_0 ~ Unif(ball of radius rho)                                    (random start)
    delta_{s+1} = Proj_{||.|| <= rho}( delta_s + alpha g_s / ||g_s|| ),   g_s = grad_delta loss(x + delta_s)

with Madry et al.'s step alpha = 2.5 rho / steps. `loss_fn` maps inputs [..., n, d] to one loss per point
[..., n], each point's loss depending on its own input only, so the gradient of their sum is every point's
own gradient.
"""
from __future__ import annotations

import torch


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_l2(x: torch.Tensor, rho: float, generator: torch.Generator | None = None, inside: bool = False) -> torch.Tensor:
    """x + delta with delta uniform on the sphere of radius rho (inside=True: uniform in the ball)."""
    delta = _unit(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)) * rho
    if inside:
        u = torch.rand(x.shape[:-1] + (1,), generator=generator, device=x.device, dtype=x.dtype)
        delta = delta * u ** (1.0 / x.shape[-1])
    return x + delta


def pgd_l2(loss_fn, x: torch.Tensor, rho: float, steps: int, step_size: float | None = None,
           random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """The PGD adversarial inputs x + delta, ||delta||_2 <= rho per point (detached). step_size defaults
    to 2.5 rho / steps (Madry et al.)."""
    x = x.detach()
    if rho == 0 or steps == 0:
        return random_l2(x, rho, generator, inside=True) if random_start and rho > 0 else x
    alpha = 2.5 * rho / steps if step_size is None else step_size
    delta = random_l2(x, rho, generator, inside=True) - x if random_start else torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            g, = torch.autograd.grad(loss_fn(x + delta).sum(), delta)
        delta = delta.detach() + alpha * _unit(g)                                    # ascent along g / ||g||
        delta = delta * (rho / delta.norm(dim=-1, keepdim=True).clamp_min(rho))      # project on the rho-ball
    return (x + delta).detach()
