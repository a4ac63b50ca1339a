"""NorMuon: Muon with neuron-wise (row-wise) normalisation of the orthogonalised update.

Li et al., "NorMuon: Making Muon more efficient and scalable", arXiv 2510.05491;
official code https://github.com/zichongli5/NorMuon (normuon.py), which this follows.

Muon's O = NS5(U) has a well-conditioned spectrum but uneven row norms: a few output neurons
take most of the update. NorMuon keeps a per-row second moment of O and divides it out:

    M <- beta1 M + (1 - beta1) G,        U = (1 - beta1) G + beta1 M      (Nesterov, as Muon)
    O  = NS5(U)
    v <- beta2 v + (1 - beta2) mean_j(O_ij^2)                  (one number per row i; beta2 = 0.95)
    O' = O / (sqrt(v) + 1e-10)
    O' <- O' * ||O||_F / (||O'||_F + 1e-10)                   (keep Muon's update norm)
    W <- W (1 - lr wd) - lr * sqrt(max(1, m / n)) * O'

Defaults lr = 0.02, beta1 = beta2 = 0.95, wd = 0, as in the official code. The normalisation is
computed in float32 on the bf16 NS output (the official code leaves it in bf16); the
difference is rounding.
"""
import torch
from torch import Tensor

from .muon import Muon, muon_update


def normuon_update(grads, momentum_buffers, second_momenta, beta: float = 0.95, beta2: float = 0.95,
                   nesterov: bool = True, ns_steps: int = 5, eps: float = 1e-7, **ns_kwargs) -> Tensor:
    """Row-normalised orthogonal direction (before lr and shape scale); updates the buffers.
    Takes one tensor each or lists of same-shape tensors (stacked result), like muon_update."""
    single = isinstance(grads, Tensor)
    O = muon_update(grads, momentum_buffers, beta, nesterov, ns_steps, eps=eps, **ns_kwargs).float()
    vs = [second_momenta] if single else list(second_momenta)
    v = vs[0] if single else torch.stack(vs)
    v.lerp_(O.square().mean(dim=-1, keepdim=True), 1 - beta2)
    if not single:
        torch._foreach_copy_(vs, list(v.unbind(0)))
    norm_O = O.norm(dim=(-2, -1), keepdim=True)
    O_hat = O / (v.sqrt() + 1e-10)
    return O_hat * (norm_O / (O_hat.norm(dim=(-2, -1), keepdim=True) + 1e-10))


class NorMuon(Muon):
    """NorMuon for groups with use_muon=True, AdamW for the rest (see reprolib.optim.Muon)."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, beta2: float = 0.95, **kwargs):
        kwargs.setdefault("lr_scale", "original")
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)
        for group in self.param_groups:
            group.setdefault("beta2", beta2)

    def _directions(self, params, grads, group):
        second = self._buffers(params, "second_momentum_buffer",
                               lambda p: torch.zeros_like(p[..., :1], dtype=torch.float32))
        return normuon_update(grads, self._buffers(params, "momentum_buffer"), second,
                              group["momentum"], group["beta2"], group["nesterov"], group["ns_steps"],
                              group["eps"], coefficients=group["ns_coefficients"], ns_dtype=group["ns_dtype"])
