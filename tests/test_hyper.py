"""Self-Tuning Networks (reprolib.hyper): the STN layer against the paper's equation written per
example, the perturbation and entropy against torch.distributions, and the whole alternation on a
bilevel toy whose answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F

from reprolib import hyper
from reprolib.hyper import Hyperparameter, STNLinear, STNMLP, STNTuner


def layer_params(layer, r=None):
    names = ("weight", "bias", "weight_h", "bias_h", "gate", "scale")
    return {n: (getattr(layer, n)[r] if r is not None else getattr(layer, n)).detach() for n in names}


def paper_layer(x, h, p):
    """Eq. 10-11 one example at a time: s (W x + b) + (U_w h) * (W_h x) + (U_b h) * b_h."""
    out = p["weight"].shape[0]
    rows = []
    for xi, hi in zip(x, h):
        g = p["gate"] @ hi
        rows.append(p["scale"] * F.linear(xi, p["weight"], p["bias"]) + g[:out] * F.linear(xi, p["weight_h"])
                    + g[out:] * p["bias_h"])
    return torch.stack(rows)


def test_stn_layer_is_the_papers_equation():
    torch.manual_seed(0)
    layer = STNLinear(7, 5, n_hparams=3)
    with torch.no_grad():
        layer.gate.normal_()      # gates of size 1, not 0.01, so a wrong gate would show
        layer.scale.fill_(1.7)
    x, h = torch.randn(11, 7), torch.randn(11, 3)
    torch.testing.assert_close(layer(x, h), paper_layer(x, h, layer_params(layer)), rtol=1e-5, atol=1e-5)


def test_stacked_layer_equals_its_slices():
    torch.manual_seed(1)
    layer = STNLinear(6, 4, n_hparams=2, stack=(3,))
    with torch.no_grad():
        layer.gate.normal_()
    x, h = torch.randn(3, 9, 6), torch.randn(3, 9, 2)
    y = layer(x, h)
    for r in range(3):
        torch.testing.assert_close(y[r], paper_layer(x[r], h[r], layer_params(layer, r)), rtol=1e-5, atol=1e-5)
    # one λ shared by a run's batch ([S, 1, H]) broadcasts like repeating it per example
    torch.testing.assert_close(layer(x, h[:, :1]), layer(x, h[:, :1].expand(-1, 9, -1)))


def test_plain_layer_and_zero_gate():
    torch.manual_seed(2)
    plain = STNLinear(5, 3)
    assert sorted(n for n, _ in plain.named_parameters()) == ["bias", "weight"]
    x = torch.randn(4, 5)
    torch.testing.assert_close(plain(x), F.linear(x, plain.weight, plain.bias))
    stn = STNLinear(5, 3, n_hparams=2)
    with torch.no_grad():
        stn.gate.zero_()
        stn.scale.fill_(2.0)
    torch.testing.assert_close(stn(x, torch.randn(4, 2)), 2 * F.linear(x, stn.weight, stn.bias))


def test_init_follows_the_official_code():
    layer = STNLinear(400, 300, n_hparams=4)
    bound = 400 ** -0.5
    for w in (layer.weight, layer.bias, layer.weight_h, layer.bias_h):
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert abs(layer.gate.std().item() - 0.01) < 1e-3 and torch.all(layer.scale == 1)


def test_dropout_rate_per_example():
    torch.manual_seed(3)
    x = torch.ones(2, 3, 20000, requires_grad=True)
    p = torch.tensor([[0.0, 0.3, 0.8], [0.5, 0.1, 0.0]], requires_grad=True)
    y = hyper.dropout(x, p)
    dropped = (y == 0).float().mean(-1)
    torch.testing.assert_close(dropped, p.detach(), atol=0.015, rtol=0)
    torch.testing.assert_close(y.mean(-1), torch.ones(2, 3), atol=0.06, rtol=0)    # inverted: E[y] = x
    assert torch.equal(y[0, 0], x[0, 0]) and torch.equal(y[1, 2], x[1, 2])        # rate 0 is the identity
    y.sum().backward()
    assert p.grad is None and x.grad is not None                                                          # no gradient to the rate


def test_scale_jitter_range():
    torch.manual_seed(4)
    x = torch.ones(2, 5000, 3)
    s = torch.tensor([[0.0], [0.25]])
    y = hyper.scale_jitter(x, s)
    assert torch.equal(y[0], x[0])
    assert y[1].min() >= 1 / 1.25 - 1e-6 and y[1].max() <= 1.25 + 1e-6
    assert torch.equal(y[1, :, 0], y[1, :, 2])          # one factor per example
    assert y[1].min() < 0.82 and y[1].max() > 1.23


def test_perturbation_and_entropy():
    torch.manual_seed(5)
    lam, sigma = torch.tensor([[0.5, -2.0]]), torch.tensor([[0.3, 1.5]])
    rho = torch.log(torch.expm1(sigma))
    samples = hyper.perturb(lam, rho, 200_000)
    assert samples.shape == (1, 200_000, 2)
    torch.testing.assert_close(samples.mean(1), lam, atol=0.01, rtol=0)
    torch.testing.assert_close(samples.std(1), sigma, atol=0.01, rtol=0)
    oracle = torch.distributions.Normal(lam, sigma).entropy().sum(-1)
    torch.testing.assert_close(hyper.entropy_term(rho), oracle)


def test_hyperparameter_bounds_round_trip():
    spec = Hyperparameter("dropout", 0.0, 0.9, 0.05)
    lam = spec.unconstrain(0.05)
    assert math.isclose(lam.item(), math.log(0.05 / 0.85), rel_tol=1e-5)
    assert math.isclose(spec.constrain(lam).item(), 0.05, rel_tol=1e-5)
    assert spec.constrain(torch.tensor(-50.0)).item() == pytest.approx(0.0, abs=1e-12)
    assert spec.constrain(torch.tensor(50.0)).item() == pytest.approx(0.9)


def test_alternation_pattern():
    assert [hyper.is_hyper_step(k) for k in range(6)] == [False, False, True, False, False, True]
    assert [hyper.is_hyper_step(k, 1, 2) for k in range(6)] == [False, True, True, False, True, True]


def bilevel_toy(gated: bool, steps: int = 3000):
    """Training loss (f(λ̃) - v(λ̃))², so the best response is f*(λ) = v(λ) with v in (-5, 5);
    validation loss (f(λ) - 3)², which does not depend on λ directly. The answer is v(λ) = 3."""
    torch.manual_seed(0)
    spec = Hyperparameter("v", -5.0, 5.0, 0.0)
    tuner = STNTuner([spec], lr=0.05, sigma0=0.5, tau=1e-3)
    layer = STNLinear(1, 1, n_hparams=1 if gated else 0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9)
    one = torch.ones(16, 1)
    f = lambda lam_t: layer(one[: lam_t.shape[-2]], lam_t)[..., 0]
    for k in range(steps):
        if k >= 200 and hyper.is_hyper_step(k - 200):
            tuner.step(lambda lam_t: (f(lam_t) - 3).square().mean(), n=16)
        else:
            lam_t, v_t = tuner.sample(16)
            opt.zero_grad()
            (f(lam_t) - v_t[..., 0]).square().mean().backward()
            opt.step()
    return tuner.values().item()


def test_tuner_solves_a_bilevel_toy_through_the_response():
    assert abs(bilevel_toy(gated=True) - 3.0) < 0.25
    # without the gate the net cannot respond to λ, the validation loss has no gradient in λ,
    # and λ stays at its start: the hyperparameter moves only through the best-response.
    assert abs(bilevel_toy(gated=False, steps=600) - 0.0) < 1e-6


def test_tuner_step_leaves_weight_gradients_alone_and_stacks_independently():
    torch.manual_seed(6)
    specs = [Hyperparameter("a", 0.0, 0.9, 0.1), Hyperparameter("b", 0.0, 0.3, 0.05)]
    net = STNMLP([4, 8, 3], n_hparams=2, stack=(2,))
    x, y = torch.randn(2, 10, 4), torch.randint(0, 3, (2, 10))
    loss_fn = lambda lam_t: F.cross_entropy(net(x, lam_t).flatten(0, 1), y.flatten(), reduction="none").view(2, 10).mean(1)
    tuner = STNTuner(specs, stack=(2,), generator=torch.Generator().manual_seed(0))
    before = tuner.lam.detach().clone()
    tuner.step(loss_fn, n=10)
    assert all(p.grad is None for p in net.parameters())
    assert not torch.equal(before, tuner.lam.detach())
    # the per-run losses are summed: run 1's λ gradient does not depend on run 0's loss
    tuner2 = STNTuner(specs, stack=(2,), generator=torch.Generator().manual_seed(0))
    tuner2.step(lambda lam_t: loss_fn(lam_t) * torch.tensor([5.0, 1.0]), n=10)
    torch.testing.assert_close(tuner.lam.grad[1], tuner2.lam.grad[1])
    assert not torch.allclose(tuner.lam.grad[0], tuner2.lam.grad[0])


def test_mlp_dropout_only_in_training():
    torch.manual_seed(7)
    net = STNMLP([5, 16, 16, 2], n_hparams=0, stack=(3,))
    x = torch.randn(3, 8, 5)
    p = [torch.full((3, 1), 0.5)] * 3
    net.eval()
    torch.testing.assert_close(net(x, p_drop=p), net(x))
    net.train()
    assert not torch.allclose(net(x, p_drop=p), net(x))
