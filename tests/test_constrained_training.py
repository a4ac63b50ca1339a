"""The official decay-step-project update (arXiv 2507.13338), the stacked bias-free MLP and its
Lipschitz bound: against hand computation, torch.optim.AdamW / torch.optim.Muon, autograd Jacobians
and the library MLP."""
import math

import numpy as np
import pytest
import torch

from reprolib.kernels import newton_schulz_schedule
from reprolib.metrics import (frontier_gap, lipschitz_bound, local_lipschitz, pareto_frontier, rms_operator_norm,
                              shared_bound_grid)
from reprolib.models import MLP, StackedMLP, relu_half
from reprolib.optim import ConstrainedOptimizer, project_rms, soft_cap_coupling


def stack(R=3, dims=(12, 16, 8), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(R, o, i, generator=g, dtype=dtype) / math.sqrt(i))
            for i, o in zip(dims[:-1], dims[1:])]


def set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


# ---- one step, written out ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["muon", "adam"])
def test_one_step_is_decay_step_project(method):
    params = stack()
    before = [p.detach().clone() for p in params]
    lr, wd, w_max = np.array([0.1, 0.2, 0.05]), np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0, 0.7])
    opt = ConstrainedOptimizer(params, lr, method=method, project=["none", "soft_cap", "svd_clip"], w_max=w_max,
                               wd=wd, beta1=0.9, beta2=0.95)
    set_grads(params, 1)
    grads = [p.grad.clone() for p in params]
    opt.step()
    tn = 1 / len(params)
    for W0, G, p in zip(before, grads, params):
        fo, fi = W0.shape[-2:]
        scale = math.sqrt(fo / fi)
        m = 0.1 * G                                                   # b1 M + (1 - b1) G from M = 0
        if method == "muon":
            D = newton_schulz_schedule(m) * scale * tn
        else:
            D = m / ((0.05 * G * G).sqrt() + 1e-12)                   # no bias correction
        W = W0 * torch.as_tensor(1 - wd * lr * tn)[:, None, None] - torch.as_tensor(lr)[:, None, None] * D
        alpha = soft_cap_coupling(w_max[1], wd[1] * lr[1] * tn, lr[1] * tn / scale)
        expected = torch.stack([W[0], project_rms(W[1], "soft_cap", alpha=alpha), project_rms(W[2], "svd_clip", w_max[2])])
        assert torch.allclose(p.detach(), expected, atol=1e-10)


def test_adam_direction_matches_torch_adamw_with_bias_correction_folded_into_the_lr():
    """torch's AdamW step is lr_t (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps): with
    lr_t = lr (1 - b1^t) / sqrt(1 - b2^t) and wd_t = wd lr tn / lr_t it is the official step."""
    b1, b2, lr, wd = 0.9, 0.95, 1e-2, 3.0
    ours, ref = stack(R=1, seed=3), stack(R=1, seed=3)
    opt = ConstrainedOptimizer(ours, lr, method="adam", wd=wd)
    tn = 1 / len(ours)
    torch_opt = torch.optim.AdamW(ref, lr=lr, betas=(b1, b2), eps=1e-30, weight_decay=0.0)
    for t in range(1, 6):
        set_grads(ours, t)
        set_grads(ref, t)
        lr_t = lr * (1 - b1 ** t) / math.sqrt(1 - b2 ** t)
        for g in torch_opt.param_groups:
            g["lr"], g["weight_decay"] = lr_t, wd * lr * tn / lr_t
        opt.step()
        torch_opt.step()
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9)


def test_muon_direction_is_torch_muons_polar_direction():
    """torch.optim.Muon with EMA momentum (nesterov=False) and many cubic Newton-Schulz steps gives the
    exact polar factor (in bf16): the official Muon's update points the same way, scaled by
    sqrt(fan_out / fan_in) tn."""
    ours, ref = stack(R=1, dims=(40, 24), seed=5, dtype=torch.float32), stack(R=1, dims=(40, 24), seed=5,
                                                                                dtype=torch.float32)
    ref2d = [torch.nn.Parameter(p.detach()[0].clone()) for p in ref]
    lr = 0.1
    opt = ConstrainedOptimizer(ours, lr, method="muon", beta1=0.9, target_norm=1.0)
    torch_opt = torch.optim.Muon(ref2d, lr=lr, weight_decay=0.0, momentum=0.9, nesterov=False,
                                 ns_coefficients=(1.5, -0.5, 0.0), ns_steps=60)   # wide: no lr adjustment
    for t in range(3):
        before, before_ref = ours[0].detach().clone(), ref2d[0].detach().clone()
        set_grads(ours, t)
        ref2d[0].grad = ours[0].grad[0].clone()
        opt.step()
        torch_opt.step()
        step_ours = (before - ours[0].detach())[0] / (lr * math.sqrt(24 / 40))
        step_ref = (before_ref - ref2d[0].detach()) / lr
        assert ((step_ours - step_ref).norm() / step_ref.norm()).item() < 3e-2   # bf16 reference


