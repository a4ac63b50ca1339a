"""Exact Hessians of a small block of parameters (a classifier head), for a stack of models.

    H[..., j, :] = (H e_j)^T = d/dtheta (g . e_j),   g = dL/dtheta   (one Hessian-vector product per
                                                                      coordinate, batched in one call)

For a head of P coordinates this is P Hessian-vector products, done as one vmapped backward pass
(`is_grads_batched`), so it suits P up to a few thousand. Parameters may carry `stack_dims`
leading dimensions that index independent models (one per seed); the loss is then their summed
losses, whose Hessian is block-diagonal, and the probe e_j, repeated over the stack, returns row j
of every model's block at once: the result is [*stack, P, P].

For a linear head the Hessian factors through the logits, H = J^T B J, and `linear_head_hvp` /
`linear_head_hessian` compute it with matrix-matrix products over the samples (tested against
hessian_matrix): the fast path for wide heads, many samples and many probes.
"""
from __future__ import annotations

import torch

__all__ = ["hessian_matrix", "linear_head_hessian", "linear_head_hvp", "logit_hessian"]


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


# ---------------------------------------------------------------- a linear head, in closed form
# logits z = f W^T + b, loss L(z) a sum of per-sample terms: H = J^T B J with J = dz/d(W, b) = [f, 1]
# and B = d^2 L / dz^2 block-diagonal over samples. Every product below is a matrix-matrix product
# over the samples, so K probes cost about one pass over the features (autograd's batched
# Hessian-vector products, by contrast, read the features once per probe).

def logit_hessian(loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """B = d^2 loss / d logits^2 per sample, [..., n, out, out], with graph. The loss must be a sum
    (or mean) of per-sample terms, each depending on its own logits only."""
    (dz,) = torch.autograd.grad(loss.sum(), logits, create_graph=True)
    out = logits.shape[-1]
    eye = torch.eye(out, dtype=logits.dtype, device=logits.device)
    probes = eye.reshape(out, *[1] * (logits.ndim - 1), out).expand(out, *logits.shape)
    (rows,) = torch.autograd.grad(dz, logits, grad_outputs=probes, is_grads_batched=True, create_graph=True)
    return rows.movedim(0, -2)                                           # rows[j, ..., n, p] = B[..., n, j, p]


def linear_head_hvp(features: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor):
    """v -> H v for the head (weight [..., out, in], bias [..., out]) that made `logits` from
    `features` ([..., n, in]). v = [v_W [K, ..., out, in], v_b [K, ..., out]] carries K probes on a
    leading dimension; the result has the same shapes and keeps the graph (differentiable)."""
    B = logit_hessian(loss, logits)                                       # [..., n, o, p]

    def hvp(v):
        v_w, v_b = v[0].movedim(0, -3), v[1].movedim(0, -2)                # [..., K, o, i], [..., K, o]
        Jv = torch.einsum("...ni,...koi->...kno", features, v_w) + v_b.unsqueeze(-2)   # [..., K, n, p]
        u = (B.unsqueeze(-4) * Jv.unsqueeze(-2)).sum(-1)                  # B Jv per sample: [..., K, n, o]
        return [torch.einsum("...kno,...ni->...koi", u, features).movedim(-3, 0), u.sum(-2).movedim(-2, 0)]
    return hvp


def linear_head_hessian(features: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """The head's exact Hessian J^T B J, [..., P, P] over flat (weight row-major, then bias), as
    hessian_matrix orders them; with graph."""
    B = logit_hessian(loss, logits)
    *stack, n, o, _ = B.shape
    i = features.shape[-1]
    ww = torch.einsum("...nop,...ni,...nj->...oipj", B, features, features).reshape(*stack, o * i, o * i)
    wb = torch.einsum("...nop,...ni->...oip", B, features).reshape(*stack, o * i, o)
    bb = B.sum(-3)
    return torch.cat([torch.cat([ww, wb], -1), torch.cat([wb.mT, bb], -1)], -2)
