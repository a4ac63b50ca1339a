"""Rotated-image domains: one domain per rotation angle, as DomainBed's RotatedMNIST.

Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", arXiv 2007.01434 (RotatedMNIST:
domains 0, 15, 30, 45, 60, 75 degrees; each domain rotates its own disjoint share of the images,
bilinear, zero fill, about the image centre). Used for leave-one-domain-out evaluation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ROTATED_ANGLES = (0, 15, 30, 45, 60, 75)   # DomainBed's RotatedMNIST environments, degrees


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate images [n, c, h, w] counter-clockwise by `degrees` about their centre (bilinear, zeros
    outside). The sampling grid maps output pixel centres to input positions by the inverse rotation."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    # affine_grid maps output coordinates (x right, y down, in [-1, 1]) to input ones: the inverse of a
    # counter-clockwise rotation on screen (y down) is [[c, -s], [s, c]]
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotated_domains(images: torch.Tensor, classes: torch.Tensor, angles=ROTATED_ANGLES, n_per_domain: int = 2000,
                    generator: torch.Generator | None = None) -> list[dict]:
    """[{'x' float32 [n, 1, 28, 28] in [0, 1], 'y' int64 [n], 'angle'}] , one per angle, each from its own
    disjoint random share of `images` (uint8 [N, h, w]), as DomainBed deals MNIST out to its rotations."""
    if len(angles) * n_per_domain > len(images):
        raise ValueError(f"{len(angles)} domains x {n_per_domain} images need more than the {len(images)} given")
    perm = torch.randperm(len(images), generator=generator)
    out = []
    for k, a in enumerate(angles):
        idx = perm[k * n_per_domain:(k + 1) * n_per_domain]
        x = images[idx].float().div(255).unsqueeze(1)
        out.append({"x": rotate_images(x, a), "y": classes[idx].long(), "angle": a})
    return out
