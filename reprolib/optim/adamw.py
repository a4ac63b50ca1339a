"""AdamW as a pure update: the auxiliary optimizer of the Muon family.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv 1711.05101.

    m <- b1 m + (1 - b1) g,     v <- b2 v + (1 - b2) g^2
    W <- W (1 - lr wd) - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The operation order is torch.optim.AdamW's (single-tensor path), so the two agree to rounding.
"""
import math

import torch
from torch import Tensor


@torch.no_grad()
def adamw_update(p: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: float,
                 betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One AdamW step on p in place; exp_avg and exp_avg_sq are updated in place."""
    beta1, beta2 = betas
    p.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
