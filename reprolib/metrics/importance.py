"""Weight-importance scores for unstructured pruning: magnitude, Wanda, second-order Taylor, and D-Pruner's
dual importance.

Each function returns {name: score tensor of the weight's shape}; a higher score means keep. Masks are made
from scores by `layers.pruning.row_masks`.

Wanda (Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language Models",
arXiv 2306.11695): S_ij = |W_ij| * ||X_j||_2, with X_j the j-th input feature over all calibration tokens.

Taylor importance (second-order Taylor expansion of the loss for removing one weight, delta_m = -w_m, the
Hessian's diagonal replaced by the empirical Fisher; LeCun et al.'s OBD with a gradient term, Molchanov
et al. 2019):

    I_m = | -g_m w_m + 1/2 F_mm w_m^2 |,   g = mean over groups of the group gradient,
                                           F_mm = mean over groups of (group gradient_m)^2

D-Pruner (Zhang, Liu, Zhao, Cheng, Bao, Zhang, Mitra, Chen, "Pruning as a Domain-specific LLM Extractor",
NAACL 2024 Findings, arXiv 2405.06275; its repository withholds the code). Our reconstruction from the
paper's abstract and summaries, not from its equations:
  1. general importance G = Taylor importance on an open-domain calibration set;
  2. the refined loss L'(theta) = L_domain(theta) + lambda * sum_m Ghat_m (theta_m - theta0_m)^2,
     Ghat = G / mean(G) (an EWC-like penalty that holds weights important for general text in place);
  3. the dual importance S_m = mean over T steps of | -g'_m w_m + 1/2 (g'_m)^2 w_m^2 |, with g' = grad L'
     on the t-th group of domain calibration data at the current weights theta_t, and theta_{t+1} from a
     proximal SGD step on L' (lr eta; the penalty's part solved exactly, so that a large lambda * Ghat
     cannot make the step unstable):
         theta_{t+1} = (theta_t - eta * grad L_domain(theta_t) + 2 eta lambda Ghat theta0) / (1 + 2 eta lambda Ghat)
     The penalty's gradient is zero at theta0, so without steps S would be domain-only Taylor importance.
"""
from __future__ import annotations

import torch


def magnitude_scores(weights: dict) -> dict:
    """|W| for every named weight."""
    return {n: w.detach().abs() for n, w in weights.items()}


def wanda_scores(weights: dict, grams: dict) -> dict:
    """|W_ij| * ||X_j||_2, with ||X_j||_2^2 the diagonal of the layer's input Gram matrix X^T X."""
    return {n: w.detach().abs() * grams[n].diagonal().clamp_min(0).sqrt().to(w.dtype)[None, :]
            for n, w in weights.items()}


def group_gradients(model, params: dict, groups, loss_fn):
    """Yield {name: grad} of loss_fn(model, group) for each calibration group (gradients of `params` only)."""
    names = list(params)
    for group in groups:
        with torch.enable_grad():   # callers may score inside torch.no_grad()
            loss = loss_fn(model, group)
            grads = torch.autograd.grad(loss, [params[n] for n in names])
        yield dict(zip(names, grads))


def taylor_from_gradients(weights: dict, grads: list) -> dict:
    """| -g w + 1/2 F w^2 | with g the mean of the groups' gradients and F the mean of their squares."""
    out = {}
    for n, w in weights.items():
        g = torch.stack([gr[n].float() for gr in grads])
        w = w.detach().float()
        out[n] = (-g.mean(0) * w + 0.5 * g.pow(2).mean(0) * w.pow(2)).abs()
    return out


def taylor_importance(model, params: dict, groups, loss_fn) -> dict:
    """Second-order Taylor importance of each weight in `params` on calibration `groups` (module docstring)."""
    return taylor_from_gradients(params, list(group_gradients(model, params, groups, loss_fn)))


def dual_importance(model, params: dict, general: dict, groups, loss_fn, lam: float, lr: float) -> dict:
    """D-Pruner's dual importance (module docstring, steps 2-3): one proximal SGD step on the refined loss per
    domain calibration group (T = len(groups)). The weights in `params` are restored to theta0 afterwards."""
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    ghat = {n: g / torch.cat([v.flatten() for v in general.values()]).mean() for n, g in general.items()}
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    steps = 0
    try:
        for grad in group_gradients(model, params, groups, loss_fn):
            with torch.no_grad():
                for n, p in params.items():
                    w = p.float()
                    g_ref = grad[n].float() + 2 * lam * ghat[n] * (w - theta0[n])       # grad of L' at theta_t
                    scores[n] += (-g_ref * w + 0.5 * g_ref.pow(2) * w.pow(2)).abs()
                    shrink = 2 * lr * lam * ghat[n]
                    p.copy_((w - lr * grad[n].float() + shrink * theta0[n]) / (1 + shrink))
            steps += 1
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(theta0[n])
    return {n: s / max(steps, 1) for n, s in scores.items()}
