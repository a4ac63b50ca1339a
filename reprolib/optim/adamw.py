"""AdamW as a pure update: the auxiliary optimizer of the Muon family.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv 1711.05101.

    m <- b1 m + (1 - b1) g,     v <- b2 v + (1 - b2) g^2
    W <- W (1 - lr wd) - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The operation order is torch.optim.AdamW's, so the two agree to rounding. It works on lists of
tensors with torch._foreach_* kernels: one launch per operation for a whole param group.
"""
import math

import torch
from torch import Tensor


@torch.no_grad()
def adamw_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                 step: int, lr: float, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One AdamW step on every tensor of `params` in place (the moment lists are updated in place)."""
    beta1, beta2 = betas
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, math.sqrt(1 - beta2 ** step))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr / (1 - beta1 ** step))
