"""Self-Tuning Networks: a network that is its own best-response to its hyperparameters.

MacKay, Vicol, Lorraine, Duvenaud & Grosse, "Self-Tuning Networks: Bilevel Optimization of
Hyperparameters using Structured Best-Response Functions", ICLR 2019, arXiv 1903.03088 ;
official code github.com/asteroidhouse/self-tuning-networks (`cnn/hypermodels/hyperlinear.py`,
`stn_utils/hyperparameter.py`, `cnn/hypertrain.py`), whose choices this module follows.

Hyperparameter tuning is the bilevel problem  min_λ L_V(w*(λ)),  w*(λ) = argmin_w L_T(w, λ).
An STN approximates the best response w*(λ) near the current λ by gating every layer's
outputs with an affine function of the hyperparameters (Sec. 4.2, Eq. 10-11):

    y = s · (W x + b) + (U_w λ) ⊙ (W_h x) + (U_b λ) ⊙ b_h                  (STN layer)

with λ the *unconstrained* hyperparameters (the official code feeds them in untransformed), a
learned scalar s (init 1) and U ~ N(0, 0.01²). A bounded hyperparameter in (lo, hi) is
lo + (hi - lo) · sigmoid(λ). Training alternates (Algorithm 1):

    T_train steps on the weights:  λ̃ = λ + σ ⊙ ε, ε ~ N(0, I), one λ̃ per example; the training
        loss applies the regulariser at λ̃ (dropout at rate sigmoid(λ̃), ...) to the net ŵ(λ̃)
    T_valid steps on λ and σ:     min  E_ε[ L_V(ŵ(λ + σ ⊙ ε)) ] - τ · H[N(λ, σ²)]          (Eq. 13)
        with no regulariser noise in L_V, so a dropout rate moves λ only through the response.

H = Σ log(σ √(2πe)), σ = softplus(ρ). Defaults of the official CNN code (`hypertrain.py` and
the README's command): T_train = 2, T_valid = 1, Adam at 3e-3 for λ and for ρ, σ₀ = 0.5,
τ = 1e-3, 5 warm-up epochs of weight steps, dropout rates capped at 0.9.

Every tensor may carry leading "stack" dimensions: `STNLinear(..., stack=(R,))` holds R
independent layers and maps x [R, B, in] -> [R, B, out], so R runs (seeds, settings) train as
one set of batched matmuls. Losses summed over the stack give each run its own gradient, and
SGD/Adam act elementwise, so a stacked run equals R separate runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_SQRT_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def stn_linear(x, w, b, h=None, w_h=None, b_h=None, u=None, s=None):
    """y = s (x Wᵀ + b) + (h U_wᵀ) ⊙ (x W_hᵀ) + (h U_bᵀ) ⊙ b_h, batched over leading stack dims.

    x [*S, B, in]; w, w_h [*S, out, in]; b, b_h [*S, out]; u [*S, 2 out, H]; s [*S, 1];
    h [*S, B or 1, H] (hyperparameters per example). h None (or no hypernet) gives x Wᵀ + b.
    """
    y = x @ w.mT + b.unsqueeze(-2)
    if u is None:
        return y
    y = y * s.unsqueeze(-1)
    if h is None:
        return y
    gate_w, gate_b = (h @ u.mT).chunk(2, dim=-1)
    return y + gate_w * (x @ w_h.mT) + gate_b * b_h.unsqueeze(-2)


class STNLinear(nn.Module):
    """A stack of STN layers; n_hparams = 0 gives a plain linear layer (no gate, no scalar)."""

    def __init__(self, in_features: int, out_features: int, n_hparams: int = 0, stack: tuple = ()):
        super().__init__()
        self.in_features, self.out_features, self.n_hparams = in_features, out_features, n_hparams
        bound = in_features ** -0.5   # the official init, also nn.Linear's weight bound
        uniform = lambda *shape: nn.Parameter(torch.empty(*stack, *shape).uniform_(-bound, bound))
        self.weight, self.bias = uniform(out_features, in_features), uniform(out_features)
        if n_hparams:
            self.weight_h, self.bias_h = uniform(out_features, in_features), uniform(out_features)
            self.gate = nn.Parameter(torch.randn(*stack, 2 * out_features, n_hparams) * 0.01)
            self.scale = nn.Parameter(torch.ones(*stack, 1))

    def forward(self, x, h=None):
        if not self.n_hparams:
            return stn_linear(x, self.weight, self.bias)
        return stn_linear(x, self.weight, self.bias, h, self.weight_h, self.bias_h, self.gate, self.scale)


def dropout(x, p, generator=None):
    """Inverted dropout with a rate per example: p broadcastable to x.shape[:-1] (e.g. [*S, B] or
    [*S, 1]), in [0, 1). As in the official code the rate gets no gradient through the mask."""
    keep = 1 - torch.as_tensor(p, dtype=x.dtype, device=x.device).detach()
    keep = keep.expand(x.shape[:-1]).unsqueeze(-1)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(u < keep, x / keep, torch.zeros((), dtype=x.dtype, device=x.device))


def scale_jitter(x, s, generator=None):
    """Multiply each example by u ~ U[1/(1+s), 1+s] (the official `inscale` augmentation);
    s per example, broadcastable to x.shape[:-1]."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device).detach().expand(x.shape[:-1])
    u = torch.rand(x.shape[:-1], generator=generator, device=x.device, dtype=x.dtype)
    lo, hi = 1 / (1 + s), 1 + s
    return x * (lo + (hi - lo) * u).unsqueeze(-1)


