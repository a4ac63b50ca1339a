"""Re-initialisation (fresh_init, shrink_perturb) against its closed form and invariants; a model
stack with per-member learning rates against each member trained alone with torch's optimizers."""
import copy
import math

import pytest
import torch
from torch import nn

from reprolib.models import MLP, ModelStack, SmallCNN, fresh_init, shrink_perturb
from reprolib.optim import member_step


def mlp(seed, hidden=(100, 100)):
    torch.manual_seed(seed)
    return MLP(784, list(hidden), 10)


def cnn(seed, **kw):
    torch.manual_seed(seed)
    return SmallCNN(1, 10, widths=(4, 8), hidden=16, **kw)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("make", [mlp, cnn])
def test_closed_form_with_a_given_fresh_model(make):
    # the official run.py: new_init = a freshly built net; p1.data = shrink * p2.data + perturb * p1.data
    model, fresh = make(0), make(1)
    theta, theta_fresh = params(model), params(fresh)
    lam, sigma = 0.4, 0.1
    shrink_perturb(model, lam, sigma, fresh=fresh)
    for p, t, f in zip(model.parameters(), theta, theta_fresh):
        expected = lam * t.double() + sigma * f.double()
        assert torch.allclose(p.double(), expected, rtol=0, atol=1e-7)
    assert all(torch.equal(p, f) for p, f in zip(fresh.parameters(), theta_fresh)), "the noise source is not modified"


@pytest.mark.parametrize("make", [mlp, cnn])
def test_shrink_one_noise_zero_is_the_warm_start_bitwise(make):
    model = make(0)
    before = params(model)
    shrink_perturb(model, 1.0, 0.0, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("make", [mlp, cnn])
def test_shrink_zero_noise_one_is_a_fresh_draw_bitwise(make):
    model = make(0)
    trained = params(model)
    fresh = fresh_init(model, torch.Generator().manual_seed(7))
    shrink_perturb(model, 0.0, 1.0, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(p, f) for p, f in zip(model.parameters(), fresh.parameters()))
    assert not any(torch.equal(p, t) for p, t in zip(model.parameters(), trained))


def test_fresh_init_is_seeded_by_the_generator_and_leaves_the_model_alone():
    model = mlp(0)
    before = params(model)
    a, b = (fresh_init(model, torch.Generator().manual_seed(3)) for _ in range(2))
    c = fresh_init(model, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not any(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    state = torch.random.get_rng_state()
    fresh_init(model, torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.random.get_rng_state()), "a seeded draw must not consume the global RNG"


def test_fresh_init_redraws_every_parameter_from_the_default_initialisation():
    model = mlp(0, hidden=(512, 256))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)                                   # "trained" values that must not survive
    fresh = fresh_init(model, torch.Generator().manual_seed(0))
    for layer in (m for m in fresh.modules() if isinstance(m, nn.Linear)):
        bound = 1 / math.sqrt(layer.in_features)           # nn.Linear's default: U(-1/sqrt(fan_in), +)
        for p in (layer.weight, layer.bias):
            assert p.abs().max() <= bound and not (p == 7.0).any()
        var = layer.weight.var().item()
        assert abs(var / (bound ** 2 / 3) - 1) < 0.05, var


def test_the_perturbation_is_independent_of_the_weights_and_has_the_init_scale():
    lam, sigma = 0.6, 0.3
    a, b = mlp(0, hidden=(512, 256)), mlp(1, hidden=(512, 256))
    ta, tb = params(a), params(b)
    shrink_perturb(a, lam, sigma, generator=torch.Generator().manual_seed(11))
    shrink_perturb(b, lam, sigma, generator=torch.Generator().manual_seed(11))
    for pa, pb, xa, xb, layer in zip(a.parameters(), b.parameters(), ta, tb, [m for m in a.modules()
                                                                            if isinstance(m, nn.Linear)
                                                                            for _ in range(2)]):
        noise_a, noise_b = (pa - lam * xa) / sigma, (pb - lam * xb) / sigma
        assert torch.allclose(noise_a, noise_b, atol=1e-5)  # the same fresh draw whatever the weights
        if pa.dim() == 2:
            bound = 1 / math.sqrt(layer.in_features)
            assert abs(noise_a.var().item() / (bound ** 2 / 3) - 1) < 0.05
            assert abs(noise_a.mean().item()) < 0.05 * bound


def test_buffers_come_from_the_fresh_model():
    model = cnn(0, norm="batch")
    with torch.no_grad():
        model.norm1.running_mean.fill_(5.0)
        model.norm1.running_var.fill_(9.0)
    shrink_perturb(model, 0.5, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.norm1.running_mean, torch.zeros_like(model.norm1.running_mean))
    assert torch.equal(model.norm1.running_var, torch.ones_like(model.norm1.running_var))


def test_modules_without_reset_parameters_are_refused():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.gain * x

    with pytest.raises(ValueError, match="reset_parameters"):
        shrink_perturb(nn.Sequential(nn.Linear(3, 3), Scale()), 0.5, 0.1)
    with pytest.raises(ValueError, match="same parameters"):
        shrink_perturb(mlp(0), 0.5, 0.1, fresh=mlp(0, hidden=(100,)))


@pytest.mark.parametrize("make", [mlp, cnn])
def test_stack_forward_equals_each_member(make):
    models = [make(s) for s in range(3)]
    stack = ModelStack(models)
    x = torch.randn(3, 5, 1, 28, 28)
    out = stack(x)
    shared = stack(x[0], shared=True)
    for r, m in enumerate(models):
        assert torch.allclose(out[r], m(x[r]), atol=1e-5)
        assert torch.allclose(shared[r], m(x[0]), atol=1e-5)


def test_unstack_and_load_round_trip():
    models = [cnn(s) for s in range(3)]
    stack = ModelStack(models)
    back = stack.unstack()
    for m, b in zip(models, back):
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), b.parameters()))
    shrink_perturb(back[1], 0.0, 1.0, generator=torch.Generator().manual_seed(0))
    stack.load(back)
    again = stack.unstack()
    assert all(torch.equal(p, q) for p, q in zip(again[1].parameters(), back[1].parameters()))
    assert all(torch.equal(p, q) for p, q in zip(again[0].parameters(), models[0].parameters()))
    with pytest.raises(ValueError, match="same architecture"):
        ModelStack([mlp(0), mlp(1, hidden=(100,))])


