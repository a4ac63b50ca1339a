"""Projection heads for self-supervised learning: C independent copies of one MLP on a shared encoder.

Adaptive Multi-head Contrastive Learning (Wang, Koniusz, Gedeon, Zheng; ECCV 2024),
https://arxiv.org/abs/2310.05615: "the projection head is replicated C times ... the weights are
learned independently". depth=2 is SimCLR's head (Linear-ReLU-Linear); depth=3 with batch_norm=True
is the Barlow Twins / SimSiam head (Linear-BN-ReLU, twice, then Linear-BN without affine), as in the
official `amcl/models.py`.
"""
import torch
from torch import nn

__all__ = ["MultiHeadProjector", "projection_mlp"]


def projection_mlp(in_dim: int, hidden: int, out_dim: int, depth: int = 2, batch_norm: bool = False) -> nn.Sequential:
    """One projection head: (depth - 1) x [Linear, (BN), ReLU], then Linear (then BN without affine
    when batch_norm, as Barlow Twins)."""
    if depth < 2:
        raise ValueError(f"depth={depth}: a projection head has at least two linear layers")
    layers, width = [], in_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden)] + ([nn.BatchNorm1d(hidden)] if batch_norm else []) + [nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    if batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class MultiHeadProjector(nn.Module):
    """forward(h [B, in_dim]) -> z [B, C, out_dim]: C independently initialised and trained heads."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, heads: int = 3, depth: int = 2,
                 batch_norm: bool = False):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads={heads}: need at least one head")
        self.heads = nn.ModuleList(projection_mlp(in_dim, hidden, out_dim, depth, batch_norm) for _ in range(heads))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(h) for head in self.heads], dim=1)
