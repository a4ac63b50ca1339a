"""Value iteration on a grid for a two-dimensional state with one periodic axis (an angle) and one
bounded axis (a speed): the reference V* against which learned value functions are measured.

V is stored on n_theta x n_omega grid points, theta in [-pi, pi) (periodic) and omega in
[-omega_max, omega_max]; off-grid values are bilinear interpolations (theta wraps, omega is clamped).
Bellman's optimality operator with a deterministic model f and reward r over a finite action set,

    (T V)(s) = max_a [ r(s, a) + gamma V(f(s, a)) ],

is a gamma-contraction in the sup norm also with interpolation (an interpolation is an average of grid
values), so iterating it converges geometrically; value_iteration stops when the sup change is below tol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AngleSpeedGrid:
    n_theta: int
    n_omega: int
    omega_max: float
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float64

    def states(self) -> torch.Tensor:
        """The grid points as states (theta, omega), [n_theta * n_omega, 2], theta-major."""
        th = -math.pi + 2 * math.pi * torch.arange(self.n_theta, device=self.device, dtype=self.dtype) / self.n_theta
        om = torch.linspace(-self.omega_max, self.omega_max, self.n_omega, device=self.device, dtype=self.dtype)
        return torch.cartesian_prod(th, om)

    def weights(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear interpolation of states s [..., 2]: flat grid indices [..., 4] and weights [..., 4]."""
        x = torch.remainder(s[..., 0] + math.pi, 2 * math.pi) / (2 * math.pi) * self.n_theta
        y = (s[..., 1].clamp(-self.omega_max, self.omega_max) + self.omega_max) / (2 * self.omega_max) * (self.n_omega - 1)
        i0, j0 = x.floor(), y.floor().clamp(max=self.n_omega - 2)
        fx, fy = (x - i0).to(self.dtype), (y - j0).to(self.dtype)
        i0, j0 = i0.long() % self.n_theta, j0.long()
        i1 = (i0 + 1) % self.n_theta
        idx = torch.stack([i0 * self.n_omega + j0, i0 * self.n_omega + j0 + 1,
                           i1 * self.n_omega + j0, i1 * self.n_omega + j0 + 1], -1)
        w = torch.stack([(1 - fx) * (1 - fy), (1 - fx) * fy, fx * (1 - fy), fx * fy], -1)
        return idx, w

    def interpolate(self, V: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """V(s) for grid values V [n_theta * n_omega] at states s [..., 2]."""
        idx, w = self.weights(s)
        return (V[idx] * w).sum(-1)


def value_iteration(grid: AngleSpeedGrid, step, actions: torch.Tensor, gamma: float, tol: float = 1e-6,
                    max_iters: int = 100_000) -> dict:
    """V* on the grid for a deterministic step(states [n, 2], u [n]) -> (next states, rewards) and a
    finite action set; returns V [N], Q [N, A], the greedy action index [N], the iterations taken and
    the final sup-norm Bellman residual ||T V - V||_inf."""
    S = grid.states()
    n, A = S.size(0), actions.numel()
    s_rep = S[:, None, :].expand(n, A, 2).reshape(-1, 2)
    u_rep = actions.to(S)[None, :].expand(n, A).reshape(-1)
    nxt, rew = step(s_rep, u_rep)
    idx, w = grid.weights(nxt)
    rew, idx, w = rew.view(n, A).to(grid.dtype), idx.view(n, A, 4), w.view(n, A, 4)
    V = torch.zeros(n, device=S.device, dtype=grid.dtype)
    for it in range(1, max_iters + 1):
        Q = rew + gamma * (V[idx] * w).sum(-1)
        V_new = Q.amax(-1)
        residual = (V_new - V).abs().max().item()
        V = V_new
        if residual < tol:
            break
    Q = rew + gamma * (V[idx] * w).sum(-1)
    return dict(V=V, Q=Q, greedy=Q.argmax(-1), iters=it, residual=(Q.amax(-1) - V).abs().max().item())