class STNMLP(nn.Module):
    """dims[0] -> ... -> dims[-1] ReLU MLP of STN layers, stacked; n_hparams = 0: plain MLP.

    forward(x, h, p_drop): h [*S, B or 1, H] feeds every layer's gate; p_drop[i] (None or a rate
    per example) is dropout on layer i's input, applied only in training mode.
    """

    def __init__(self, dims, n_hparams: int = 0, stack: tuple = ()):
        super().__init__()
        self.layers = nn.ModuleList(STNLinear(a, b, n_hparams, stack) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x, h=None, p_drop=None, generator=None):
        for i, layer in enumerate(self.layers):
            if i:
                x = x.relu()
            if self.training and p_drop is not None and p_drop[i] is not None:
                x = dropout(x, p_drop[i], generator)
            x = layer(x, h)
        return x


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter in (lo, hi), tuned as λ = logit((value - lo) / (hi - lo))."""
    name: str
    lo: float
    hi: float
    init: float

    def constrain(self, lam):
        return self.lo + (self.hi - self.lo) * torch.sigmoid(lam)

    def unconstrain(self, value):
        return torch.logit(torch.as_tensor((value - self.lo) / (self.hi - self.lo), dtype=torch.float32))


def perturb(lam, rho, n: int, generator=None):
    """λ̃ = λ + softplus(ρ) ⊙ ε, ε ~ N(0, I): n samples per run. lam, rho [*S, H] -> [*S, n, H]."""
    eps = torch.randn(*lam.shape[:-1], n, lam.shape[-1], generator=generator, device=lam.device, dtype=lam.dtype)
    return lam.unsqueeze(-2) + F.softplus(rho).unsqueeze(-2) * eps


def entropy_term(rho):
    """H[N(λ, diag σ²)] = Σ_j log(σ_j √(2πe)), σ = softplus(ρ); per run: [*S, H] -> [*S]."""
    return (F.softplus(rho).log() + LOG_SQRT_2PI_E).sum(-1)


def is_hyper_step(k: int, t_train: int = 2, t_valid: int = 1) -> bool:
    """Step k of the alternation (counted after warm-up): T_train weight steps, then T_valid
    hyperparameter steps, repeating."""
    return k % (t_train + t_valid) >= t_train


class STNTuner:
    """The hyperparameters λ, the perturbation scales σ = softplus(ρ) and their Adam optimisers.

    tuner.sample(n)  λ̃ [*S, n, H] for a weight step (and the constrained values for the regulariser)
    tuner.step(val_loss_fn)  one hyperparameter step: val_loss_fn(λ̃) -> per-run validation losses [*S];
        minimises their sum - τ Σ entropy over λ (and ρ if tune_scales).
    """

    def __init__(self, specs, stack: tuple = (), device=None, lr: float = 3e-3, scale_lr: float = 3e-3,
                 sigma0: float = 0.5, tau: float = 1e-3, tune_scales: bool = True, generator=None):
        if not specs:
            raise ValueError("STNTuner needs at least one Hyperparameter")
        self.specs, self.tau, self.tune_scales, self.generator = list(specs), tau, tune_scales, generator
        lam0 = torch.stack([spec.unconstrain(spec.init) for spec in self.specs])
        rho0 = torch.full((len(self.specs),), math.log(math.expm1(sigma0)))   # softplus(ρ₀) = σ₀
        self.lam = nn.Parameter(lam0.expand(*stack, -1).clone().to(device))
        self.rho = nn.Parameter(rho0.expand(*stack, -1).clone().to(device))
        self.opt_lam = torch.optim.Adam([self.lam], lr=lr)
        self.opt_rho = torch.optim.Adam([self.rho], lr=scale_lr)

    def constrain(self, lam):
        """Hyperparameter values from unconstrained λ [..., H] -> [..., H]."""
        return torch.stack([spec.constrain(lam[..., j]) for j, spec in enumerate(self.specs)], -1)

    def values(self):
        """Current hyperparameter values [*S, H] (no perturbation)."""
        return self.constrain(self.lam.detach())

    def sample(self, n: int):
        """(λ̃ [*S, n, H] detached, values at λ̃) for a weight step: one perturbed λ per example."""
        lam_t = perturb(self.lam.detach(), self.rho.detach(), n, self.generator)
        return lam_t, self.constrain(lam_t)

    def step(self, val_loss_fn, n: int):
        """One hyperparameter step on n validation examples per run; returns the per-run losses."""
        self.opt_lam.zero_grad(set_to_none=True)
        self.opt_rho.zero_grad(set_to_none=True)
        lam_t = perturb(self.lam, self.rho, n, self.generator) if self.tune_scales \
            else self.lam.unsqueeze(-2).expand(*self.lam.shape[:-1], n, -1)
        losses = val_loss_fn(lam_t)
        (losses.sum() - self.tau * entropy_term(self.rho).sum()).backward(inputs=[self.lam, self.rho])
        self.opt_lam.step()
        if self.tune_scales:
            self.opt_rho.step()
        return losses.detach()
