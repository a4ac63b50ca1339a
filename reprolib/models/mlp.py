"""A plain multilayer perceptron for classifiers and toy regressions; norm="layer" puts a LayerNorm
between each hidden linear layer and its activation (linear -> LayerNorm -> activation)."""
import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Module):
    """in_dim -> hidden[0] -> ... -> out_dim, flattening any input beyond the batch dimension."""

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int,
                 activation: str = "relu", bias: bool = True, norm: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {tuple(ACTIVATIONS)}")
        if norm not in (None, "layer"):
            raise ValueError(f"unknown norm {norm!r}; valid: None, 'layer'")
        dims = [in_dim, *hidden, out_dim]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(dims) - 2:
                if norm == "layer":
                    layers.append(nn.LayerNorm(b))
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
