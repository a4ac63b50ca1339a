"""Norm-constrained training: an optimizer step, decoupled weight decay, then a spectral projection.

Newhouse, Hess, Cesista, Zahorodnii, Bernstein & Isola, "Training Transformers with Enforced Lipschitz
Constants" (2025), arXiv 2507.13338; official code github.com/Arongil/lipschitz-transformers
(optimizers.py, trainer.py, modula/abstract.py `Atom.decay_step_project`, modula/atom.py
`Linear.project`), which this follows for every weight matrix W (fan_out x fan_in):

    direction   Muon:  M <- b1 M + (1 - b1) G                     (momentum as an EMA, no Nesterov)
                       D  = NS6(M) sqrt(fan_out / fan_in) tn       (RMS -> RMS norm of D: tn)
                Adam:  m <- b1 m + (1 - b1) G,  v <- b2 v + (1 - b2) G^2
                       D  = m / (sqrt(v) + 1e-12)                  (no bias correction, not rescaled)
    decay       W <- W (1 - wd lr tn)
    step        W <- W - lr D
    project     W <- project_rms(W, method, w_max)                 (reprolib.optim.spectral_constraints)
                soft cap: alpha = soft_cap_coupling(w_max, wd lr tn, lr tn / sqrt(fan_out / fan_in))

tn is the layer's share of the update norm. The official modules split a unit norm by "mass"; in its
L-layer MLP every linear layer has mass 1 and every activation sensitivity 1, so tn = 1 / L (the
default here: 1 / number of matrices). Defaults are the official example configs: b1 = 0.9, b2 = 0.95.

Stacks. Each parameter is a stack [R, fan_out, fan_in] of R independent runs trained side by side.
lr, wd and w_max are numbers or length-R sequences (one per run), and `project` a method name or one
per run; the training loop's schedule multiplies lr (a numpy array) each step. Everything per run is
elementwise or batched over R, so a stacked run equals R separate runs (up to the random starts of the
power iterations, drawn for the whole stack from one generator).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..kernels.newton_schulz_schedule import newton_schulz_schedule
from .spectral_constraints import PROJECTIONS, project_rms, soft_cap_coupling

METHODS = ("muon", "adam")


class ConstrainedOptimizer(torch.optim.Optimizer):
    """The official decay-step-project update on stacks of matrices (module docstring)."""

    def __init__(self, params, lr, method: str = "muon", project="none", w_max=1.0, wd=0.0, beta1: float = 0.9,
                 beta2: float = 0.95, target_norm: float | None = None, power_iters: int = 16,
                 generator: torch.Generator | None = None):
        params = list(params)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
        if not params or any(p.ndim != 3 or p.size(0) != params[0].size(0) for p in params):
            raise ValueError("params must be stacks [R, fan_out, fan_in] with one R")
        R = params[0].size(0)
        project = [project] * R if isinstance(project, str) else list(project)
        if len(project) != R or set(project) - set(PROJECTIONS):
            raise ValueError(f"project: one of {PROJECTIONS}, or one per run (R = {R})")
        as_array = lambda x: np.asarray(x, dtype=np.float64) if np.ndim(x) else float(x)   # lr * schedule works
        defaults = dict(lr=as_array(lr), wd=as_array(wd), w_max=as_array(w_max), beta1=beta1, beta2=beta2)
        super().__init__(params, defaults)
        self.method, self.R, self.power_iters, self.generator = method, R, power_iters, generator
        self.target_norm = 1.0 / len(params) if target_norm is None else target_norm
        self.rows = {m: [r for r in range(R) if project[r] == m] for m in dict.fromkeys(project)}
        self._indices = {}

    def _index(self, method: str, device) -> torch.Tensor:
        key = (method, str(device))
        if key not in self._indices:                            # built once: no host-to-device copy per step
            self._indices[key] = torch.as_tensor(self.rows[method], device=device)
        return self._indices[key]

    def _per_run(self, x) -> np.ndarray:
        return np.broadcast_to(np.asarray(x, dtype=np.float64), (self.R,))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        tn = self.target_norm
        for group in self.param_groups:
            lr, wd, w_max = (self._per_run(group[k]) for k in ("lr", "wd", "w_max"))
            eta = lr * tn                                          # the official max_update_norm
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, scale = self.state[p], math.sqrt(p.size(-2) / p.size(-1))
                if not state:
                    state["m"] = torch.zeros_like(p)
                    if self.method == "adam":
                        state["v"] = torch.zeros_like(p)
                state["m"].lerp_(p.grad, 1 - group["beta1"])                   # M <- b1 M + (1 - b1) G
                if self.method == "muon":
                    D = newton_schulz_schedule(state["m"]) * (scale * tn)       # D = NS6(M) sqrt(fo / fi) tn
                else:
                    state["v"].mul_(group["beta2"]).addcmul_(p.grad, p.grad, value=1 - group["beta2"])
                    D = state["m"] / (state["v"].sqrt() + 1e-12)                # D = m / (sqrt(v) + 1e-12)
                per_run = torch.as_tensor(np.stack([1 - wd * eta, lr]), dtype=p.dtype).to(p.device, non_blocking=True)
                p.mul_(per_run[0, :, None, None]).sub_(per_run[1, :, None, None] * D)   # W <- W (1 - wd lr tn) - lr D
                # official Linear.project: the coupling gets wd lr tn and lr tn / sqrt(fo / fi)
                self._project(p, w_max, wd * eta, eta / scale)
        return loss

    def _project(self, p, w_max, wd_eff, eta_coupled):
        for method, rows in self.rows.items():
            if method == "none":
                continue
            idx = slice(None) if len(rows) == self.R else self._index(method, p.device)
            alpha = soft_cap_coupling(w_max[rows], wd_eff[rows], eta_coupled[rows]) if method == "soft_cap" else None
            W = p[idx]
            W = project_rms(W, method, torch.as_tensor(w_max[rows], dtype=p.dtype, device=p.device),
                            None if alpha is None else torch.as_tensor(alpha, dtype=p.dtype, device=p.device),
                            self.power_iters, self.generator)
            if isinstance(idx, slice):
                p.copy_(W)
            else:
                p.index_copy_(0, idx, W)
