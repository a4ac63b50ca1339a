"""Exact Hessian matrices of a small block of parameters (a classifier head), for a stack of models.

    H[..., j, :] = (H e_j)^T = d/dtheta (g . e_j),   g = dL/dtheta   (one Hessian-vector product per
                                                                      coordinate, batched in one call)

For a head of P coordinates this is P Hessian-vector products, done as one vmapped backward pass
(`is_grads_batched`), so it suits P up to a few thousand. Parameters may carry `stack_dims`
leading dimensions that index independent models (one per seed); the loss is then their summed
losses, whose Hessian is block-diagonal, and the probe e_j, repeated over the stack, returns row j
of every model's block at once: the result is [*stack, P, P].
"""
from __future__ import annotations

import torch

__all__ = ["hessian_matrix"]


def hessian_matrix(loss: torch.Tensor, params, stack_dims: int = 0) -> torch.Tensor:
    """d^2 loss / d theta^2 over the params' per-model coordinates (flattened in order), [*stack, P, P].
    loss: a scalar, or one loss per model ([*stack], summed here). The loss's graph is kept for the caller."""
    params = list(params)
    grads = torch.autograd.grad(loss.sum(), params, create_graph=True)
    sizes = [p[(0,) * stack_dims].numel() for p in params]
    eye = torch.eye(sum(sizes), dtype=params[0].dtype, device=params[0].device)
    probes = [block.reshape(len(eye), *[1] * stack_dims, *p.shape[stack_dims:]).expand(len(eye), *p.shape)
              for block, p in zip(eye.split(sizes, dim=1), params)]
    rows = torch.autograd.grad(grads, params, grad_outputs=probes, is_grads_batched=True, retain_graph=True)
    H = torch.cat([r.reshape(len(eye), *p.shape[:stack_dims], -1) for r, p in zip(rows, params)], dim=-1)
    return H.movedim(0, -2)
