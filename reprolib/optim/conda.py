"""Conda: Adam in the singular basis of the momentum (column-normalised Adam).

Wang, Zhou, Dong, Li, Li, Zhou, Lao, Fang, Lin, "Conda: Column-Normalized Adam for Training Large
Language Models Faster", arXiv 2509.24218; official code https://github.com/jie040109/Conda
(conda_torch/conda.py and projector.py, proj_type 'std'), which this follows step for step.

For a matrix W (m x n) with gradient G, at the t-th step (t = 1, 2, ...):

    M <- b1 M + (1 - b1) G
    Q  = V^T of SVD(M) (n x n) if m >= n, U of SVD(M) (m x m) if m < n   (full, not low rank)
         refreshed at t = 1, 1 + T, 1 + 2T, ... (T = update_proj_gap), kept in between
    G~ = G Q^T, M~ = M Q^T  if m >= n;   G~ = Q^T G, M~ = Q^T M  if m < n
    v <- b2 v + (1 - b2) G~^2                    (lives in the projected basis; NOT rotated
                                                  when Q is refreshed, as in the official code)
    D  = scale * (M~ / (sqrt(v) + eps)) Q  if m >= n,   scale * Q (M~ / (sqrt(v) + eps))  if m < n
    W <- W - lr sqrt(1 - b2^t) / (1 - b1^t) D,   then   W <- W (1 - lr wd)   (decoupled, after)

Why: in the momentum's singular basis, the per-coordinate second moment rescales coordinates
aligned with M's singular directions: Adam's adaptivity, with a better-conditioned update than
Adam's. As in the code, the bias corrections sit in the step size, eps is added to the raw
sqrt(v) and a square matrix takes the right basis (summaries of the paper write
m^ / (sqrt(v^) + eps) and the left basis when m <= n). Tensors that are not projected (vectors;
the official "regular" group: embeddings, norms, lm_head) get the same Adam without Q and scale.
Extension: a stacked (..., m, n) tensor (MoE experts) is projected matrix by matrix, as in Muon.
The paper's LLaMA-60M setting: lr 0.01, betas (0.9, 0.99), scale 0.25, update_proj_gap 2000.
"""
import math

import torch
from torch import Tensor

from .base import closure_loss


def conda_basis(M: Tensor) -> Tensor:
    """Q: the momentum's right singular vectors V^T if m >= n, else its left ones U.
    The SVD runs in fp32 for every dtype (fp64 included), as the official code's."""
    U, _, Vh = torch.linalg.svd(M.float(), full_matrices=False)
    return (Vh if M.shape[-2] >= M.shape[-1] else U).to(M.dtype)


def to_basis(X: Tensor, Q: Tensor) -> Tensor:
    """X Q^T (= X V) for tall or square X, Q^T X (= U^T X) for wide; Q square, so nothing is lost."""
    return X @ Q.mT if X.shape[-2] >= X.shape[-1] else Q.mT @ X


def from_basis(X: Tensor, Q: Tensor) -> Tensor:
    """The inverse of to_basis (Q orthogonal)."""
    return X @ Q if X.shape[-2] >= X.shape[-1] else Q @ X


@torch.no_grad()
def conda_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: float,
                 betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, scale: float = 1.0,
                 basis: Tensor | None = None, update_proj_gap: int | None = 2000) -> Tensor | None:
    """One Conda step on `param` in place; returns the basis Q to pass to the next step.

    step: the number of earlier steps (0 at the first); the moments are updated in place.
    update_proj_gap=None: no projection (plain Adam of the official code, for non-matrices).
    """
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    G, M = grad, exp_avg
    if update_proj_gap is not None:
        if basis is None or step % update_proj_gap == 0:
            basis = conda_basis(exp_avg)  # of the momentum that already holds this step's gradient
        G, M = to_basis(grad, basis), to_basis(exp_avg, basis)
    exp_avg_sq.mul_(beta2).addcmul_(G, G, value=1 - beta2)
    D = M / exp_avg_sq.sqrt().add_(eps)
    if update_proj_gap is not None:
        D = from_basis(D, basis).mul_(scale)
    t = step + 1
    param.add_(D, alpha=-lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t))
    if weight_decay:
        param.mul_(1 - lr * weight_decay)  # after the step, as the official code
    return basis


class Conda(torch.optim.Optimizer):
    """Conda on the >= 2-D tensors of groups with use_conda=True (the default); Adam (the same
    rule without the projection) on vectors and on groups with use_conda=False, e.g. embeddings,
    norms and the head as in the official LLaMA runs."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, scale: float = 1.0, update_proj_gap: int = 2000):
        if lr < 0 or eps < 0 or update_proj_gap < 1 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid lr {lr}, betas {betas}, eps {eps} or update_proj_gap {update_proj_gap}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, scale=scale,
                        update_proj_gap=update_proj_gap, use_conda=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Conda does not support sparse gradients")
                state = self.state[p]
                if not state:  # v has p's shape: the basis Q is square (a full rotation)
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                gap = group["update_proj_gap"] if group["use_conda"] and p.ndim >= 2 else None
                basis = conda_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
                                     group["lr"], group["betas"], group["eps"], group["weight_decay"],
                                     group["scale"], state.get("basis"), gap)
                if basis is not None:
                    state["basis"] = basis
                state["step"] += 1  # per tensor, as the official code: a skipped grad skips its count
        return loss
