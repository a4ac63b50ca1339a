"""Stable-SPAM: Adam with adaptive spike clipping, gradient-norm normalisation and momentum reset.

Tianjin Huang et al., "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam",
arXiv 2502.17055 ; official code https://github.com/TianjinYellow/StableSPAM
(galore_torch/stablespam.py), which this follows.

Per tensor, with its step counter t and a global step counter s (one per optimizer.step()):

    AdaClip  T <- theta T + (1 - theta) max|g|,  T^ = T / (1 - theta^t)
             g_i <- g_i / max|g| * T^   where |g_i| > T^          (spikes scaled down to T^)
    AdaGN    n = ||g||_2,  mu <- g1 mu + (1 - g1) n,  nu <- gamma2 nu + (1 - gamma2) n^2
             g <- g / n * (mu / (1 - g1^t)) / (sqrt(nu / (1 - gamma2^t)) + eps)      (if n > 0)
    reset    every Delta_T global steps: m = v = 0 and t = 1  (T, mu, nu are kept)
    Adam     m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,  W <- W (1 - lr wd)
             W <- W - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)

Defaults (official): lr 1e-3, betas (0.9, 0.999), gamma1 0.7, gamma2 0.9, theta (their gamma3)
0.999, eps 1e-8, Delta_T (their update_proj_gap) 1000; the paper's scripts use 500. With
total_T (the run length, 20000 in their scripts) g1 = gamma1 * c(s) and b1 = beta1 * c(s),
c(s) = eta_min + (1 - eta_min)(1 + cos(pi s / (total_T + 1))) / 2, eta_min 0.5; c is held at
eta_min past total_T + 1 (the official cosine rises again there). gamma1 = -1 means beta1.

Departures from the official code, both deliberate:
  * At a reset step the official code rebinds state['exp_avg'] to zeros after taking local
    references, so that step still updates with the stale moments (and bias correction t = 1),
    and the next step starts from zero moments at t = 2. Here the moments are zeroed before the
    Adam update, the evident intent (and what pytorch-optimizer does).
  * p.grad is not modified (the official code clips it in place). No amsgrad option.
As in the official code, the one per-tensor t also drives the AdaClip/AdaGN bias corrections, so
restarting t at a reset loosens the spike threshold T^ for a while after each reset.
pytorch-optimizer 4.1 instead uses the global s there, skips tensors whose gradient is zero, and
its cosine factor runs up to 0.025 below the official one.
"""
import math

import torch
from torch import Tensor

from .base import closure_loss


def cosine_scale(s: int, total_T: int | None, eta_min: float = 0.5) -> float:
    """The official CosineDecay factor c(s) for gamma1 and beta1; 1 without total_T."""
    if total_T is None:
        return 1.0
    return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * min(s, total_T + 1) / (total_T + 1))) / 2


@torch.no_grad()
def stable_spam_update(p: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, norm_stats: Tensor,
                       step: int, lr: float, betas=(0.9, 0.999), gamma1: float = 0.7, gamma2: float = 0.9,
                       theta: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                       reset: bool = False, scale: float = 1.0) -> int:
    """One Stable-SPAM step on p in place; returns the tensor's step counter after it (1 on a reset).

    step: this tensor's counter t, already incremented for this step. norm_stats: float32 (3,)
    holding (T, mu, nu), updated in place. grad is read, never written.
    """
    beta1, beta2 = betas[0] * scale, betas[1]
    g1 = gamma1 * scale
    T, mu, nu = norm_stats.unbind(0)  # views: in-place ops update norm_stats
    g = grad.float()
    g_abs = g.abs()
    g_max = g_abs.max()
    T.copy_(theta * T + (1 - theta) * g_max)
    T_hat = T / (1 - theta ** step)
    g = torch.where(g_abs > T_hat, g / g_max * T_hat, g)
    n = torch.linalg.vector_norm(g)
    mu.copy_(g1 * mu + (1 - g1) * n)
    nu.copy_(gamma2 * nu + (1 - gamma2) * n * n)
    c = (mu / (1 - g1 ** step)) / (torch.sqrt(nu / (1 - gamma2 ** step)) + eps)
    g = torch.where(n > 0, g / n * c, g).to(exp_avg.dtype)  # where, not `if n > 0`: no host sync
    if reset:  # before the update (the official code zeroes them one step late, see the docstring)
        exp_avg.zero_()
        exp_avg_sq.zero_()
        step = 1
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
    p.addcdiv_(exp_avg.to(p.dtype), denom.to(p.dtype), value=-lr / (1 - beta1 ** step))
    return step


class StableSPAM(torch.optim.Optimizer):
    """Stable-SPAM (see the module docstring). reset_interval is Delta_T (0: never reset);
    total_T enables the cosine decay of gamma1 and beta1."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), gamma1: float = 0.7, gamma2: float = 0.9,
                 theta: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, reset_interval: int = 1000,
                 total_T: int | None = None, eta_min: float = 0.5):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or reset_interval < 0:
            raise ValueError(f"invalid Stable-SPAM settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"reset_interval={reset_interval}")
        defaults = dict(lr=lr, betas=tuple(betas), gamma1=gamma1, gamma2=gamma2, theta=theta, eps=eps,
                        weight_decay=weight_decay, reset_interval=reset_interval, total_T=total_T,
                        eta_min=eta_min, global_step=0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            group["global_step"] += 1  # s: counts calls, as the official total_steps (drives resets)
            s, interval = group["global_step"], group["reset_interval"]
            scale = cosine_scale(s, group["total_T"], group["eta_min"])
            gamma1 = group["betas"][0] if group["gamma1"] == -1 else group["gamma1"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("StableSPAM does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["norm_stats"] = torch.zeros(3, device=p.device, dtype=torch.float32)
                state["step"] = stable_spam_update(
                    p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["norm_stats"], state["step"] + 1,
                    group["lr"], group["betas"], gamma1, group["gamma2"], group["theta"], group["eps"],
                    group["weight_decay"], reset=interval > 0 and s % interval == 0, scale=scale)
        return loss
