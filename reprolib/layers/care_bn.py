"""Batch normalisation for spiking networks in online RL: statistics pooled over the spike timesteps, and
three ways to keep the moving statistics used for acting: none (no BN), the usual exponential moving
average, and CaRe-BN.

Xu et al., "CaRe-BN: Precise Moving Statistics for Stabilizing Spiking Neural Networks in Reinforcement
Learning" (arXiv 2509.23791); official code github.com/xuzijie32/CaRe-BN (continuous_control/care_bn.py).

Inputs x [R, B, T, C]: R independent networks (a stack), B samples, T spike timesteps, C channels.

Pooled statistics over (B, T), merged timestep by timestep as `batch_norm_update` does:
    mu  = n1/(n1+n2) mu1 + n2/(n1+n2) mu2
    var = n1/(n1+n2) var1 + n2/(n1+n2) var2 + n1 n2/(n1+n2)^2 (mu1 - mu2)^2           (biased)
Training forward: y = gamma (x - mu_B) / sqrt(var_B + eps) + beta (gradient through mu_B, var_B).
Acting (eval) forward: the moving statistics replace mu_B, var_B.

Ca-BN, the confidence-adaptive update of the moving statistics after each training batch (m = 0.8):
    d_mu = mu_B - mu,   p_mu <- m p_mu + (1 - m) d_mu^2,   K_mu = p_mu / (p_mu + var_B / (n - 1)),   mu  += K_mu d_mu
    d_v  = var_B - var, p_v  <- m p_v  + (1 - m) d_v^2,    K_v  = p_v / (p_v + 2 var_B^2 / (n - 1)),  var += K_v d_v
with n - 1 = 255 in the official code (its batch of 256): the measurement variances of a batch mean and
a batch variance. Re-BN: every so often, the exact pooled statistics of many replay batches replace the
moving statistics (`start_recalibration`, forwards in mode "recal", `finish_recalibration`); during those
forwards each layer normalises with the statistics accumulated so far, as the official code does.
EMA (vanilla BN, torch's BatchNorm convention): mu <- (1 - a) mu + a mu_B, var <- (1 - a) var + a var_B n/(n - 1)
with a = 0.1 and n = B T.

gamma and beta start at v_th / 2 = 0.25 (the official initialisation for LIF neurons with v_th = 0.5).
Each member has its own mode: "none", "ema" or "care".
"""
from __future__ import annotations

import torch
from torch import nn

from .lif import NEURON_VTH

MODES = ("none", "ema", "care")


def merge_moments(mean1, var1, n1, mean2, var2, n2):
    """Mean and (biased) variance of the union of two sets of sizes n1, n2 (the official batch_norm_update)."""
    w1, w2 = n1 / (n1 + n2), n2 / (n1 + n2)
    var = w1 * var1 + w2 * var2 + n1 * n2 / (n1 + n2) ** 2 * (mean1 - mean2) ** 2
    return w1 * mean1 + w2 * mean2, var


def temporal_moments(x: torch.Tensor, mean=None, var=None, count: int = 0):
    """Pooled mean and biased variance over (B, T) of x [R, B, T, C], merged one timestep at a time into
    running moments (mean, var) of `count` earlier timestep-batches of the same size; returns [R, C] each."""
    for t in range(x.size(2)):
        m = x[:, :, t].mean(1)
        v = (x[:, :, t] - m[:, None]).pow(2).mean(1)
        if count == 0:
            mean, var = m, v
        else:
            mean, var = merge_moments(mean, var, count, m, v, 1)
        count += 1
    return mean, var, count


