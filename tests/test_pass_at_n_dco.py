"""pass@N of a classifier and the DCO loss (Chen et al., 2025) against closed forms and Monte Carlo."""
import math

import pytest
import torch
import torch.nn.functional as F

from reprolib.metrics import correct_probability, pass_at_n, pass_at_n_curve, pass_at_n_monte_carlo
from reprolib.penalties import dco_gradient_factor, dco_loss, log1mexp


def test_pass_at_n_closed_form_and_edges():
    p = torch.tensor([0.0, 1e-6, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    for n in (1, 4, 64):
        direct = 1 - (1 - p) ** n
        assert torch.allclose(pass_at_n(p, n), direct, rtol=1e-6, atol=1e-15)   # (1-p)^n loses digits at tiny p
    assert torch.equal(pass_at_n(p, 1), p)
    assert abs(float(pass_at_n(torch.tensor(1e-12, dtype=torch.float64), 64)) - 64e-12) < 1e-20   # N p for small p


def test_pass_at_n_curve_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    logits = 2.5 * torch.randn(400, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(6, (400,), generator=g)
    probs = logits.softmax(-1)
    exact = pass_at_n_curve(logits, labels, [1, 3, 16])
    assert torch.allclose(exact[0], probs[torch.arange(400), labels].mean())
    for i, n in enumerate((1, 3, 16)):
        est, se = pass_at_n_monte_carlo(probs, labels, n, 100_000, g)
        assert abs(est - float(exact[i])) < 3 * se + 1e-12, (n, est, float(exact[i]), se)


def test_curve_is_monotone_and_stacks():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, 10, generator=g)
    labels = torch.randint(10, (50,), generator=g)
    curve = pass_at_n_curve(logits, labels, [1, 2, 8, 64, 256])
    assert curve.shape == (3, 5) and bool((curve.diff(dim=-1) >= 0).all())
    assert torch.allclose(curve[1], pass_at_n_curve(logits[1], labels, [1, 2, 8, 64, 256]))
    assert torch.allclose(correct_probability(logits, labels)[2], logits[2].softmax(-1)[torch.arange(50), labels])


def test_log1mexp():
    a = -torch.logspace(-12, 2, 60, dtype=torch.float64)
    assert torch.allclose(log1mexp(a), torch.log(1 - torch.exp(a)), rtol=1e-6)


def test_dco_equals_closed_form_and_ce_at_n1():
    g = torch.Generator().manual_seed(2)
    logits = 4 * torch.randn(200, 10, generator=g, dtype=torch.float64)
    labels = torch.randint(10, (200,), generator=g)
    p = logits.softmax(-1)[torch.arange(200), labels]
    for n in (1, 4, 64):
        assert torch.allclose(dco_loss(logits, labels, n), -torch.log(1 - (1 - p) ** n), rtol=1e-7)   # the p < 1e-9 branch: error <= N p / 2
    assert torch.allclose(dco_loss(logits, labels, 1), F.cross_entropy(logits, labels, reduction="none"), rtol=1e-9)


@pytest.mark.parametrize("n", [1, 4, 64])
def test_dco_gradient_is_ce_gradient_times_factor(n):
    g = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(100, 10, generator=g, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(10, (100,), generator=g)
    grad_dco, = torch.autograd.grad(dco_loss(logits, labels, n).sum(), logits)
    grad_ce, = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), logits)
    p = logits.detach().softmax(-1)[torch.arange(100), labels]
    factor = dco_gradient_factor(p, n)
    assert torch.allclose(grad_dco, factor[:, None] * grad_ce, rtol=1e-8, atol=1e-12)
    assert bool(((factor > 0) & (factor <= 1 + 1e-12)).all())


def test_dco_factor_limits():
    p = torch.tensor([1e-8, 0.5, 1 - 1e-8], dtype=torch.float64)
    f = dco_gradient_factor(p, 16)
    assert abs(float(f[0]) - 1) < 1e-6                        # p -> 0: the CE gradient
    assert abs(float(f[1]) - 16 * 0.5 ** 16 / (1 - 0.5 ** 16)) < 1e-12
    assert float(f[2]) < 1e-100                                # p -> 1: no pull towards more confidence


def test_dco_is_finite_at_extreme_confidence_float32():
    logits = torch.tensor([[60.0, 0.0, 0.0], [-60.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 0])
    loss = dco_loss(logits, labels, 64)
    loss.sum().backward()
    assert bool(torch.isfinite(loss).all()) and bool(torch.isfinite(logits.grad).all())
    assert float(loss[0].detach()) < 1e-20                              # p ~ 1: pass@64 ~ 1
    p1 = math.exp(-60) / (math.exp(-60) + 2)
    assert abs(float(loss[1]) - (-math.log(64 * p1))) < 1e-4   # p ~ 0: -log(N p)
    assert abs(float(loss[2]) + math.log(1 - (2 / 3) ** 64)) < 1e-6
