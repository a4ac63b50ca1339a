"""Density control for Gaussian splats: 3DGS's adaptive density control (ADC) and SteepGS, and the
fitting loop that interleaves them with Adam, on the 2-D splats of `models.splat2d`.

ADC: Kerbl et al., "3D Gaussian Splatting for Real-Time Radiance Field Rendering", SIGGRAPH 2023,
https://arxiv.org/abs/2308.04079 (official `densify_and_clone` / `densify_and_split`).
SteepGS: Wang et al., "Steepest Descent Density Control for Compact 3D Gaussian Splatting", CVPR 2025,
https://arxiv.org/abs/2505.05587 (official `densify_and_split_steepest`).

Every `interval` iterations inside the densification window:
  ADC      grad-bar_k = mean over the views that saw Gaussian k of ||dL_view/dp_k||; if grad-bar_k >= tau,
           clone k when it is small (max scale <= percent_dense * extent), else split it into 2 children
           drawn from the parent (p + R xi, xi ~ N(0, diag(s^2))) with scales s / (0.8 * 2).
  SteepGS  select k when grad-bar_k >= tau (the code's "uncertain" filter) and lambda_min(S_k) < S_threshold
           (< 0); split it into 2 children at p +- ||xi_j|| v_min (the steepest split, paper Thm.: 2
           offspring suffice, displaced oppositely along v_min), scales s / 1.6 as ADC; small ones are
           cloned to p +- lr_xy v_min. Offspring opacity o / 2 (paper; the released code keeps o unless a
           flag is set: `halve_opacity=False`).
Both prune o < 0.005 afterwards.

Views. 3DGS's statistic averages per-view gradient norms, which stay large where views disagree even when
their mean vanishes. Here Adam trains on the whole image (one "view" per step would only add noise), and
every `stats_every` iterations the image's pixels are dealt at random into `n_views` equal "views"; each
view's position gradient dL_v/dp_k (L_v: the mean loss on that view) enters the statistics. Their mean is
the full-image gradient; their spread is where the pixels under a Gaussian pull its centre apart.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from ..metrics.splitting import position_gradients, psnr, smallest_eigen, splitting_matrices
from ..models.splat2d import SplatAdam, colors, gaussian_values, init_splats, inverse_covariance, pixel_grid, render

SPLIT_SCALE = 0.8 * 2          # children's scales are s / (0.8 N), N = 2 (3DGS `densify_and_split`)

# 3DGS's learning rates (arguments/__init__.py); colour through the SH DC term: c = C0 f + 0.5
C0 = 0.28209479177387814
LRS_3DGS = {"xy": 1.6e-4, "log_scale": 5e-3, "angle": 1e-3, "opacity_logit": 0.05, "color": 2.5e-3 * C0}
XY_LR_FINAL_RATIO = 0.01       # position lr decays exponentially to 1.6e-6 / 1.6e-4


def _halved(logit: torch.Tensor) -> torch.Tensor:
    o = torch.sigmoid(logit) / 2
    return torch.log(o / (1 - o))


def _max_scale(params: dict) -> torch.Tensor:
    return params["log_scale"].exp().max(1).values


def _rows(params: dict, mask: torch.Tensor, repeat: int = 1) -> dict:
    return {k: v[mask].repeat(repeat, *([1] * (v.dim() - 1))) for k, v in params.items()}


@dataclass
class ViewStats:
    """Per-Gaussian accumulators between densifications (3DGS `add_densification_stats`)."""
    norm_sum: torch.Tensor         # sum over views of ||dL_view/dp_k||
    grad_sum: torch.Tensor         # sum over views of dL_view/dp_k (its mean is the full-image gradient)
    views: torch.Tensor            # number of views that saw k

    @classmethod
    def zeros(cls, n: int, device=None) -> "ViewStats":
        return cls(torch.zeros(n, device=device), torch.zeros(n, 2, device=device), torch.zeros(n, device=device))

    def add(self, view_grads: torch.Tensor) -> None:
        """view_grads [V, K, 2]: one position gradient per view (every Gaussian is seen by every view)."""
        self.norm_sum += view_grads.norm(dim=-1).sum(0)
        self.grad_sum += view_grads.sum(0)
        self.views += view_grads.shape[0]

    def mean_norm(self) -> torch.Tensor:
        return torch.nan_to_num(self.norm_sum / self.views)

    def mean_grad(self) -> torch.Tensor:
        return torch.nan_to_num(self.grad_sum / self.views[:, None])


def densify_adc(opt: SplatAdam, stats: ViewStats, tau: float, generator: torch.Generator,
                percent_dense: float = 0.01, extent: float = 1.0) -> dict:
    """3DGS: clone small, split large Gaussians whose mean view-gradient norm is >= tau."""
    p = opt.detached()
    grads = stats.mean_norm()
    small = _max_scale(p) <= percent_dense * extent
    clone, split = (grads >= tau) & small, (grads >= tau) & ~small
    children = _rows(p, split, 2)
    xi = torch.randn(children["xy"].shape, generator=generator, device=p["xy"].device) * children["log_scale"].exp()
    c, s = torch.cos(children["angle"]), torch.sin(children["angle"])
    children["xy"] = children["xy"] + torch.stack([c * xi[:, 0] - s * xi[:, 1], s * xi[:, 0] + c * xi[:, 1]], -1)
    children["log_scale"] = children["log_scale"] - math.log(SPLIT_SCALE)
    opt.append(_rows(p, clone))
    opt.keep(torch.cat([~split, torch.ones(int(clone.sum()), dtype=torch.bool, device=split.device)]))
    opt.append(children)
    return dict(cloned=int(clone.sum()), split=int(split.sum()))


def offspring(params: dict, mask: torch.Tensor, directions: torch.Tensor, lengths: torch.Tensor,
              halve_opacity: bool = True, shrink: float = 1.0) -> dict:
    """Two offspring of each masked Gaussian at p +- lengths * directions (rows of the masked Gaussians:
    directions [n, 2] unit, lengths [2n] or [2n, 1], first n for the + child), opacity o / 2 when
    halve_opacity (the paper's w_j = 1/2), scales divided by `shrink`."""
    kids = _rows(params, mask, 2)
    n = int(mask.sum())
    sign = torch.cat([torch.ones(n, 1), -torch.ones(n, 1)]).to(kids["xy"])
    kids["xy"] = kids["xy"] + sign * lengths.reshape(2 * n, 1) * directions.repeat(2, 1)
    kids["log_scale"] = kids["log_scale"] - math.log(shrink)
    if halve_opacity:
        kids["opacity_logit"] = _halved(kids["opacity_logit"])
    return kids


def densify_steepest(opt: SplatAdam, stats: ViewStats, s_mats: torch.Tensor, tau: float, s_threshold: float,
                     generator: torch.Generator, lr_xy: float, percent_dense: float = 0.01, extent: float = 1.0,
                     halve_opacity: bool = True, uncertain_filter: bool = True) -> dict:
    """SteepGS: split Gaussians with lambda_min(S_k) < s_threshold (and, by default, grad-bar_k >= tau) into
    two offspring displaced oppositely along v_min."""
    if s_threshold >= 0:
        raise ValueError("s_threshold must be negative (a split helps only where S has a negative eigenvalue)")
    p = opt.detached()
    lam, v = smallest_eigen(s_mats)
    selected = lam < s_threshold
    if uncertain_filter:
        selected &= stats.mean_norm() >= tau
    small = _max_scale(p) <= percent_dense * extent
    clone, split = selected & small, selected & ~small
    # large: offspring at p +- ||xi_j|| v_min, xi_j ~ N(0, diag(s^2)) drawn per child (as the code), scales / 1.6
    scales = p["log_scale"][split].exp().repeat(2, 1)
    xi = torch.randn(scales.shape, generator=generator, device=scales.device) * scales
    children = offspring(p, split, v[split], xi.norm(dim=-1), halve_opacity, SPLIT_SCALE)
    # small: the two offspring at p +- lr_xy v_min (the code moves both to +lr_xy v_min)
    clones = offspring(p, clone, v[clone], torch.full((2 * int(clone.sum()),), lr_xy, device=scales.device),
                       halve_opacity)
    opt.keep(~selected)
    opt.append({k: torch.cat([clones[k], children[k]]) for k in p})
    return dict(cloned=int(clone.sum()), split=int(split.sum()))


def prune(opt: SplatAdam, min_opacity: float = 0.005) -> int:
    keep = torch.sigmoid(opt.params["opacity_logit"].detach()) >= min_opacity
    opt.keep(keep)
    return int((~keep).sum())


def full_image_grad(params: dict, pixels: torch.Tensor, target: torch.Tensor, loss: str = "l1"):
    """dL/dI on the whole image [P, 3] and L (autograd through the loss only)."""
    image = render({k: v.detach() for k, v in params.items()}, pixels).requires_grad_(True)
    value = image_loss(image, target, loss)
    return torch.autograd.grad(value, image)[0], float(value.detach())


def image_loss(image: torch.Tensor, target: torch.Tensor, loss: str = "l1") -> torch.Tensor:
    """Mean over pixels and channels: |I - T| (3DGS's L1 term) or (I - T)^2."""
    r = image - target
    return r.abs().mean() if loss == "l1" else r.square().mean()


@dataclass
class SplatFit:
    params: dict
    steps: list = field(default_factory=list)       # evaluation iterations
    psnr: list = field(default_factory=list)
    count: list = field(default_factory=list)
    densify_log: list = field(default_factory=list)  # one dict per densification
    final_psnr: float = float("nan")
    final_loss: float = float("nan")
    tau: float = float("nan")                        # the thresholds used (after `relative` fixed them)
    s_threshold: float = float("nan")


def fit_splats(target: torch.Tensor, method: str, steps: int, generator: torch.Generator, n_init: int = 200,
               tau: float = 2e-4, s_threshold: float = -1e-6, lr_scale: float = 1.0, loss: str = "l1",
               n_views: int = 4, stats_every: int = 10, interval: int = 100, densify_from: int = 100, densify_until: float = 0.5,
               max_gaussians: int = 10_000, halve_opacity: bool = True, uncertain_filter: bool = True,
               eval_every: int = 100, min_opacity: float = 0.005, snapshot_at: int | None = None,
               relative: bool = False) -> SplatFit:
    """Fit splats to `target` [H, W, 3] in [0, 1] with Adam and density control `method` in
    {'adc', 'steepest', 'none'}. The view statistics (module docstring) come from `n_views` random views every
    `stats_every` iterations. Densify every `interval` iterations after `densify_from` up to `densify_until` * steps, not
    beyond `max_gaussians`. snapshot_at: also return a copy of the optimizer (parameters and Adam moments) at that
    iteration, before it densifies, in `.params['snapshot']`.
    relative: tau and s_threshold are factors, fixed at the first densification step as tau x the upper
    quartile over Gaussians of the view-gradient statistic and s_threshold x the median |lambda_min(S_k)|
    (3DGS's thresholds carried over to this run's units; `.tau` and `.s_threshold` hold the values used)."""
    if method not in ("adc", "steepest", "none"):
        raise ValueError(f"unknown density control {method!r}; valid: 'adc', 'steepest', 'none'")
    h, w, _ = target.shape
    dev = target.device
    pixels = pixel_grid(h, w, dev, target.dtype)
    flat = target.reshape(-1, 3)
    opt = SplatAdam(init_splats(target, n_init, generator), {k: v * lr_scale for k, v in LRS_3DGS.items()})
    stats = ViewStats.zeros(len(opt), dev)
    fit = SplatFit(params={})
    cfg = dict(tau=tau, s_threshold=s_threshold, halve_opacity=halve_opacity, uncertain_filter=uncertain_filter)
    until = int(densify_until * steps)
    for it in range(1, steps + 1):
        # position lr: exponential decay 1.6e-4 -> 1.6e-6 over the run (3DGS `get_expon_lr_func`)
        t = (it - 1) / max(1, steps - 1)
        lr_xy = LRS_3DGS["xy"] * lr_scale * XY_LR_FINAL_RATIO ** t
        opt.lrs["xy"] = lr_xy
        image = render(opt.params, pixels)
        image.retain_grad()
        image_loss(image, flat, loss).backward()
        if it <= until and it % stats_every == 0:
            views = torch.randperm(h * w, generator=generator, device=dev).chunk(n_views)
            stats.add(position_gradients(opt.params, pixels, image.grad, views))
        opt.step()
        if snapshot_at == it:
            fit.params["snapshot"] = dict(opt=copy.deepcopy(opt), lr_xy=lr_xy)
        if densify_from < it <= until and it % interval == 0:
            stats = _densify_step(opt, stats, fit, cfg, method, generator, pixels, flat, loss, it, lr_xy, relative,
                                    max_gaussians, min_opacity, dev)
        if it % eval_every == 0 or it == steps:
            with torch.no_grad():
                fit.steps.append(it)
                fit.psnr.append(psnr(render(opt.params, pixels), flat))
                fit.count.append(len(opt))
    fit.tau, fit.s_threshold = cfg["tau"], cfg["s_threshold"]
    with torch.no_grad():
        full = render(opt.params, pixels)
        fit.final_psnr, fit.final_loss = psnr(full, flat), float(image_loss(full, flat, loss))
    fit.params.update(opt.detached())
    return fit


def split_then_train(opt: SplatAdam, target: torch.Tensor, mask: torch.Tensor, directions: torch.Tensor,
                     lengths: torch.Tensor, steps: int, lr_xy: float, loss: str = "l1") -> tuple[float, float]:
    """From a copy of `opt`: split the masked Gaussians into two half-opacity offspring at p +- lengths *
    directions (covariance kept: the split the splitting theorem describes), then `steps` Adam steps on
    the whole image. Returns (loss right after the split, loss after the steps)."""
    opt = copy.deepcopy(opt)
    h, w, _ = target.shape
    pixels, flat = pixel_grid(h, w, target.device, target.dtype), target.reshape(-1, 3)
    kids = offspring(opt.detached(), mask, directions, lengths)
    opt.keep(~mask)
    opt.append(kids)
    opt.lrs["xy"] = lr_xy
    with torch.no_grad():
        first = float(image_loss(render(opt.params, pixels), flat, loss))
    for _ in range(steps):
        image_loss(render(opt.params, pixels), flat, loss).backward()
        opt.step()
    with torch.no_grad():
        return first, float(image_loss(render(opt.params, pixels), flat, loss))


def _member_opt(opt: SplatAdam, rows: slice) -> SplatAdam:
    """A SplatAdam over the rows `rows` of a stacked one: parameters, moments, lrs and step count."""
    sub = SplatAdam.__new__(SplatAdam)
    sub.lrs, sub.betas, sub.eps, sub.t = dict(opt.lrs), opt.betas, opt.eps, opt.t
    sub.params = {k: p.detach()[rows].clone().requires_grad_(True) for k, p in opt.params.items()}
    sub.m = {k: t[rows].clone() for k, t in opt.m.items()}
    sub.v = {k: t[rows].clone() for k, t in opt.v.items()}
    return sub


def _stacked_opt(subs: list) -> SplatAdam:
    """The inverse of `_member_opt`: one SplatAdam whose rows are the members' rows in order."""
    opt = SplatAdam.__new__(SplatAdam)
    first = subs[0]
    opt.lrs, opt.betas, opt.eps, opt.t = dict(first.lrs), first.betas, first.eps, first.t
    opt.params = {k: torch.cat([s.params[k].detach() for s in subs]).requires_grad_(True) for k in first.params}
    opt.m = {k: torch.cat([s.m[k] for s in subs]) for k in first.m}
    opt.v = {k: torch.cat([s.v[k] for s in subs]) for k in first.v}
    return opt


def _render_members(params: dict, pixels: torch.Tensor, sizes: list, chunk: int = 4096) -> list:
    """`render` of each member of stacked parameters (members' rows consecutive, `sizes` rows each): the
    Gaussians' values in one pass over all rows, then each member's image from its own rows in the same
    chunks and matrix products as `render` of that member alone."""
    weights = torch.sigmoid(params["opacity_logit"])[:, None] * colors(params)
    conic = inverse_covariance(params["log_scale"], params["angle"])
    g, _, _ = gaussian_values({"xy": params["xy"]}, pixels, conic)
    images = []
    for gm, wm in zip(g.split(sizes), weights.split(sizes)):
        out = pixels.new_zeros(pixels.shape[0], 3)
        for i in range(0, wm.shape[0], chunk):
            out = out + gm[i:i + chunk].T @ wm[i:i + chunk]
        images.append(out)
    return images


def fit_splats_stack(targets: list, methods: list, steps: int, generators: list, member_kw: list | None = None,
                     n_init: int = 200, tau: float = 2e-4, s_threshold: float = -1e-6, lr_scale: float = 1.0,
                     loss: str = "l1", n_views: int = 4, stats_every: int = 10, interval: int = 100,
                     densify_from: int = 100, densify_until: float = 0.5, max_gaussians: int = 10_000,
                     halve_opacity: bool = True, uncertain_filter: bool = True, eval_every: int = 100,
                     min_opacity: float = 0.005, snapshot_at: int | None = None, relative: bool = False) -> list:
    """`fit_splats` for several fits at once (one per target/method/generator; `member_kw[i]` overrides tau,
    s_threshold, halve_opacity, uncertain_filter or snapshot_at for fit i), all with the same lr_scale and
    schedule. The fits' Gaussians are stacked as rows of one parameter set, so every Adam iteration renders,
    differentiates and updates all fits with one set of kernels; each fit's image, loss, view statistics,
    random draws, densification, pruning, evaluations and snapshot are its own, in the same order and with
    the same operations as `fit_splats` (on the CPU the results are identical; on a GPU sums over pixels
    may be ordered differently). Returns one SplatFit per fit."""
    n = len(targets)
    member_kw = [dict(m) for m in (member_kw or [{}] * n)]
    allowed = {"tau", "s_threshold", "halve_opacity", "uncertain_filter", "snapshot_at"}
    for kw in member_kw:
        if set(kw) - allowed:
            raise ValueError(f"member_kw may set only {sorted(allowed)}, got {sorted(kw)}")
    for m in methods:
        if m not in ("adc", "steepest", "none"):
            raise ValueError(f"unknown density control {m!r}; valid: 'adc', 'steepest', 'none'")
    if len({tuple(t.shape) for t in targets}) != 1 or not (len(methods) == len(generators) == len(member_kw) == n):
        raise ValueError("one method, generator (and member_kw) per target, all targets of one shape")
    cfg = [dict(dict(tau=tau, s_threshold=s_threshold, halve_opacity=halve_opacity, uncertain_filter=uncertain_filter,
                     snapshot_at=snapshot_at), **kw) for kw in member_kw]
    h, w, _ = targets[0].shape
    dev = targets[0].device
    pixels = pixel_grid(h, w, dev, targets[0].dtype)
    flats = [t.reshape(-1, 3) for t in targets]
    lrs = {k: v * lr_scale for k, v in LRS_3DGS.items()}
    opt = _stacked_opt([SplatAdam(init_splats(t, n_init, g), lrs) for t, g in zip(targets, generators)])
    sizes = [n_init] * n
    stats = [ViewStats.zeros(k, dev) for k in sizes]
    fits = [SplatFit(params={}) for _ in range(n)]
    until = int(densify_until * steps)
    for it in range(1, steps + 1):
        t = (it - 1) / max(1, steps - 1)
        lr_xy = LRS_3DGS["xy"] * lr_scale * XY_LR_FINAL_RATIO ** t
        opt.lrs["xy"] = lr_xy
        images = _render_members(opt.params, pixels, sizes)
        gather = it <= until and it % stats_every == 0
        if gather:
            for image in images:
                image.retain_grad()
        sum(image_loss(image, flat, loss) for image, flat in zip(images, flats)).backward()
        if gather:
            rows = opt.params
            for i, off in enumerate(_offsets(sizes)):
                views = torch.randperm(h * w, generator=generators[i], device=dev).chunk(n_views)
                member = {k: p[off:off + sizes[i]] for k, p in rows.items()}
                stats[i].add(position_gradients(member, pixels, images[i].grad, views))
        opt.step()
        densify = densify_from < it <= until and it % interval == 0
        snap = any(c["snapshot_at"] == it for c in cfg)
        if densify or snap:
            subs = [_member_opt(opt, slice(off, off + k)) for off, k in zip(_offsets(sizes), sizes)]
            for i, sub in enumerate(subs):
                if cfg[i]["snapshot_at"] == it:
                    fits[i].params["snapshot"] = dict(opt=copy.deepcopy(sub), lr_xy=lr_xy)
                if densify:
                    stats[i] = _densify_step(sub, stats[i], fits[i], cfg[i], methods[i], generators[i], pixels,
                                               flats[i], loss, it, lr_xy, relative, max_gaussians, min_opacity, dev)
            if densify:
                opt, sizes = _stacked_opt(subs), [len(s) for s in subs]
        if it % eval_every == 0 or it == steps:
            with torch.no_grad():
                for i, image in enumerate(_render_members(opt.params, pixels, sizes)):
                    fits[i].steps.append(it)
                    fits[i].psnr.append(psnr(image, flats[i]))
                    fits[i].count.append(sizes[i])
    with torch.no_grad():
        finals = _render_members(opt.params, pixels, sizes)
    for i, off in enumerate(_offsets(sizes)):
        f = fits[i]
        f.tau, f.s_threshold = cfg[i]["tau"], cfg[i]["s_threshold"]
        f.final_psnr, f.final_loss = psnr(finals[i], flats[i]), float(image_loss(finals[i], flats[i], loss))
        f.params.update({k: p.detach()[off:off + sizes[i]] for k, p in opt.params.items()})
    return fits


def _offsets(sizes: list) -> list:
    return [sum(sizes[:i]) for i in range(len(sizes))]


def _densify_step(opt, stats, fit, cfg, method, generator, pixels, flat, loss, it, lr_xy, relative, max_gaussians,
                    min_opacity, dev):
    """One densification step of a fit (of `fit_splats`, or one member of `fit_splats_stack`): updates cfg's
    thresholds at the first step when `relative`, logs the step in fit.densify_log, returns fresh statistics.
    The code's min_grad : tau = 1 : 2 sets the stationarity test."""
    dl_di, _ = full_image_grad(opt.params, pixels, flat, loss)
    s_mats = splitting_matrices(opt.params, pixels, dl_di)
    lam, _ = smallest_eigen(s_mats)
    n_before = len(opt)
    entry = dict(it=it, n=n_before, frac_negative=float((lam < 0).float().mean()),
                 grad_median=float(stats.mean_norm().median()),
                 grad_upper_quartile=float(stats.mean_norm().quantile(0.75)), lam_abs_median=float(lam.abs().median()))
    if relative and not fit.densify_log:
        cfg["tau"], cfg["s_threshold"] = cfg["tau"] * entry["grad_upper_quartile"], cfg["s_threshold"] * entry["lam_abs_median"]
    tau, s_threshold = cfg["tau"], cfg["s_threshold"]
    stationary = stats.mean_grad().norm(dim=-1) <= tau / 2
    entry["frac_saddle"] = float(((lam < 0) & stationary & (stats.views > 0)).float().mean())
    if method != "none" and n_before < max_gaussians:
        if method == "adc":
            entry.update(densify_adc(opt, stats, tau, generator))
        elif method == "steepest":
            entry.update(densify_steepest(opt, stats, s_mats, tau, s_threshold, generator, lr_xy,
                                          halve_opacity=cfg["halve_opacity"], uncertain_filter=cfg["uncertain_filter"]))
    entry["pruned"] = prune(opt, min_opacity) if method != "none" else 0
    fit.densify_log.append(entry)
    return ViewStats.zeros(len(opt), dev)
