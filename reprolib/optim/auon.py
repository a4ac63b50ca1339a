"""AuON: Nesterov momentum, Frobenius-normalised, then shrunk by the RMS of its cosh; no Newton-Schulz.

Dipan Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates", arXiv 2509.24320
(v3/v4 retitled "... to Orthogonal Momentum Updates"); code https://github.com/ryyzn9/AuON
(package auon/optimizer.py, and the paper's training script Auon_Adam_train.py).

For a matrix W (m x n) with gradient G (equations of the paper, Sec. 3.1, and of the script):

    M <- beta M + (1 - beta) G,        U = (1 - beta) G + beta M        (Nesterov; beta = 0.95)
    X  = U / (||U||_F + 1e-7)
    r  = sqrt(mean_ij cosh(gamma X_ij)^2)                               (>= 1: cosh >= 1)
    D  = X / (r + 1e-8)                                                 (||D||_F <= 1)
    W <- W (1 - lr wd) - lr * sqrt(max(1, m / n)) * D

Everything after the momentum is elementwise or a reduction: O(mn), no matrix product. Spiky
updates (a few large X_ij) inflate r and shrink the whole step, the paper's "emergency brake";
for large dense matrices X_ij ~ 1/sqrt(mn), r ~ 1 + gamma^2/(2mn), and D ~ X.

Hybrid-AuON (Sec. 3.2, hybrid_ns_steps = 1): X = one quintic Newton-Schulz step of U (which
Frobenius-normalises U first, as Muon), then the same cosh scaling of that X.

Where the sources differ (this module follows the paper and the script):
  gamma      paper and script: none (gamma = 1); package: gamma = 1.5, the default there.
  D          package: U / r (r still computed on the normalised X), so its step scales with ||U||.
  shape      script: sqrt(max(1, m/n)); package: no shape factor.
  weight dec. package: decoupled, as here; script: none on the AuON group.
  hybrid     package HybridAuON: ns_steps = 5, r on the re-normalised NS output, D = NS(U) / r.
  precision  script: bf16; here float32 (the arithmetic is elementwise and cheap).
Defaults lr = 0.24 (script and package; the v1 paper text reports 0.055, the README 0.08) with
AdamW at 0.1 x that lr for embeddings, norms and the head (the script).
"""
import torch
from torch import Tensor

from ..kernels import NS5_COEFFICIENTS, newton_schulz
from .muon import Muon


def auon_update(grads, momentum_buffers, beta: float = 0.95, nesterov: bool = True, gamma: float = 1.0,
                hybrid_ns_steps: int = 0, eps: float = 1e-7, coefficients=NS5_COEFFICIENTS,
                ns_dtype: torch.dtype | None = None) -> Tensor:
    """The AuON direction D (before lr and shape scale); updates the momentum buffers in place.
    One tensor each, or equal-length lists of same-shape tensors (result stacked on a new dim 0)."""
    single = isinstance(grads, Tensor)
    grads, bufs = ([grads], [momentum_buffers]) if single else (list(grads), list(momentum_buffers))
    torch._foreach_lerp_(bufs, grads, 1 - beta)
    U = torch._foreach_lerp(grads, bufs, beta) if nesterov else bufs
    U = torch.stack(U).float()
    if hybrid_ns_steps:
        X = newton_schulz(U, steps=hybrid_ns_steps, coefficients=coefficients, eps=eps, dtype=ns_dtype).float()
    else:
        X = U / (torch.linalg.vector_norm(U, dim=(-2, -1), keepdim=True) + eps)
    r = torch.cosh(gamma * X).square().mean(dim=(-2, -1), keepdim=True).sqrt()
    D = X / (r + 1e-8)
    return D[0] if single else D


class AuON(Muon):
    """AuON (hybrid_ns_steps=0) or Hybrid-AuON (>= 1) for use_muon=True groups, AdamW for the rest.

    Same param groups, weight decay and lr_scale conventions as reprolib.optim.Muon ("original",
    sqrt(max(1, m/n)), matches the script).
    """

    def __init__(self, params, lr: float = 0.24, momentum: float = 0.95, gamma: float = 1.0,
                 hybrid_ns_steps: int = 0, **kwargs):
        kwargs.setdefault("lr_scale", "original")
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)
        for group in self.param_groups:
            group.setdefault("gamma", gamma)
            group.setdefault("hybrid_ns_steps", hybrid_ns_steps)

    def _directions(self, params, grads, group):
        return auon_update(grads, self._buffers(params, "momentum_buffer"), group["momentum"],
                           group["nesterov"], group["gamma"], group["hybrid_ns_steps"], group["eps"],
                           group["ns_coefficients"], group["ns_dtype"])