@pytest.mark.parametrize("opt", ["adam", "sgd_momentum"])
def test_member_rates_equal_separate_runs_and_zero_freezes(opt):
    rates = [1e-3, 3e-3, 0.0] if opt == "adam" else [0.05, 0.1, 0.0]
    make_opt = {"adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr),
                "sgd_momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9)}[opt]
    models = [mlp(s, hidden=(32,)) for s in range(3)]
    alone = [copy.deepcopy(m) for m in models]
    start = [params(m) for m in models]
    stack = ModelStack(models)
    stacked_opt = make_opt(stack.parameters(), 1.0)
    opts = [make_opt(m.parameters(), lr) for m, lr in zip(alone, rates)]
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        x, y = torch.randn(3, 16, 784, generator=g), torch.randint(0, 10, (3, 16), generator=g)
        loss = nn.functional.cross_entropy(stack(x).flatten(0, 1), y.flatten(), reduction="none").view(3, 16).mean(1)
        loss.sum().backward()
        member_step(stacked_opt, torch.tensor(rates))
        stacked_opt.zero_grad()
        for r, (m, o) in enumerate(zip(alone, opts)):
            if rates[r]:
                nn.functional.cross_entropy(m(x[r]), y[r]).backward()
                o.step()
                o.zero_grad()
    for r, (m, s) in enumerate(zip(alone, stack.unstack())):
        diff = max((p - q).abs().max().item() for p, q in zip(m.parameters(), s.parameters()))
        assert diff < 1e-6, (r, diff)
    frozen = stack.unstack()[2]
    assert all(torch.equal(p, q) for p, q in zip(frozen.parameters(), start[2]))
    moved = max((p - q).abs().max().item() for p, q in zip(stack.unstack()[0].parameters(), start[0]))
    assert moved > 1e-3


def test_member_step_needs_lr_one():
    stack = ModelStack([mlp(0, hidden=(8,)), mlp(1, hidden=(8,))])
    opt = torch.optim.Adam(stack.parameters(), lr=1e-3)
    stack(torch.randn(2, 4, 784)).sum().backward()
    with pytest.raises(ValueError, match="lr=1.0"):
        member_step(opt, torch.tensor([1e-3, 1e-3]))
