"""reprolib.data.regression: closed forms of the three tasks, determinism, and the PINN residuals
(zero for the exact solution, correct for a known polynomial, differentiable inside Sven's jacrev)."""
import math

import torch

from reprolib.data.regression import (franke, franke_fn, poisson_1d, poisson_exact, poisson_source, regression_suite,
                                      second_derivative, sine_mix)
from reprolib.models import MLP
from reprolib.optim.sven import residual_jacobian


def test_sine_mix_closed_form_and_determinism():
    t = sine_mix(64, n_test=33, seed=3)
    assert t.x.shape == (64, 1) and t.y.shape == (64,) and t.x_test.shape == (33, 1)
    x = t.x[:, 0].double()
    torch.testing.assert_close(t.y.double(), torch.sin(5 * x) + 0.3 * torch.sin(23 * x), rtol=0, atol=1e-6)
    assert float(t.x.min()) >= -1 and float(t.x.max()) <= 1
    assert torch.equal(t.x, sine_mix(64, n_test=33, seed=3).x) and not torch.equal(t.x, sine_mix(64, seed=4).x)


def test_franke_known_values():
    at = lambda a, b: float(franke_fn(torch.tensor([[a, b]], dtype=torch.float64)))
    f00 = 0.75 * math.exp(-2) + 0.75 * math.exp(-1 / 49 - 0.1) + 0.5 * math.exp(-58 / 4) - 0.2 * math.exp(-65)
    assert abs(at(0.0, 0.0) - f00) < 1e-12
    # at (2/9, 2/9) the first bump is at its peak 0.75
    a = 2 / 9
    expect = 0.75 + 0.75 * math.exp(-9 / 49 - 0.3) + 0.5 * math.exp(-(25 + 1) / 4) - 0.2 * math.exp(-4 - 25)
    assert abs(at(a, a) - expect) < 1e-12
    t = franke(100, n_test_side=8, seed=0)
    assert t.x.shape == (100, 2) and t.x_test.shape == (64, 2)
    torch.testing.assert_close(t.y_test, franke_fn(t.x_test))


def test_poisson_residual_of_exact_solution_is_zero():
    t = poisson_1d(200, seed=1).to(dtype=torch.float64)
    assert float(t.residuals(poisson_exact, (t.x, t.y)).abs().max()) < 1e-5   # s was rounded to float32
    R = t.residuals(poisson_exact, (t.x, poisson_source(t.x[:, 0])))         # s in float64
    assert R.shape == (202,)
    assert float(R.abs().max()) < 1e-9
    # boundary values and the test target are the exact solution
    torch.testing.assert_close(t.y_test, poisson_exact(t.x_test)[:, 0], rtol=0, atol=1e-6)


def test_poisson_residual_of_a_polynomial():
    # f(x) = x^3: f'' = 6x, f(0) = 0, f(1) = 1
    t = poisson_1d(50, seed=0).to(dtype=torch.float64)
    R = t.residuals(lambda x: x ** 3, (t.x, t.y))
    x = t.x[:, 0]
    torch.testing.assert_close(R[:-2], (6 * x - t.y) / (2 * math.pi) ** 2)
    torch.testing.assert_close(R[-2:], torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_second_derivative_of_an_mlp_matches_finite_differences():
    torch.manual_seed(0)
    model = MLP(1, [16, 16], 1, activation="tanh").double()
    x = torch.linspace(0.1, 0.9, 7, dtype=torch.float64).unsqueeze(1)
    h = 1e-4
    fd = (model(x + h) - 2 * model(x) + model(x - h))[:, 0] / h ** 2
    torch.testing.assert_close(second_derivative(model, x), fd, rtol=1e-4, atol=1e-5)


def test_pinn_residual_jacobian_matches_autograd():
    torch.manual_seed(0)
    model = MLP(1, [8, 8], 1, activation="tanh").double()
    t = poisson_1d(5, seed=0).to(dtype=torch.float64)
    R, J = residual_jacobian(model, t.residuals, (t.x, t.y))
    assert J.shape == (7, sum(p.numel() for p in model.parameters()))
    rows = []
    for a in range(7):   # each row with plain autograd through the same residuals
        model.zero_grad()
        t.residuals(model, (t.x, t.y))[a].backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(J, torch.stack(rows))
    torch.testing.assert_close(R, t.residuals(model, (t.x, t.y)).detach())


def test_suite_and_test_mse():
    suite = regression_suite(32, 64, 16)
    assert list(suite) == ["sine_mix", "franke", "poisson_1d"]
    t = suite["poisson_1d"]
    assert t.test_mse(poisson_exact) < 1e-12
    assert abs(t.test_mse(lambda x: torch.zeros_like(x)) - float(t.y_test.square().mean())) < 1e-12