class TemporalBatchNorm(nn.Module):
    def __init__(self, runs: int, channels: int, modes, momentum_care: float = 0.8, momentum_ema: float = 0.1,
                 batch_minus_one: float = 255.0, eps: float = 1e-5, device=None):
        super().__init__()
        modes = list(modes)
        if len(modes) != runs or any(m not in MODES for m in modes):
            raise ValueError(f"modes needs one of {MODES} per member ({runs}), got {modes}")
        self.modes = modes
        self.m, self.a, self.n1, self.eps = momentum_care, momentum_ema, batch_minus_one, eps
        self.gamma = nn.Parameter(torch.full((runs, channels), NEURON_VTH / 2, device=device))
        self.beta = nn.Parameter(torch.full((runs, channels), NEURON_VTH / 2, device=device))
        flag = lambda name: torch.tensor([m == name for m in modes], device=device)   # noqa: E731
        self.register_buffer("on", ~flag("none"))
        self.register_buffer("care", flag("care"))
        self.register_buffer("ema", flag("ema"))
        for name, value in (("moving_mean", 0.0), ("moving_var", 1.0), ("p_mean", 0.0), ("p_var", 0.0),
                            ("k_mean", 0.0), ("k_var", 0.0)):
            self.register_buffer(name, torch.full((runs, channels), value, device=device))
        self._recal = None

    def _normalise(self, x, mean, var):
        y = self.gamma[:, None, None] * (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps) \
            + self.beta[:, None, None]
        return torch.where(self.on[:, None, None, None], y, x)

    @torch.no_grad()
    def _update(self, mean, var, n):
        # Ca-BN (Kalman-like gain from the running innovation power and the measurement variance)
        d_mu, d_v = mean - self.moving_mean, var - self.moving_var
        p_mu = self.m * self.p_mean + (1 - self.m) * d_mu ** 2
        p_v = self.m * self.p_var + (1 - self.m) * d_v ** 2
        k_mu = p_mu / (p_mu + var / self.n1)
        k_v = p_v / (p_v + 2 * var ** 2 / self.n1)
        care = self.care[:, None]
        self.p_mean.copy_(torch.where(care, p_mu, self.p_mean))
        self.p_var.copy_(torch.where(care, p_v, self.p_var))
        self.k_mean.copy_(torch.where(care, k_mu, self.k_mean))
        self.k_var.copy_(torch.where(care, k_v, self.k_var))
        new_mean = torch.where(care, self.moving_mean + k_mu * d_mu, self.moving_mean)
        new_var = torch.where(care, self.moving_var + k_v * d_v, self.moving_var)
        # vanilla EMA, torch's BatchNorm convention (unbiased variance in the running estimate)
        ema = self.ema[:, None]
        new_mean = torch.where(ema, (1 - self.a) * self.moving_mean + self.a * mean, new_mean)
        new_var = torch.where(ema, (1 - self.a) * self.moving_var + self.a * var * n / (n - 1), new_var)
        self.moving_mean.copy_(new_mean)
        self.moving_var.copy_(new_var)

    def start_recalibration(self) -> None:
        self._recal = (None, None, 0)

    def finish_recalibration(self, commit: torch.Tensor | None = None):
        """Write the accumulated exact statistics into the moving ones for members with commit[r] (default:
        the CaRe members); returns them ([R, C] mean and var)."""
        mean, var, _ = self._recal
        commit = self.care if commit is None else commit
        with torch.no_grad():
            self.moving_mean.copy_(torch.where(commit[:, None], mean, self.moving_mean))
            self.moving_var.copy_(torch.where(commit[:, None], var, self.moving_var))
        self._recal = None
        return mean, var

    def forward(self, x: torch.Tensor, mode: str = "eval") -> torch.Tensor:
        """mode: "train" (batch statistics, moving statistics updated), "eval" (moving statistics),
        "recal" (statistics accumulated over the re-calibration batches so far, nothing else changes)."""
        if mode == "train":
            mean, var, _ = temporal_moments(x)
            self._update(mean.detach(), var.detach(), x.size(1) * x.size(2))
            return self._normalise(x, mean, var)
        if mode == "recal":
            with torch.no_grad():
                self._recal = temporal_moments(x, *self._recal)
            return self._normalise(x, self._recal[0], self._recal[1])
        return self._normalise(x, self.moving_mean, self.moving_var)
