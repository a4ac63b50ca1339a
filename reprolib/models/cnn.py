"""A small CNN for 28x28 (Fashion-MNIST) or 8x8 (digits) images.

conv(c1) - ReLU - maxpool - conv(c2) - ReLU - maxpool - flatten - linear(hidden) - ReLU - linear(classes).
`first_layer` lets a notebook swap the first convolution (e.g. for TrAct's TrActConv2d);
`activation` swaps ReLU (e.g. "gelu"); norm="batch" puts a BatchNorm2d after each convolution.
"""
import torch
from torch import nn

from .mlp import ACTIVATIONS


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 10, widths=(32, 64), hidden: int = 128,
                 image_size: int = 28, first_layer: nn.Module | None = None, activation: str = "relu",
                 norm: str | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {tuple(ACTIVATIONS)}")
        if norm not in (None, "batch"):
            raise ValueError(f"unknown norm {norm!r}; valid: None, 'batch'")
        c1, c2 = widths
        self.conv1 = first_layer or nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        side = image_size // 4  # two 2x2 poolings
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for two 2x2 poolings")
        act = ACTIVATIONS[activation]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden), act(), nn.Linear(hidden, n_classes))
        self.pool = nn.MaxPool2d(2)
        self.act = act()
        self.norm1, self.norm2 = (nn.BatchNorm2d(c1), nn.BatchNorm2d(c2)) if norm == "batch" else (nn.Identity(), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.norm1(self.conv1(x))))
        x = self.pool(self.act(self.norm2(self.conv2(x))))
        return self.head(x)
