"""The rho_a controller: cap any optimizer's step at the softmax step radius along that step.

Piyush Sao, "Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in
Cross-Entropy", 2026, arXiv 2603.13552, Proposition 5.2 and eq. 19:

    p      = the step the wrapped optimizer proposes (Adam's direction times its lr)
    v      = p / ||p||,   rho_a(v) = pi / max_x Delta_a(x; v)     (one JVP along v, eq. 14)
    p~     = min(1, r_max rho_a(v) / ||p||) p                      (r_max = 1: the paper's controller)

so the normalised step r = ||p~|| / rho_a(v) never exceeds r_max. It has no hyperparameter of its
own at r_max = 1. As in the official code, the JVP runs with the model in eval mode (BatchNorm uses
its running statistics) on the controller's sample set, here the batch passed to `step`.
"""
from __future__ import annotations

import torch

from ..metrics.softmax_radius import logit_jvp, softmax_radius


class RadiusClip:
    """Wraps an optimizer: opt = RadiusClip(torch.optim.Adam(model.parameters(), lr), model);
    loss.backward(); opt.step(x) (x: the inputs rho_a is taken over). After each step, .last holds
    the proposed and taken step lengths, rho_a and r = taken / rho_a."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module, r_max: float = 1.0):
        self.optimizer, self.model, self.r_max = optimizer, model, r_max
        self.last: dict = {}

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, x: torch.Tensor) -> dict:
        named = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
        before = {k: p.detach().clone() for k, p in named.items()}
        self.optimizer.step()
        with torch.no_grad():
            proposed = {k: p - before[k] for k, p in named.items()}
            tau0 = float(torch.sqrt(sum((d.double() ** 2).sum() for d in proposed.values())))
        if tau0 == 0:
            self.last = dict(proposed=0.0, taken=0.0, rho=float("inf"), r=0.0)
            return self.last
        direction = {k: d / tau0 for k, d in proposed.items()}
        training = self.model.training
        self.model.eval()
        _, a = logit_jvp(self.model, before, direction, x)     # at theta_t, before the step
        self.model.train(training)
        rho = softmax_radius(a)
        scale = min(1.0, self.r_max * rho / tau0)               # eq. 19
        if scale < 1.0:
            with torch.no_grad():
                for k, p in named.items():
                    p.copy_(before[k] + scale * proposed[k])
        self.last = dict(proposed=tau0, taken=scale * tau0, rho=rho, r=scale * tau0 / rho)
        return self.last
