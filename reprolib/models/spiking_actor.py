"""Actors for TD3 on a stack of R independent members: the population-coded spiking actor (PopSAN) with
temporal batch normalisation, and the plain ANN actor.

Tang et al., "Deep Reinforcement Learning with Population-Coded Spiking Neural Network for Continuous
Control" (PopSAN, CoRL 2020, arXiv 2010.09635), in the form of the CaRe-BN code (Xu et al., arXiv 2509.23791,
github.com/xuzijie32/CaRe-BN, continuous_control/SAN.py `SNN_Actor`, `PopSpikeEncoder`, `SpikeMLP`):

    encoder   a_{i,j} = exp(-(tanh(o_i) - mu_{i,j})^2 / (2 std_{i,j}^2)), 10 neurons per observation,
              mu_{i,j} evenly on [-1, 1], std = sqrt(0.05) (both learned); regular spike trains over T = 5
              steps: v += a, s = [v > 0.999], v -= 0.999 s (straight-through gradient)
    hidden    two layers of 256 LIF neurons (layers.lif), each preceded by Linear and temporal BN
    output    10 LIF neurons per action (Linear, BN, LIF); firing rate r = mean_t s_t
    decoder   a = act_limit * tanh(sum_j w_j r_j + b) per action (a grouped Conv1d in the official code)

The ANN actor is TD3's: Linear(256) ReLU Linear(256) ReLU Linear tanh, times act_limit. Linear layers draw
from nn.Linear's default distribution, member r from generators[r]. Inputs obs [R, B, obs_dim].
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..layers.care_bn import TemporalBatchNorm
from ..layers.lif import lif
from .stacked_sn_mlp import StackedSNMLP

ENCODER_VTH = 0.999


class _StraightThroughSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return (v > ENCODER_VTH).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _uniform(shape, bound, generators, device):
    return torch.stack([(2 * torch.rand(shape, generator=g) - 1) * bound for g in generators]).to(device)


class StackedSpikingActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, generators, bn_modes, hidden=(256, 256), pop: int = 10,
                 timesteps: int = 5, act_limit: float = 1.0, mean_range=(-1.0, 1.0), std=math.sqrt(0.05),
                 device=None):
        super().__init__()
        R = len(generators)
        self.obs_dim, self.act_dim, self.pop, self.T, self.act_limit = obs_dim, act_dim, pop, timesteps, act_limit
        mean = torch.linspace(mean_range[0], mean_range[1], pop)
        self.enc_mean = nn.Parameter(mean.expand(R, obs_dim, pop).clone().to(device))
        self.enc_std = nn.Parameter(torch.full((R, obs_dim, pop), float(std), device=device))
        dims = [obs_dim * pop, *hidden, act_dim * pop]
        self.weights, self.biases, self.norms = nn.ParameterList(), nn.ParameterList(), nn.ModuleList()
        for fi, fo in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(_uniform((fo, fi), 1 / math.sqrt(fi), generators, device)))
            self.biases.append(nn.Parameter(_uniform((fo,), 1 / math.sqrt(fi), generators, device)))
            self.norms.append(TemporalBatchNorm(R, fo, bn_modes, device=device))
        self.dec_weight = nn.Parameter(_uniform((act_dim, pop), 1 / math.sqrt(pop), generators, device))
        self.dec_bias = nn.Parameter(_uniform((act_dim,), 1 / math.sqrt(pop), generators, device))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Regular population spike trains [R, B, T, obs_dim * pop]."""
        act = torch.exp(-0.5 * (torch.tanh(obs)[..., None] - self.enc_mean[:, None]).pow(2)
                        / self.enc_std[:, None].pow(2)).flatten(-2)
        volt, spikes = torch.zeros_like(act), []
        for _ in range(self.T):
            volt = volt + act
            s = _StraightThroughSpike.apply(volt)
            volt = volt - s * ENCODER_VTH
            spikes.append(s)
        return torch.stack(spikes, 2)

    def forward(self, obs: torch.Tensor, mode: str = "eval") -> torch.Tensor:
        """Actions [R, B, act_dim]; mode as TemporalBatchNorm's ("train" when the actor is optimised)."""
        h = self.encode(obs)
        for W, b, norm in zip(self.weights, self.biases, self.norms):
            x = torch.einsum("rbti,roi->rbto", h, W) + b[:, None, None]
            h = lif(norm(x, mode))
        rate = h.mean(2).unflatten(-1, (self.act_dim, self.pop))             # [R, B, act, pop]
        return self.act_limit * torch.tanh((rate * self.dec_weight[:, None]).sum(-1) + self.dec_bias[:, None])

    @torch.no_grad()
    def folded(self) -> "StackedSpikingActor":
        """A copy whose BN layers are folded into the Linear layers with the moving statistics (how the
        actor is deployed: inference as a plain SNN); its norms are switched off."""
        out = copy.deepcopy(self)
        for W, b, norm in zip(out.weights, out.biases, out.norms):
            s = torch.where(norm.on[:, None], norm.gamma / torch.sqrt(norm.moving_var + norm.eps), 1.0)
            shift = torch.where(norm.on[:, None], norm.beta - s * norm.moving_mean, 0.0)
            W.mul_(s[..., None])
            b.copy_(s * b + shift)
            norm.on.zero_()
        return out

    def start_recalibration(self) -> None:
        for norm in self.norms:
            norm.start_recalibration()

    def finish_recalibration(self, commit=None) -> list:
        return [norm.finish_recalibration(commit) for norm in self.norms]


class StackedMLPActor(nn.Module):
    """TD3's ANN actor, stacked: act_limit * tanh(MLP(obs)); `mode` is accepted and ignored."""

    def __init__(self, obs_dim: int, act_dim: int, generators, hidden=(256, 256), act_limit: float = 1.0, device=None):
        super().__init__()
        self.net = StackedSNMLP([obs_dim, *hidden, act_dim], generators, sn_layers=(), device=device)
        self.act_limit = act_limit

    def forward(self, obs: torch.Tensor, mode: str = "eval") -> torch.Tensor:
        return self.act_limit * torch.tanh(self.net(obs))
