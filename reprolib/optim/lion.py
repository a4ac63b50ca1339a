"""Lion: EvoLved Sign Momentum, the sign of an interpolation of momentum and gradient.

Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, arXiv 2302.06675;
official code https://github.com/google/automl/tree/master/lion (lion_pytorch.py), which this
matches (so does lucidrains' lion-pytorch, the test oracle).

    c  = b1 m + (1 - b1) g                    (interpolation used for the step only)
    W <- W - lr (sign(c) + wd W)  =  W (1 - lr wd) - lr sign(c)
    m <- b2 m + (1 - b2) g                    (b2 > b1: the state remembers longer than the step)

Defaults b1 = 0.9, b2 = 0.99, as in the paper. Every coordinate moves by exactly lr (plus the
decay), so Lion wants an lr 3-10x smaller than AdamW's and a wd 3-10x larger (same lr * wd).
One state tensor per parameter instead of AdamW's two.
"""
import torch
from torch import Tensor

from .base import closure_loss


@torch.no_grad()
def lion_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], lr: float,
                betas=(0.9, 0.99), weight_decay: float = 0.0) -> None:
    """One Lion step on every tensor of `params` in place (`exp_avgs`, the m's, updated in place)."""
    beta1, beta2 = betas
    if weight_decay:
        # the decay uses W before the step, as the paper's lr * (sign(c) + wd W)
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    c = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)  # m + (1 - b1)(g - m) = b1 m + (1 - b1) g
    torch._foreach_sign_(c)
    torch._foreach_add_(params, c, alpha=-lr)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)  # after the step: c used the old m


class Lion(torch.optim.Optimizer):
    """Lion on every parameter (any shape). Param groups may set lr, betas, weight_decay."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        if lr < 0 or not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"invalid lr {lr} or betas {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:  # torch.optim's convention: state is created at the first step
                if "exp_avg" not in self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if params:  # foreach ops take mixed devices and dtypes (a per-tensor slow path)
                lion_update(params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
                            group["lr"], group["betas"], group["weight_decay"])
        return loss
