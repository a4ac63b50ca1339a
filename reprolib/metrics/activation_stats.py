"""Per-layer statistics of a network's activations, recorded by forward hooks during training.

When do Convolutional Neural Networks Stop Learning? (Ahmad, Trahan, Islam, 2024),
https://arxiv.org/abs/2403.02473 ; official code github.com/PaperUnderReviewDeepLearning/Optimization.

The paper's "data variation" of layer l in epoch e, as its official code computes it (models.py
takes torch.std of each monitored block's output in every training forward pass; solver_cbs.py
averages those values over the epoch's iterations):

    sigma_l(b) = sqrt( sum_i (a_i - mean(a))^2 / (n - 1) )   a: layer l's output on mini-batch b,
                                                             all n entries (samples x channels x positions)
    v_l(e)     = (1 / |B_e|) sum_{b in B_e} sigma_l(b)       B_e: the training mini-batches of epoch e

    stats = LayerStats(model, {"block1": (model.pool, 0), "block2": (model.pool, 1)})
    ... train one epoch (model.train()) ...
    v = stats.epoch_means()      # {"block1": v_1(e), "block2": v_2(e)}; the sums restart at zero

A point is a module, or (module, k): the k-th call of a module that one forward pass calls more than
once (SmallCNN applies one ReLU and one max-pool module to both of its convolution blocks). Only
forward passes made in training mode are recorded, as the official code records the training
iterations and not the evaluations. The per-batch values stay on the device; epoch_means() is the
one host synchronisation per epoch.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["LayerStats", "batch_std"]


def batch_std(a: Tensor) -> Tensor:
    """sigma_l(b): the unbiased standard deviation of every entry of a layer's output, in float32 at least
    (the official get_std calls .float() first: bf16 activations are not summed in bf16)."""
    return a.detach().to(torch.promote_types(a.dtype, torch.float32)).std()


class LayerStats:
    """Forward hooks that average a statistic of chosen layer outputs over the training batches of an epoch."""

    def __init__(self, model: nn.Module, points: dict, stat: Callable[[Tensor], Tensor] = batch_std):
        if not points:
            raise ValueError("points is empty: name at least one module (or (module, call index)) to monitor")
        self.stat, self.model = stat, model
        self.points = {}
        for name, p in points.items():
            module, call = p if isinstance(p, tuple) else (p, 0)
            if not isinstance(module, nn.Module) or int(call) < 0:
                raise ValueError(f"point {name!r}: give a module or (module, call index >= 0), got {p!r}")
            self.points[name] = (module, int(call))
        self.names = list(self.points)
        self._calls: dict[int, int] = {}   # id(module) -> calls so far in the current forward pass
        self._sums: dict[str, Tensor] = {}
        self._counts = dict.fromkeys(self.names, 0)
        self._handles = [model.register_forward_pre_hook(self._new_forward)]
        for module in {id(m): m for m, _ in self.points.values()}.values():
            self._handles.append(module.register_forward_hook(self._hook))

    def _new_forward(self, module, args):
        self._calls.clear()

    def _hook(self, module, args, output):
        k = self._calls.get(id(module), 0)
        self._calls[id(module)] = k + 1
        if not self.model.training:
            return
        for name, (m, call) in self.points.items():
            if m is module and call == k:
                v = self.stat(output).to(torch.float64)   # summed in float64: hundreds of batches per epoch
                self._sums[name] = self._sums[name] + v if name in self._sums else v
                self._counts[name] += 1

    def epoch_means(self) -> dict[str, float]:
        """v_l(e) for every point over the batches recorded since the last call; then start afresh."""
        missing = [n for n in self.names if self._counts[n] == 0]
        if missing:
            raise RuntimeError(f"no training forward pass reached {missing} since the last epoch_means() "
                               "(model in eval mode, or a call index the forward pass never makes)")
        sums = torch.stack([self._sums[n] for n in self.names]).tolist()
        out = {n: s / self._counts[n] for n, s in zip(self.names, sums)}
        self._sums.clear()
        self._counts = dict.fromkeys(self.names, 0)
        return out

    def remove(self) -> None:
        """Detach every hook: the model runs as if it had never been monitored."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
