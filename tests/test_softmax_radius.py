"""The softmax step radius (reprolib.metrics.softmax_radius) and the rho_a controller
(reprolib.optim.RadiusClip) against closed forms, polynomial roots, finite differences and
independent series expansions."""
import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.special import bernoulli
from torch.func import functional_call

from reprolib import metrics, models
from reprolib.optim import RadiusClip


def exact_radius_by_roots(z, n, u):
    """rho* when the slopes are integers times u: F(t) = sum_k e^{z_k} q^{n_k} with q = e^{u t} is a
    polynomial in q; every t with e^{u t} = q is (log q + 2 pi i m) / u."""
    coef = np.zeros(n.max() + 1)
    np.add.at(coef, n, np.exp(z))
    ts = [(np.log(q + 0j) + 2j * np.pi * m) / u for q in np.roots(coef[::-1]) for m in range(-4, 5)]
    return float(np.abs(ts).min())


@pytest.mark.parametrize("margin,spread", [(0.0, 1.0), (2.0, 3.0), (-5.0, 0.5), (10.0, 2.0), (0.3, -4.0)])
def test_binary_radius_is_the_nearest_zero(margin, spread):
    rho = metrics.binary_radius(margin, spread)
    # Theorem 4.3: F(t) = w1 + w2 e^{Delta t}, delta = log(w1 / w2), vanishes at t = (delta + i pi) / Delta
    ghost = (margin + 1j * np.pi) / spread
    assert abs(np.exp(margin) + np.exp(spread * ghost)) < 1e-12 * np.exp(margin)
    assert abs(abs(ghost) - rho) < 1e-12 * rho
    got = metrics.partition_radius([margin, 0.0], [0.0, spread])[0]
    assert abs(got - rho) < 1e-9 * rho


def test_binary_bound_is_tight_only_at_zero_margin():
    assert math.isclose(metrics.binary_radius(0.0, 2.0), math.pi / 2.0)
    assert metrics.binary_radius(3.0, 2.0) > math.pi / 2.0 * 1.3


def test_partition_radius_matches_polynomial_roots_and_the_bound():
    rng = np.random.default_rng(0)
    for _ in range(40):
        K = int(rng.integers(3, 10))
        n = rng.integers(0, 7, K)
        n[:2] = 0, 6
        u, z = rng.uniform(0.2, 3.0), rng.normal(0, 2.5, K)
        exact = exact_radius_by_roots(z, n, u)
        got = metrics.partition_radius(z, n * u)[0]
        assert abs(got - exact) < 1e-8 * exact
        assert got >= math.pi / (6 * u) * (1 - 1e-12)      # Theorem 4.6: rho* >= pi / Delta_a


def test_partition_radius_with_a_dominant_middle_class():
    # F = 1 + e^4 q + q^2: the two outer classes never dominate together; compare with the roots
    z, n, u = np.array([0.0, 4.0, 0.0]), np.array([0, 1, 2]), 1.0
    assert abs(metrics.partition_radius(z, n * u)[0] - exact_radius_by_roots(z, n, u)) < 1e-8


def test_log_partition_taylor_matches_bernoulli_closed_form():
    # log(1 + e^t) = log 2 + t/2 + sum_n (2^{2n} - 1) B_{2n} t^{2n} / (2n (2n)!)
    order = 40
    B = bernoulli(order)
    ref = np.zeros(order + 1)
    ref[0], ref[1] = math.log(2), 0.5
    for n in range(1, order // 2 + 1):
        ref[2 * n] = (2 ** (2 * n) - 1) * B[2 * n] / (2 * n * math.factorial(2 * n))
    got = metrics.log_partition_taylor([0.0, 0.0], [1.0, 0.0], order)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-300)