def test_a_stack_is_its_runs_side_by_side():
    """Three runs stacked equal the three runs alone (deterministic projections: none, soft cap)."""
    params = stack(R=3, seed=7)
    singles = [[torch.nn.Parameter(p.detach()[r:r + 1].clone()) for p in params] for r in range(3)]
    lr, w_max = [0.3, 0.1, 0.2], [1.0, 0.8, 2.0]
    proj = ["soft_cap", "none", "soft_cap"]
    opt = ConstrainedOptimizer(params, lr, project=proj, w_max=w_max)
    opts = [ConstrainedOptimizer(s, lr[r], project=proj[r], w_max=w_max[r]) for r, s in enumerate(singles)]
    for t in range(4):
        set_grads(params, 10 + t)
        for r, s in enumerate(singles):
            for p, q in zip(s, params):
                p.grad = q.grad[r:r + 1].clone()
        opt.step()
        for o in opts:
            o.step()
    for r, s in enumerate(singles):
        for p, q in zip(s, params):
            assert torch.allclose(p, q[r:r + 1], atol=1e-12)


def test_muon_with_soft_cap_keeps_every_layer_under_w_max():
    """The co-design: Muon's update has RMS -> RMS norm lr tn, so the coupled soft cap keeps every layer
    at or under w_max after every step (layers with fan_out <= fan_in, as in the MLP)."""
    torch.manual_seed(0)
    net = StackedMLP([64, 32, 32, 10], runs=4, generator=torch.Generator().manual_seed(0), device="cpu")
    net.double()
    w_max = np.array([0.5, 1.0, 2.0, 4.0])
    opt = ConstrainedOptimizer(net.parameters(), lr=0.3, project="soft_cap", w_max=w_max)
    x, y = torch.randn(64, 64, dtype=torch.float64), torch.randint(0, 10, (64,))
    for t in range(30):
        loss = torch.nn.functional.cross_entropy(net(x).flatten(0, 1), y.repeat(4), reduction="sum")
        loss.backward()
        opt.step()
        opt.zero_grad()
        if t >= 1:                                          # the init (RMS norm 1) starts above w_max = 0.5
            for W in net.weights:
                assert (rms_operator_norm(W) <= torch.as_tensor(w_max) * (1 + 1e-9)).all()


@pytest.mark.parametrize("iters,slack", [(300, 1e-4), (16, 0.05)])
def test_spectral_normalize_in_training_holds_the_cap_to_power_iteration_accuracy(iters, slack):
    """Near-converged power iteration (300 steps): the cap holds to 1e-4; the official 16 from a random start
    can fall short of sigma_1 and leave the norm a little above w_max (never below the true rescale)."""
    params = stack(R=2, seed=2)
    opt = ConstrainedOptimizer(params, lr=0.5, project="spec_normalize", w_max=[0.5, 1.0], power_iters=iters,
                               generator=torch.Generator().manual_seed(0))
    for t in range(5):
        set_grads(params, t)
        opt.step()
    for W in params:
        assert (rms_operator_norm(W) <= torch.tensor([0.5, 1.0], dtype=torch.float64) * (1 + slack)).all()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        ConstrainedOptimizer(stack(), 0.1, method="sgd")
    with pytest.raises(ValueError, match="stacks"):
        ConstrainedOptimizer([torch.nn.Parameter(torch.zeros(3, 4))], 0.1)
    with pytest.raises(ValueError, match="project"):
        ConstrainedOptimizer(stack(R=3), 0.1, project=["none", "soft_cap"])


# ---- the stacked MLP ----------------------------------------------------------------------------------
def test_stacked_mlp_is_the_library_mlp_without_biases():
    net = StackedMLP([20, 16, 16, 5], runs=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.weights[0].normal_()
    x = torch.randn(7, 20)
    out = net(x)
    for r in range(3):
        mlp = MLP(20, [16, 16], 5, bias=False)
        with torch.no_grad():
            for lin, W in zip([m for m in mlp.net if isinstance(m, torch.nn.Linear)], net.weights):
                lin.weight.copy_(W[r])
        assert torch.allclose(out[r], mlp(x), atol=1e-6)
        assert torch.allclose(net(x.expand(3, 7, 20))[r], out[r], atol=1e-6)


def test_official_init_zero_first_layer_and_rms_norm_one():
    net = StackedMLP([784, 256, 256, 10], runs=2, generator=torch.Generator().manual_seed(0))
    assert (net.weights[0] == 0).all()
    for W in net.weights[1:]:
        assert torch.allclose(rms_operator_norm(W), torch.ones(2, dtype=torch.float64), atol=2e-3)


def test_relu_half_passes_half_a_gradient_at_zero_so_a_zero_first_layer_learns():
    x = torch.zeros(3, requires_grad=True)
    relu_half(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 0.5))
    net = StackedMLP([8, 6, 4], runs=1, generator=torch.Generator().manual_seed(0))
    (net(torch.randn(5, 8)) * torch.randn(1, 5, 4)).sum().backward()
    assert net.weights[0].grad.abs().sum() > 0


