"""R MLPs with biases side by side (stacked weights), each with its own spectral-normalisation scale.

Spectral normalisation (Miyato et al., ICLR 2018, arXiv 1802.05957) as `torch.nn.utils.parametrizations.
spectral_norm` computes it, with a scale c per member (Zheng et al., "Is Model Ensemble Necessary?
Model-based RL via a Single Model with Lipschitz Regularized Value Function", ICLR 2023, arXiv 2302.01244,
sweep c; c = inf leaves the layer plain):

    training forward:  u <- normalize(W v),  v <- normalize(W^T u)     (one power-iteration step, no grad)
                       sigma = u^T W v                                  (grad flows through W)
                       W_hat = c W / sigma
    eval forward:      the stored u, v; no step

The buffers start as torch's do: normalised Gaussians refined by 15 power-iteration steps. ModelStack
cannot hold torch's parametrization (its buffers are updated in place inside the forward, which vmap
forbids), hence this stack. Layers draw from nn.Linear's default distribution (uniform on
+-1/sqrt(fan_in) for weights and biases), member r from generators[r], so members with the same seed start equal.

forward(x): x [R, B, in] (a batch per member) or [B, in] (shared) -> [R, B, out]; ReLU between layers;
spectral normalisation on the layers listed in `sn_layers` (default: every layer but the output layer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StackedSNMLP(nn.Module):
    def __init__(self, dims, generators: list[torch.Generator], sn_scale=None, sn_layers=None, device=None):
        super().__init__()
        self.dims, R = list(dims), len(generators)
        n_layers = len(self.dims) - 1
        self.sn_layers = tuple(range(n_layers - 1)) if sn_layers is None else tuple(sn_layers)
        scale = torch.full((R,), math.inf) if sn_scale is None else torch.as_tensor(sn_scale, dtype=torch.float32)
        if scale.shape != (R,):
            raise ValueError(f"sn_scale needs one value per member ({R}), got shape {tuple(scale.shape)}")
        self.register_buffer("sn_scale", scale.to(device))
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for l, (fi, fo) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            bound = 1 / math.sqrt(fi)   # nn.Linear's default: kaiming_uniform(a=sqrt(5)) and the same bound for the bias
            W = torch.stack([(2 * torch.rand(fo, fi, generator=g) - 1) * bound for g in generators])
            b = torch.stack([(2 * torch.rand(fo, generator=g) - 1) * bound for g in generators])
            self.weights.append(nn.Parameter(W.to(device)))
            self.biases.append(nn.Parameter(b.to(device)))
            if l in self.sn_layers:
                u = F.normalize(torch.stack([torch.randn(fo, generator=g) for g in generators]), dim=-1)
                v = F.normalize(torch.stack([torch.randn(fi, generator=g) for g in generators]), dim=-1)
                self.register_buffer(f"u{l}", u.to(device))
                self.register_buffer(f"v{l}", v.to(device))
                self._power_step(l, 15)

    @torch.no_grad()
    def _power_step(self, l: int, n: int = 1) -> None:
        W, u, v = self.weights[l], getattr(self, f"u{l}"), getattr(self, f"v{l}")
        for _ in range(n):
            u.copy_(F.normalize(torch.einsum("roi,ri->ro", W, v), dim=-1, eps=1e-12))
            v.copy_(F.normalize(torch.einsum("roi,ro->ri", W, u), dim=-1, eps=1e-12))

    def sigma(self, l: int) -> torch.Tensor:
        """The power-iteration estimate u^T W v of each member's top singular value, [R]."""
        u, v = getattr(self, f"u{l}").clone(), getattr(self, f"v{l}").clone()   # later steps update the buffers in place
        return torch.einsum("ro,roi,ri->r", u, self.weights[l], v)

    def effective_weight(self, l: int) -> torch.Tensor:
        """W_hat = c W / sigma for members with a finite scale c, W for the others; [R, out, in]."""
        W = self.weights[l]
        if l not in self.sn_layers:
            return W
        on = torch.isfinite(self.sn_scale)
        if not on.any():
            return W
        # a plain member divides 1 by 1: no inf / sigma whose zero gradient would still multiply to NaN
        factor = torch.where(on, self.sn_scale, 1.0) / torch.where(on, self.sigma(l), 1.0)
        return W * factor[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for l in range(len(self.weights)):
            if l in self.sn_layers and self.training and torch.isfinite(self.sn_scale).any():
                self._power_step(l)
            W, b = self.effective_weight(l), self.biases[l]
            h = (torch.einsum("bi,roi->rbo", h, W) if h.ndim == 2 else h @ W.mT) + b[:, None, :]
            if l < len(self.weights) - 1:
                h = torch.relu(h)
        return h