def test_log_partition_taylor_matches_mpmath():
    rng = np.random.default_rng(3)
    z, a = rng.normal(0, 1.5, 6), rng.normal(0, 1, 6)
    mpmath.mp.dps = 40
    ref = mpmath.taylor(lambda t: mpmath.log(sum(mpmath.exp(mpmath.mpf(zk) + mpmath.mpf(ak) * t)
                                                 for zk, ak in zip(z, a))), 0, 12)
    got = metrics.log_partition_taylor(z, a, 12)
    np.testing.assert_allclose(got, [float(c) for c in ref], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_taylor_series_converges_inside_and_diverges_outside_the_radius(seed):
    """Cauchy-Hadamard, numerically: partial sums of the log-partition series approach log F at
    0.9 rho* and run away from it at 1.1 rho*, with rho* from the zero finder."""
    rng = np.random.default_rng(seed)
    z, a = rng.normal(0, 3, 10), rng.normal(0, 1, 10)
    rho = metrics.partition_radius(z, a)[0]
    c = metrics.log_partition_taylor(z, a, 120)
    logF = lambda t: np.log(np.exp(z + a * t).sum())
    for sign in (1, -1):
        inside = np.abs(metrics.taylor_partial_sums(c, 0.9 * sign * rho).real - logF(0.9 * sign * rho))
        outside = np.abs(metrics.taylor_partial_sums(c, 1.1 * sign * rho).real - logF(1.1 * sign * rho))
        assert inside[120] < 1e-3 * inside[30] and inside[120] < 1e-5
        assert outside[120] > 100 * outside[30] and outside[120] > 10
    # the root test |c_n|^(-1/n) tends to rho* (slowly: a log singularity has |c_n| ~ 1 / (n rho*^n))
    n = np.arange(80, 121)
    est = 1 / np.max(np.abs(c[n]) ** (1 / n) * n ** (1 / n))
    assert abs(est - rho) < 0.05 * rho


def _digits_like(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


ARCHS = {
    "mlp": lambda: models.MLP(64, [32, 32], 10, activation="gelu"),
    "mlp_ln": lambda: models.MLP(64, [32, 32], 10, activation="gelu", norm="layer"),
    "cnn": lambda: models.SmallCNN(widths=(4, 8), hidden=16, image_size=8, activation="gelu"),
    "vit": lambda: models.TinyViT(d_model=16, depth=1, heads=2),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_jvp_matches_central_differences(arch):
    torch.manual_seed(0)
    model = ARCHS[arch]().double().eval()
    x, _ = _digits_like()
    params = dict(model.named_parameters())
    v = metrics.random_direction(params, torch.Generator().manual_seed(1))
    z, a = metrics.logit_jvp(model, params, v, x)
    eps = 1e-5
    plus = functional_call(model, {k: p + eps * v[k] for k, p in params.items()}, (x,))
    minus = functional_call(model, {k: p - eps * v[k] for k, p in params.items()}, (x,))
    fd = (plus - minus) / (2 * eps)
    assert torch.allclose(z, model(x))
    assert (fd - a).abs().max() < 1e-7 * a.abs().max()
    # the bound is the same for v and -v (section 3: sign invariance)
    _, a_neg = metrics.logit_jvp(model, params, {k: -t for k, t in v.items()}, x)
    assert math.isclose(metrics.softmax_radius(a), metrics.softmax_radius(a_neg), rel_tol=1e-12)


def test_softmax_radius_of_a_linear_model_is_exact():
    """For logits W x the logits are exactly linear in the step (Appendix 1.1.1): rho_a is pi over
    the largest spread of (V x)_k, and the exact radius of each sample is at least that."""
    torch.manual_seed(0)
    model = models.MLP(64, [], 10).double()
    x, _ = _digits_like(16)
    params = dict(model.named_parameters())
    v = metrics.random_direction(params, torch.Generator().manual_seed(2))
    z, a = metrics.logit_jvp(model, params, v, x)
    manual = x.flatten(1) @ v["net.0.weight"].T + v["net.0.bias"]
    assert torch.allclose(a, manual)
    rho_a = metrics.softmax_radius(a)
    assert math.isclose(rho_a, math.pi / float((manual.amax(1) - manual.amin(1)).max()))
    exact = metrics.partition_radius(z, a)
    assert exact.min() >= rho_a * (1 - 1e-9)
    assert np.all(exact >= math.pi / metrics.logit_spread(a).numpy() * (1 - 1e-9))


def test_loss_along_line_matches_a_loop():
    torch.manual_seed(0)
    model = models.SmallCNN(widths=(4, 8), hidden=16, image_size=8, norm="batch").eval()
    x, y = _digits_like(32)
    x = x.float()
    params = dict(model.named_parameters())
    v = metrics.random_direction(params, torch.Generator().manual_seed(3))
    taus = torch.tensor([0.0, 0.1, 1.0, 10.0, 100.0])
    loss, acc = metrics.loss_along_line(model, params, v, taus, x, y, temperature=2.0, chunk=2)
    for i, t in enumerate(taus):
        logits = functional_call(model, {k: p + t * v[k] for k, p in params.items()}, (x,)) / 2.0
        assert torch.allclose(loss[i], torch.nn.functional.cross_entropy(logits, y), rtol=1e-5)
        assert acc[i] == (logits.argmax(1) == y).float().mean()


def _adam_pair(lr, seed=0):
    torch.manual_seed(seed)
    model = models.MLP(64, [32], 10, activation="gelu")
    twin = models.MLP(64, [32], 10, activation="gelu")
    twin.load_state_dict(model.state_dict())
    return model, twin, torch.optim.Adam(model.parameters(), lr=lr), torch.optim.Adam(twin.parameters(), lr=lr)


def _backward(model, x, y):
    torch.nn.functional.cross_entropy(model(x), y).backward()


def test_radius_clip_caps_the_step_at_rho_a_along_it():
    x, y = _digits_like(128)
    x = x.float()
    model, twin, opt, twin_opt = _adam_pair(lr=10.0)        # a huge lr: the cap binds
    ctrl = RadiusClip(opt, model)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    _backward(model, x, y)
    _backward(twin, x, y)
    info = ctrl.step(x)
    twin_opt.step()
    step = {k: p.detach() - before[k] for k, p in model.named_parameters()}
    proposed = {k: p.detach() - before[k] for k, p in twin.named_parameters()}
    norm = lambda d: float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))
    assert math.isclose(info["proposed"], norm(proposed), rel_tol=1e-5)
    # the taken step is the proposed one, shortened to rho_a along its own direction
    model.eval()
    _, a = metrics.logit_jvp(model, before, metrics.unit_direction(proposed), x)
    rho = metrics.softmax_radius(a)
    assert math.isclose(norm(step), rho, rel_tol=1e-5) and math.isclose(info["r"], 1.0, rel_tol=1e-9)
    cos = sum((step[k].double() * proposed[k].double()).sum() for k in step) / (norm(step) * norm(proposed))
    assert float(cos) > 1 - 1e-6


def test_radius_clip_leaves_small_steps_alone():
    x, y = _digits_like(128)
    x = x.float()
    model, twin, opt, twin_opt = _adam_pair(lr=1e-5)
    ctrl = RadiusClip(opt, model)
    for _ in range(3):
        for m, o in ((model, ctrl), (twin, twin_opt)):
            o.zero_grad()
            _backward(m, x, y)
        info = ctrl.step(x)
        twin_opt.step()
        assert info["r"] < 1
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_tiny_vit_tokens_are_rows():
    model = models.TinyViT()
    x = torch.zeros(2, 1, 8, 8)
    x[1, 0, 3] = 1.0                                          # one bright row
    assert model(x).shape == (2, 10)
    tokens = model.embed.in_features
    assert tokens == 8 and model.pos.shape == (1, 9, 32)
    with pytest.raises(ValueError):
        models.TinyViT(patch=(3, 8))


def test_mlp_and_cnn_norm_options():
    mlp = models.MLP(64, [16, 16], 10, norm="layer", activation="gelu")
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in mlp.modules()) == 2
    cnn = models.SmallCNN(widths=(4, 8), hidden=16, image_size=8, norm="batch")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.modules()) == 2
    assert cnn(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError):
        models.MLP(4, [4], 2, norm="batch")
