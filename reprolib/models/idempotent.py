"""A classifier that also reads a label vector: the backbone of IDempotent Experience Replay (IDER).

Liu, Li, Gao, Li, Kong, Sun & Huang, "IDER: IDempotent Experience Replay for Reliable Continual
Learning" (ICLR 2026), arXiv 2603.00624; official code github.com/YutingLi0606/Idempotent-Continual-Learning
(backbone/ResNet18_id2.py, models/ider.py).

The network is f(x, y) -> logits, with y a vector of C class weights: f = f2(f1(x), y). The official
ResNet-18 splits after its second stage and adds a projection of y to that feature map,

    f2(z, y) = head( z + LeakyReLU(W_y y + b_y) )

Here the same split on an MLP: f1 = the first hidden layer, f2 = the rest. The "empty" label is the
uniform vector y_0 = 1/C (the official weightmask = 1.0 always selects it), and a model is idempotent
when feeding its own prediction back changes nothing: f(x, softmax f(x, y_0)) = f(x, y_0).
"""
from __future__ import annotations

import torch
from torch import nn


class IdempotentMLP(nn.Module):
    """in_dim -> hidden[0] (+ LeakyReLU(W_y y)) -> hidden[1] -> ... -> n_classes, ReLU between layers."""

    def __init__(self, in_dim: int, hidden, n_classes: int):
        super().__init__()
        hidden = list(hidden)
        self.n_classes = n_classes
        self.f1 = nn.Sequential(nn.Linear(in_dim, hidden[0]), nn.ReLU())
        self.y_proj = nn.Sequential(nn.Linear(n_classes, hidden[0]), nn.LeakyReLU())   # official y_hat_fc
        layers = []
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.head = nn.Sequential(*layers, nn.Linear(hidden[-1], n_classes))

    def empty_label(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """y_0 = 1/C for every class: the 'no label' input."""
        return like.new_full((n, self.n_classes), 1.0 / self.n_classes)

    def f2(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(z + self.y_proj(y))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits f(x, y); y=None feeds the empty label (inference)."""
        z = self.f1(x.flatten(1))
        return self.f2(z, self.empty_label(len(z), z) if y is None else y)
