"""SinkGD: stateless gradient descent on Sinkhorn-normalised (row- and column-balanced) gradients.

Scetbon, Ma, Gong & Meeds, "Gradient Multi-Normalization for Stateless and Scalable LLM Training",
arXiv 2502.06742 (NeurIPS 2025 as "Gradient Multi-Normalization for Efficient LLM Training").
No official code was published ("will be integrated into an open-source repo").

For a matrix W (m x n) with gradient G, Algorithm 3 (SR-Sinkhorn) then Algorithm 4 (SinkGD):

    X <- G
    repeat L times:
        X <- sqrt(n) Q(X)^{-1} X        Q(X) = diag(row l2 norms):    every row to norm sqrt(n)
        X <- sqrt(m) X R(X)^{-1}        R(X) = diag(column l2 norms): every column to norm sqrt(m)
    W <- W (1 - lr wd) - lr X           (no momentum, no state; decoupled wd optional, default 0)

Rows first, columns last, so after any L the columns are exact and the rows approximate
(L = 5: rows within ~1e-5 for Gaussian gradients, 5-10% for heavy-tailed ones; see the tests).
The fixed point has entries of RMS 1 (||X||_F = sqrt(mn)), like a sign or Adam update, so there
is no shape factor (lr_scale "none"). On squared entries it is Sinkhorn-Knopp scaling of X*X to
row sums n and column sums m, which converges when no entry is zero; so X depends on G only up
to rescaling its rows (exactly) and its columns (at the fixed point), including G -> 7G.

The paper's LLaMA setup, as reported alike by several reimplementations (the paper's own text
was not reachable from here): L = 5; embeddings, norms and the LM head on Adam at lr 0.02; the
matrices at 0.05 x that, hence lr = 1e-3 here. Non-matrix groups (use_muon=False) are updated by
AdamW, as in reprolib.optim.Muon.
"""
import torch
from torch import Tensor

from .muon import Muon


def sinkhorn_normalize(G: Tensor, iters: int = 5, eps: float = 1e-8) -> Tensor:
    """L alternating row/column l2 normalisations of G (shape (m, n) or (..., m, n)), in float32.
    Each matrix of a batch is normalised on its own; eps guards all-zero rows and columns."""
    m, n = G.shape[-2:]
    X = G.float()
    for _ in range(iters):
        X = X * (n ** 0.5 / torch.linalg.vector_norm(X, dim=-1, keepdim=True).clamp(min=eps))
        X = X * (m ** 0.5 / torch.linalg.vector_norm(X, dim=-2, keepdim=True).clamp(min=eps))
    return X


class SinkGD(Muon):
    """SinkGD for groups with use_muon=True (the default), AdamW for the rest.

    Keeps no state for the matrices: the direction is a function of the current gradient only.
    Muon's momentum arguments are accepted (the base class stores them) but unused.
    """

    def __init__(self, params, lr: float = 1e-3, iters: int = 5, weight_decay: float = 0.0,
                 lr_scale: str = "none", sinkhorn_eps: float = 1e-8, **kwargs):
        super().__init__(params, lr=lr, weight_decay=weight_decay, lr_scale=lr_scale, **kwargs)
        for group in self.param_groups:
            group.setdefault("iters", iters)
            group.setdefault("sinkhorn_eps", sinkhorn_eps)

    def _directions(self, params, grads, group):
        return sinkhorn_normalize(torch.stack(grads), group["iters"], group["sinkhorn_eps"])
