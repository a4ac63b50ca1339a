"""2-D Gaussian splats: an image as a sum of anisotropic Gaussians, with a dense differentiable renderer.

The 2-D analog of 3D Gaussian Splatting (Kerbl et al. 2023, arXiv 2308.04079) that the density-control
notebooks fit to one image. Gaussian k has a centre p_k, a covariance Sigma_k = R_k diag(s_k^2) R_k^T
(rotation angle, log-scales), an opacity o_k = sigmoid(a_k) and an RGB colour c_k = max(color_k, 0) (3DGS clamps its SH colour at 0
the same way; without it positive and negative splats cancel, and moving one breaks the image); with
G_k(x) = exp(-1/2 (x - p_k)^T Sigma_k^{-1} (x - p_k)) the image is additive,

    I(x) = sum_k sigma_k(x) c_k,    sigma_k(x) = o_k G_k(x).

Coordinates are normalised device coordinates ([-1, 1] across the image), as for 3DGS's screen-space
points, so gradient thresholds do not depend on the resolution. No occlusion (no alpha compositing):
a splat of half the opacity contributes exactly half the light.

The parameters live in a dict of leaf tensors with one row per Gaussian, and SplatAdam keeps Adam's
moments per row, so density control can drop and append rows (3DGS's `prune_points` and
`cat_tensors_to_optimizer`: appended rows start with zero moments).
"""
from __future__ import annotations

import math

import torch

FIELDS = ("xy", "log_scale", "angle", "opacity_logit", "color")


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel centres in NDC, [h * w, 2] as (x, y), row-major."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def inverse_covariance(log_scale: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Sigma^{-1} = R diag(s^-2) R^T, [K, 2, 2]."""
    c, s = torch.cos(angle), torch.sin(angle)
    r = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return r @ torch.diag_embed(torch.exp(-2 * log_scale)) @ r.transpose(-1, -2)


def gaussian_values(params: dict, pixels: torch.Tensor, conic: torch.Tensor | None = None):
    """G_k(x) [K, P], the offsets d = x - p_k [K, P, 2] and u = Sigma^{-1} d [K, P, 2]."""
    conic = inverse_covariance(params["log_scale"], params["angle"]) if conic is None else conic
    d = pixels[None, :, :] - params["xy"][:, None, :]
    u = torch.einsum("kij,kpj->kpi", conic, d)
    return torch.exp(-0.5 * (d * u).sum(-1)), d, u


def colors(params: dict) -> torch.Tensor:
    """c_k = max(color_k, 0), [K, 3]."""
    return params["color"].clamp_min(0)


def render(params: dict, pixels: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """I(x) = sum_k o_k G_k(x) c_k at `pixels` [P, 2] -> [P, 3]; dense over Gaussians, in chunks of them."""
    weights = torch.sigmoid(params["opacity_logit"])[:, None] * colors(params)   # o_k c_k, [K, 3]
    conic = inverse_covariance(params["log_scale"], params["angle"])
    out = pixels.new_zeros(pixels.shape[0], 3)
    for i in range(0, weights.shape[0], chunk):
        sl = slice(i, i + chunk)
        g, _, _ = gaussian_values({"xy": params["xy"][sl]}, pixels, conic[sl])
        out = out + g.T @ weights[sl]
    return out


def init_splats(target: torch.Tensor, n: int, generator: torch.Generator, opacity: float = 0.1) -> dict:
    """3DGS's initialisation on a 2-D image [H, W, 3]: n points uniform in the image (standing in for
    SfM points) coloured by the pixel under them, log-scale from the mean squared distance to the 3
    nearest neighbours, identity rotation, opacity 0.1 (as `create_from_pcd`)."""
    h, w, _ = target.shape
    xy = torch.rand(n, 2, generator=generator, device=target.device, dtype=target.dtype) * 2 - 1
    col = ((xy[:, 0] + 1) / 2 * w).long().clamp(0, w - 1)
    row = ((xy[:, 1] + 1) / 2 * h).long().clamp(0, h - 1)
    d2 = torch.cdist(xy, xy).square() + torch.eye(n, device=xy.device, dtype=xy.dtype) * 1e9
    knn = d2.topk(3, largest=False).values.mean(1).clamp_min(1e-7)
    log_scale = (0.5 * torch.log(knn))[:, None].repeat(1, 2)
    return {"xy": xy, "log_scale": log_scale, "angle": torch.zeros_like(xy[:, 0]),
            "opacity_logit": torch.full_like(xy[:, 0], math.log(opacity / (1 - opacity))),
            "color": target[row, col].clone()}


class SplatAdam:
    """Adam (Kingma & Ba 2015) over a dict of per-Gaussian leaf tensors, one lr per field, eps 1e-15 as
    in 3DGS. Rows can be kept (`keep`) or appended (`append`, zero moments) between steps."""

    def __init__(self, params: dict, lrs: dict, betas=(0.9, 0.999), eps: float = 1e-15):
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.lrs, self.betas, self.eps, self.t = dict(lrs), betas, eps, 0
        self.m = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.params.items()}

    def __len__(self):
        return self.params["xy"].shape[0]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for k, p in self.params.items():
            if p.grad is None:
                continue
            self.m[k].mul_(b1).add_(p.grad, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            p.sub_(self.lrs[k] * m_hat / (v_hat.sqrt() + self.eps))
            p.grad = None

    def _replace(self, fn) -> None:
        for store in (self.m, self.v):
            for k in store:
                store[k] = fn(k, store[k], True)
        self.params = {k: fn(k, p.detach(), False).requires_grad_(True) for k, p in self.params.items()}

    def keep(self, mask: torch.Tensor) -> None:
        """Keep the rows where mask is True (pruning and removing split parents)."""
        self._replace(lambda k, t, state: t[mask].clone())

    def append(self, new: dict) -> None:
        """Append rows (children, clones) with zero Adam moments."""
        self._replace(lambda k, t, state: torch.cat([t, torch.zeros_like(new[k]) if state else new[k].to(t)]))

    def detached(self) -> dict:
        return {k: p.detach() for k, p in self.params.items()}
