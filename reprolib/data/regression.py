"""A small regression suite for comparing optimizers by the test error they reach (Sven, P107).

Three tasks, each deterministic given a seed, each a list of residual conditions R_a(theta) = 0,
in the form reprolib.optim.Sven takes (residuals(f, batch) with batch = (x, y)):

    sine_mix    1-D fit  y = sin(5x) + 0.3 sin(23x) on x ~ U[-1, 1];         R_a = f(x_a) - y_a
    franke      2-D fit  of Franke's (1979) test function on [0, 1]^2;      R_a = f(x_a) - y_a
    poisson_1d  PINN for u'' = s on [0, 1], u(0) = u(1) = 0, with the exact solution
                u*(x) = sin(2 pi x) + 0.1 sin(8 pi x), s = u*'':
                R_a = (f''(x_a) - s(x_a)) / (2 pi)^2 at collocation points, plus f(0) and f(1)

The interior PINN residuals are divided by (2 pi)^2 so that they and the two boundary residuals
are of order one. Test sets are fixed grids on the domain; the test error is the MSE of the model
against the exact function (for the PINN: against u*, not the residuals).

    task = poisson_1d(n=256, seed=0)
    R = task.residuals(model, (task.x[:128], task.y[:128]))   # (130,): 128 interior + 2 boundary
    loss = R.square().mean(); task.test_mse(model)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, vmap

__all__ = ["RegressionTask", "sine_mix", "franke", "franke_fn", "poisson_1d", "poisson_exact",
           "second_derivative", "regression_suite"]


@dataclass
class RegressionTask:
    name: str
    x: Tensor                 # (n, d) training inputs: data points, or collocation points for a PINN
    y: Tensor                 # (n,) targets, or the PDE's source term s(x) at the collocation points
    x_test: Tensor            # (m, d) test grid
    y_test: Tensor            # (m,) the exact function on the test grid
    residuals: Callable       # residuals(f, (x, y)) -> (conditions,); f maps (b, d) to (b, 1)

    def to(self, device=None, dtype=None) -> "RegressionTask":
        move = lambda t: t.to(device=device, dtype=dtype)
        return replace(self, x=move(self.x), y=move(self.y), x_test=move(self.x_test), y_test=move(self.y_test))

    @torch.no_grad()
    def test_mse(self, f) -> float:
        return float((f(self.x_test).reshape(-1) - self.y_test).square().mean())


def fit_residuals(f, batch) -> Tensor:
    x, y = batch
    return f(x).reshape(-1) - y


def sine_mix(n: int = 512, n_test: int = 2048, seed: int = 0) -> RegressionTask:
    target = lambda x: torch.sin(5 * x) + 0.3 * torch.sin(23 * x)
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(n, 1, generator=g) - 1
    x_test = torch.linspace(-1, 1, n_test).unsqueeze(1)
    return RegressionTask("sine_mix", x, target(x[:, 0]), x_test, target(x_test[:, 0]), fit_residuals)


def franke_fn(x: Tensor) -> Tensor:
    """Franke's bivariate test function of (n, 2) inputs on [0, 1]^2."""
    a, b = 9 * x[:, 0], 9 * x[:, 1]
    return (0.75 * torch.exp(-((a - 2) ** 2 + (b - 2) ** 2) / 4) + 0.75 * torch.exp(-(a + 1) ** 2 / 49 - (b + 1) / 10)
            + 0.5 * torch.exp(-((a - 7) ** 2 + (b - 3) ** 2) / 4) - 0.2 * torch.exp(-(a - 4) ** 2 - (b - 7) ** 2))


def franke(n: int = 1024, n_test_side: int = 64, seed: int = 0) -> RegressionTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g)
    t = torch.linspace(0, 1, n_test_side)
    x_test = torch.cartesian_prod(t, t)
    return RegressionTask("franke", x, franke_fn(x), x_test, franke_fn(x_test), fit_residuals)


K2 = (2 * math.pi) ** 2   # scale of the interior residuals


def poisson_exact(x: Tensor) -> Tensor:
    """u*(x) = sin(2 pi x) + 0.1 sin(8 pi x) for (n, 1) inputs, as (n, 1)."""
    return torch.sin(2 * math.pi * x) + 0.1 * torch.sin(8 * math.pi * x)


def poisson_source(x: Tensor) -> Tensor:
    """s = u*'' for (n,) inputs."""
    return -K2 * torch.sin(2 * math.pi * x) - 0.1 * (8 * math.pi) ** 2 * torch.sin(8 * math.pi * x)


def second_derivative(f, x: Tensor) -> Tensor:
    """d^2 f / dx^2 at each of the (n, 1) points, for a pointwise scalar function f: (b, 1) -> (b, 1).
    Written with torch.func so that it nests inside jacrev over the parameters (Sven's Jacobian)."""
    u = lambda xi: f(xi.reshape(1, 1)).reshape(())
    return vmap(grad(grad(u)))(x[:, 0])


def poisson_residuals(f, batch) -> Tensor:
    x, s = batch
    ends = torch.tensor([[0.0], [1.0]], dtype=x.dtype, device=x.device)
    return torch.cat([(second_derivative(f, x) - s) / K2, f(ends).reshape(-1)])


def poisson_1d(n: int = 256, n_test: int = 1024, seed: int = 0) -> RegressionTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g)
    x_test = torch.linspace(0, 1, n_test).unsqueeze(1)
    return RegressionTask("poisson_1d", x, poisson_source(x[:, 0]), x_test, poisson_exact(x_test)[:, 0],
                          poisson_residuals)


def regression_suite(n_fit: int = 512, n_franke: int = 1024, n_pinn: int = 256, seed: int = 0) -> dict:
    """The three tasks by name, at the given sizes."""
    return {t.name: t for t in (sine_mix(n_fit, seed=seed), franke(n_franke, seed=seed), poisson_1d(n_pinn, seed=seed))}
