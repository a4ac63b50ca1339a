"""R bias-free ReLU MLPs side by side, as stacked weights: the MLP of the Lipschitz-transformer code.

Newhouse, Hess, Cesista, Zahorodnii, Bernstein & Isola, "Training Transformers with Enforced Lipschitz
Constants" (2025), arXiv 2507.13338; official code github.com/Arongil/lipschitz-transformers
(modula/compound.py `MLP`, modula/atom.py `Linear`, modula/bond.py `ReLU`):

    f(x) = W_L relu(W_{L-1} ... relu(W_1 x))          no biases, x flattened

Official initialisation: the first layer is zero (zero_init=True in the example configs) and every other
W_l is NS6(G) sqrt(fan_out / fan_in) for a Gaussian G, i.e. (nearly) semi-orthogonal with RMS -> RMS norm 1.

relu is max(x, 0) written as torch.maximum, whose derivative at x = 0 is 1/2 like the official JAX
`jnp.maximum(0, x)` (torch.relu's is 0). With a zero first layer every pre-activation is exactly 0 at the
first step, and only that half-derivative lets any gradient through.

weights[l] has shape [R, fan_out, fan_in]; forward maps flat inputs x [B, in] (one batch for every run)
or [R, B, in] (a batch per run) to logits [R, B, out].
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels.newton_schulz_schedule import newton_schulz_schedule


def relu_half(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) with derivative 1/2 at 0 (JAX's convention for jnp.maximum)."""
    return torch.maximum(x, x.new_zeros(()))


class StackedMLP(nn.Module):
    def __init__(self, dims, runs: int, generator: torch.Generator | None = None, zero_first: bool = True,
                 device=None):
        super().__init__()
        self.dims = list(dims)
        weights = []
        for i, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            if i == 0 and zero_first:
                W = torch.zeros(runs, fan_out, fan_in, device=device)
            else:
                G = torch.randn(runs, fan_out, fan_in, generator=generator, device=device)
                W = newton_schulz_schedule(G) * (fan_out / fan_in) ** 0.5
            weights.append(nn.Parameter(W))
        self.weights = nn.ParameterList(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3) or x.size(-1) != self.dims[0]:
            raise ValueError(f"expected flat inputs [B, {self.dims[0]}] or [R, B, {self.dims[0]}], got {tuple(x.shape)}")
        h = x
        for i, W in enumerate(self.weights):
            if i:
                h = relu_half(h)
            h = torch.einsum("bi,roi->rbo", h, W) if h.ndim == 2 else h @ W.mT
        return h
