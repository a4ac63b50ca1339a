"""One optimizer step with a learning rate per member of a model stack (models.ModelStack).

Most torch optimizers update p <- p - lr * u, with u computed from the gradient and the optimizer's
state but not from lr (SGD with or without momentum, Adam, AdamW, RMSprop). Built with lr = 1 they
return u; scaling member r's part of it by rates[r] gives every member its own learning rate, and
rates[r] = 0 leaves member r exactly where it was (a member that has reached its target stops
there while the rest of the stack trains on). The optimizer's state still advances for every
member, so a frozen member must not be resumed with the same optimizer.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def member_step(optimizer: torch.optim.Optimizer, rates: torch.Tensor) -> None:
    """optimizer.step() on stacked parameters [R, ...] (built with lr=1), with member r's update
    multiplied by rates[r]: p_r <- p_r + rates[r] * (step_r), i.e. p_r - rates[r] * u_r."""
    if any(g["lr"] != 1.0 for g in optimizer.param_groups):
        raise ValueError("build the optimizer with lr=1.0: member_step applies each member's rate")
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if any(p.shape[0] != rates.shape[0] for p in params):
        raise ValueError(f"every parameter must be stacked along dim 0 with {rates.shape[0]} members")
    before = [p.clone() for p in params]
    optimizer.step()
    for p, p0 in zip(params, before):
        rate = rates.to(p.dtype).view(-1, *[1] * (p.dim() - 1))
        p.copy_(torch.addcmul(p0, rate, p - p0))   # p0 + rate * (p1 - p0) = p0 - rate * u
