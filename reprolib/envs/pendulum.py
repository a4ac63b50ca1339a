"""Pendulum-v1 (Gymnasium classic control) as one tensor of many environments.

The dynamics, reward and start states of gymnasium/envs/classic_control/pendulum.py, written for a
batch of states s = (theta, theta_dot) of shape [..., 2]:

    cost  = angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2,      reward = -cost
    theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8)
    theta'     = theta + theta_dot' dt                                   (not wrapped, as in Gymnasium)

with g = 10, m = l = 1, dt = 0.05, u clipped to [-2, 2]; observation (cos theta, sin theta, theta_dot);
start states uniform on [-pi, pi] x [-1, 1]; episodes end by truncation after 200 steps (the TimeLimit
wrapper of the registered env). The reward is computed from the state before the step, as Gymnasium does.
"""
from __future__ import annotations

import math

import torch

G, M, L, DT = 10.0, 1.0, 1.0, 0.05
MAX_SPEED, MAX_TORQUE, MAX_STEPS = 8.0, 2.0, 200


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """x mapped to [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def pendulum_reward(state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2), u clipped first; state [..., 2], u [...]."""
    u = u.clamp(-MAX_TORQUE, MAX_TORQUE)
    th, thdot = state.unbind(-1)
    return -(angle_normalize(th) ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2)


def pendulum_step(state: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every pendulum: (next state [..., 2], reward [...]) for torques u [...]."""
    u = u.clamp(-MAX_TORQUE, MAX_TORQUE)
    th, thdot = state.unbind(-1)
    new_thdot = (thdot + (3 * G / (2 * L) * torch.sin(th) + 3.0 / (M * L ** 2) * u) * DT).clamp(-MAX_SPEED, MAX_SPEED)
    new_th = th + new_thdot * DT
    return torch.stack([new_th, new_thdot], -1), pendulum_reward(state, u)


def pendulum_obs(state: torch.Tensor) -> torch.Tensor:
    """(cos theta, sin theta, theta_dot), [..., 3]."""
    th, thdot = state.unbind(-1)
    return torch.stack([torch.cos(th), torch.sin(th), thdot], -1)


class BatchedPendulum:
    """n Pendulum-v1 environments stepped together. reset() draws start states from `generator`;
    step(u) returns (obs, reward, done), done when the 200-step time limit is reached (all
    environments start together, so they end together; reset() starts them again)."""

    def __init__(self, n: int, device=None, dtype=torch.float32, generator: torch.Generator | None = None):
        self.n, self.device, self.dtype, self.generator = n, device, dtype, generator
        self.state = torch.zeros(n, 2, device=device, dtype=dtype)
        self.t = 0

    def reset(self, state: torch.Tensor | None = None) -> torch.Tensor:
        if state is None:
            high = torch.tensor([math.pi, 1.0], device=self.device, dtype=self.dtype)
            state = (2 * torch.rand(self.n, 2, device=self.device, dtype=self.dtype, generator=self.generator) - 1) * high
        self.state, self.t = state.to(self.device, self.dtype).clone(), 0
        return pendulum_obs(self.state)

    def step(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        self.state, reward = pendulum_step(self.state, u.reshape(self.n).to(self.dtype))
        self.t += 1
        return pendulum_obs(self.state), reward, self.t >= MAX_STEPS
