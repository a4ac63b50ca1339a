"""StackedSNMLP with its spectral-normalisation scales fixed at construction.

StackedSNMLP reads `torch.isfinite(sn_scale).any()` back to the host in every forward (two reads per
normalised layer); on a GPU each read waits for the queue to drain. This subclass computes which members
are normalised once, at construction, and otherwise runs exactly the same operations in the same order,
so its outputs, gradients and power-iteration buffers are the same numbers. The scales must not change
after construction (load_state_dict from a stack with the same scales, as a target copy does, is fine).
"""
from __future__ import annotations

import torch

from .stacked_sn_mlp import StackedSNMLP


class StackedSNMLPFixed(StackedSNMLP):
    def __init__(self, dims, generators, sn_scale=None, sn_layers=None, device=None):
        super().__init__(dims, generators, sn_scale=sn_scale, sn_layers=sn_layers, device=device)
        on = torch.isfinite(self.sn_scale)
        self._any_sn = bool(on.any())
        self.register_buffer("_sn_on", on, persistent=False)
        self.register_buffer("_sn_num", torch.where(on, self.sn_scale, 1.0), persistent=False)

    def effective_weight(self, l: int) -> torch.Tensor:
        """W_hat = c W / sigma for members with a finite scale c, W for the others; [R, out, in]."""
        W = self.weights[l]
        if l not in self.sn_layers or not self._any_sn:
            return W
        factor = self._sn_num / torch.where(self._sn_on, self.sigma(l), 1.0)
        return W * factor[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for l in range(len(self.weights)):
            if l in self.sn_layers and self.training and self._any_sn:
                self._power_step(l)
            W, b = self.effective_weight(l), self.biases[l]
            h = (torch.einsum("bi,roi->rbo", h, W) if h.ndim == 2 else h @ W.mT) + b[:, None, :]
            if l < len(self.weights) - 1:
                h = torch.relu(h)
        return h
