"""Batched, on-device image augmentations for self-supervised views of grey images [B, 1, H, W] in [0, 1].

    x1, x2 = augment_views(x, "multi", gen), augment_views(x, "multi", gen)

Two regimes, for testing whether a method copes with more augmentation types (AMCL, Wang et al.
ECCV 2024, arXiv 2310.05615, whose views use crop, blur, colour dropping, colour distortion and flip):
    "single"  random resized crop only (area scale in crop_scale, aspect 1, resized back);
    "multi"   the crop, then every one of these, each drawn independently per image:
              horizontal flip (p 0.5), rotation up to +-20 degrees (p 0.5), contrast x[0.6, 1.4] and
              brightness +-0.2 (p 0.8), 3x3 Gaussian blur (sigma 1, p 0.5), Gaussian noise (sd 0.1,
              p 0.5) and a 10x10 cutout (p 0.5).
Colour dropping and colour distortion have no grey-image counterpart beyond contrast and brightness.
Geometric steps share one affine resampling (bilinear, zeros outside); everything is drawn from
`generator` on the images' device, so a seed fixes the views.
"""
import math

import torch
import torch.nn.functional as F

__all__ = ["AUGMENT_REGIMES", "augment_views"]

AUGMENT_REGIMES = ("single", "multi")


def _u(n, lo, hi, gen, device):
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def _coin(n, p, gen, device):
    return torch.rand(n, generator=gen, device=device) < p


def augment_views(x: torch.Tensor, regime: str, generator: torch.Generator, crop_scale=(0.5, 1.0)) -> torch.Tensor:
    """One augmented view of every image of x [B, 1, H, W] (see the module docstring)."""
    if regime not in AUGMENT_REGIMES:
        raise ValueError(f"unknown regime {regime!r}; valid: {AUGMENT_REGIMES}")
    b, _, hgt, wid = x.shape
    dev, g = x.device, generator
    s = _u(b, *crop_scale, g, dev).sqrt()                   # side of the crop, relative (area = s^2)
    t = (_u(b, -1, 1, g, dev) * (1 - s), _u(b, -1, 1, g, dev) * (1 - s))   # the crop stays inside the image
    angle = torch.zeros(b, device=dev)
    flip = torch.ones(b, device=dev)
    if regime == "multi":
        angle = torch.where(_coin(b, 0.5, g, dev), _u(b, -20, 20, g, dev), angle) * math.pi / 180
        flip = torch.where(_coin(b, 0.5, g, dev), -flip, flip)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, t[0]], 1), torch.stack([sin * flip, cos, t[1]], 1)], 1)
    out = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    if regime == "single":
        return out
    per = lambda v: v.view(b, 1, 1, 1)
    mean = out.mean((1, 2, 3), keepdim=True)
    jitter = (out - mean) * per(_u(b, 0.6, 1.4, g, dev)) + mean + per(_u(b, -0.2, 0.2, g, dev))
    out = torch.where(per(_coin(b, 0.8, g, dev)), jitter, out)
    k = torch.exp(-torch.tensor([-1.0, 0.0, 1.0], device=dev) ** 2 / 2)
    k = (k[:, None] * k[None, :] / k.sum() ** 2).view(1, 1, 3, 3).to(out.dtype)
    out = torch.where(per(_coin(b, 0.5, g, dev)), F.conv2d(out, k, padding=1), out)
    noise = torch.randn(out.shape, generator=g, device=dev, dtype=out.dtype) * 0.1
    out = torch.where(per(_coin(b, 0.5, g, dev)), out + noise, out)
    cy = torch.randint(0, hgt, (b,), generator=g, device=dev).view(b, 1, 1, 1)
    cx = torch.randint(0, wid, (b,), generator=g, device=dev).view(b, 1, 1, 1)
    yy = torch.arange(hgt, device=dev).view(1, 1, hgt, 1)
    xx = torch.arange(wid, device=dev).view(1, 1, 1, wid)
    hole = (yy - cy >= -5) & (yy - cy < 5) & (xx - cx >= -5) & (xx - cx < 5) & per(_coin(b, 0.5, g, dev))
    return out.masked_fill(hole, 0.0)
