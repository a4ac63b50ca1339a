"""Still images to fit with 2-D Gaussian splats: scikit-learn's bundled photographs and a procedural
test card.

sample_image: the photographs scikit-learn ships for `sklearn.datasets.load_sample_image` ("china.jpg",
"flower.jpg", 427 x 640), read from the installed package with PIL (without importing sklearn, which
takes seconds), centre-cropped to a square and area-resized to size x size.
test_card: sharp edges (a checkerboard quadrant, a disc, thin strokes) over smooth colour gradients,
deterministic; edges need many small splats and gradients few large ones.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def sample_image(name: str = "china.jpg", size: int = 128) -> torch.Tensor:
    """[size, size, 3] float32 in [0, 1]."""
    import importlib.util
    from pathlib import Path

    from PIL import Image
    root = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0])
    with Image.open(root / "datasets" / "images" / name) as im:
        img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
    h, w, _ = img.shape
    side = min(h, w)
    img = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    x = rearrange(img, "h w c -> 1 c h w")
    return rearrange(F.interpolate(x, size=(size, size), mode="area"), "1 c h w -> h w c").contiguous()


def test_card(size: int = 128) -> torch.Tensor:
    """[size, size, 3] float32 in [0, 1]: gradients, a checkerboard quadrant, a disc and strokes."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * x * y], -1)
    checker = ((x * 8).floor() + (y * 8).floor()) % 2
    quad = (x < 0.5) & (y < 0.5)
    img[quad] = torch.stack([checker, checker, checker], -1)[quad] * 0.9 + 0.05
    disc = (x - 0.72).square() + (y - 0.3).square() < 0.15 ** 2
    img[disc] = torch.tensor([0.9, 0.2, 0.15])
    for k in range(4):   # thin sine strokes, about 1.5 px wide at 128 px
        curve = 0.6 + 0.08 * k + 0.03 * torch.sin(2 * math.pi * (3 + k) * x)
        stroke = ((y - curve).abs() < 0.006 * 128 / size + 0.004) & (x > 0.05) & (x < 0.95)
        img[stroke] = torch.tensor([0.05, 0.05, 0.1])
    return img.clamp(0, 1).contiguous()
