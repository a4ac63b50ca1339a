"""A plain multilayer perceptron for classifiers and toy regressions."""
import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Module):
    """in_dim -> hidden[0] -> ... -> out_dim, flattening any input beyond the batch dimension."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {tuple(ACTIVATIONS)}")
        dims = [in_dim, *hidden, out_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(dims) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