# ---- Lipschitz bounds -------------------------------------------------------------------------------
def test_rms_operator_norm_and_the_product_bound():
    W1 = torch.diag(torch.tensor([3.0, 1.0]))                                    # 2 x 2: RMS norm 3
    W2 = torch.tensor([[2.0, 0.0]])                                              # 1 x 2: ||W||_2 = 2
    assert rms_operator_norm(W1) == pytest.approx(3.0)
    assert rms_operator_norm(W2) == pytest.approx(2.0 * math.sqrt(2))
    assert lipschitz_bound([W1, W2]).item() == pytest.approx(6 * math.sqrt(2))
    assert lipschitz_bound([W1, W2], norm="l2").item() == pytest.approx(6.0)


def test_bound_of_a_diverged_run_is_inf():
    W = torch.randn(2, 4, 4)
    W[1, 0, 0] = float("nan")
    b = lipschitz_bound([W])
    assert math.isfinite(b[0].item()) and b[1].item() == math.inf


def test_local_lipschitz_is_the_autograd_jacobian_norm_and_below_the_bound():
    net = StackedMLP([10, 12, 12, 3], runs=2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.weights[0].normal_(0, 0.5)
    x = torch.randn(6, 10)
    got = local_lipschitz(net.weights, x)
    for r in range(2):
        def f(v, r=r):
            return net(v[None])[r, 0]
        norms = [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(f, xi), 2).item() for xi in x]
        assert got[r].item() == pytest.approx(max(norms) * math.sqrt(10 / 3), rel=1e-6)
    assert (got <= lipschitz_bound(net.weights)).all()


def test_bound_certifies_every_pair_of_inputs():
    net = StackedMLP([10, 12, 3], runs=1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        net.weights[0].normal_()
    a, b = torch.randn(500, 10), torch.randn(500, 10)
    rms = lambda z: z.norm(dim=-1) / math.sqrt(z.size(-1))
    ratio = rms(net(a)[0] - net(b)[0]) / rms(a - b)
    assert ratio.max().item() <= lipschitz_bound(net.weights)[0].item()


# ---- frontiers ---------------------------------------------------------------------------------------
def test_pareto_frontier_is_the_best_value_at_or_below_each_bound():
    bounds, acc = np.array([1.0, 4.0, 2.0, 8.0]), np.array([0.5, 0.9, 0.7, 0.8])
    got = pareto_frontier(bounds, acc, [0.5, 1.0, 3.0, 5.0, 10.0])
    assert np.isnan(got[0]) and got[1:].tolist() == [0.5, 0.7, 0.9, 0.9]


def test_shared_grid_and_gap():
    grid = shared_bound_grid([[0.1, 10.0], [1.0, 100.0]], n=3)
    assert np.allclose(grid, [1.0, np.sqrt(10), 10.0])
    assert shared_bound_grid([[0.1, 0.5], [1.0, 2.0]]).size == 0
    seeds_a = np.array([[[1.0, 0.6], [10.0, 0.9]]] * 2)          # [seed, run, (bound, acc)]
    seeds_b = np.array([[[1.0, 0.5], [10.0, 0.7]]] * 2)
    gap = frontier_gap(seeds_a[..., 0], seeds_a[..., 1], [(seeds_b[..., 0], seeds_b[..., 1])], [1.0, 5.0, 10.0])
    assert np.allclose(gap, [(0.1 + 0.1 + 0.2) / 3] * 2)
    seeds_c = np.array([[[1.0, 0.65], [10.0, 0.6]]] * 2)         # above a's frontier at B < 10, below at 10
    env = frontier_gap(seeds_a[..., 0], seeds_a[..., 1], [(seeds_b[..., 0], seeds_b[..., 1]),
                                                           (seeds_c[..., 0], seeds_c[..., 1])], [1.0, 5.0, 10.0])
    assert np.allclose(env, [(-0.05 - 0.05 + 0.2) / 3] * 2)
