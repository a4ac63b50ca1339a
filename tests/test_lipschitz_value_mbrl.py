"""Library parts of the Lipschitz-value model-based RL notebook: the stacked spectrally normalised MLP
(against torch's spectral_norm), dynamics losses and ensemble sampling (against torch's Gaussian NLL and
sample statistics), the adversarial smoothness penalty (closed form), value iteration (closed forms),
fitted Q iteration (a known fixed point), the Bellman-gap bound, value gradients (finite differences)
and Spearman's rho (scipy)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from reprolib.metrics import lipschitz_bound, spearman
from reprolib.models import StackedSNMLP
from reprolib.penalties import adversarial_smoothness
from reprolib.rl import (AngleSpeedGrid, bellman_gap, bounded_logvar, dynamics_loss, fitted_q_iteration,
                         sample_ensemble, state_values, value_gradient_norm, value_iteration)


def _torch_sn_copy(net, r, l):
    """Member r's layer l as nn.Linear under torch's spectral_norm, with the stack's u, v and weights."""
    W = net.weights[l][r].detach().clone()
    lin = nn.Linear(W.size(1), W.size(0))
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(net.biases[l][r].detach())
    lin = nn.utils.parametrizations.spectral_norm(lin)
    sn = lin.parametrizations.weight[0]
    with torch.no_grad():
        sn._u.copy_(getattr(net, f"u{l}")[r])
        sn._v.copy_(getattr(net, f"v{l}")[r])
    return lin


def _reference_forward(net, refs, r, c, x):
    """Member r through torch's spectral_norm layers (hidden) and its plain output layer, scaled by c."""
    h = x
    for l in range(3):
        if l < 2 and math.isfinite(c):
            lin = refs[r][l]
            h = c * (lin(h) - lin.bias) + lin.bias            # torch normalises W to W / sigma; the scale c is ours
        else:
            h = nn.functional.linear(h, net.weights[l][r], net.biases[l][r])
        if l < 2:
            h = torch.relu(h)
    return h


def test_spectral_norm_matches_torch_in_value_gradient_and_buffers():
    scales = [1.0, 2.0, math.inf]
    net = StackedSNMLP([3, 8, 8, 2], [torch.Generator().manual_seed(s) for s in (0, 1, 2)], sn_scale=scales)
    refs = [[_torch_sn_copy(net, r, l) for l in range(2)] for r in range(3)]
    x = torch.randn(5, 3)
    for _ in range(3):                                   # several training forwards: the buffers must track torch's
        net.zero_grad()
        out = net(x)
        out.sum().backward()
        for r, c in enumerate(scales):
            for lin in refs[r]:
                lin.zero_grad()
            ref = _reference_forward(net, refs, r, c, x)
            torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=1e-5)
            ref.sum().backward()
            for l in range(2):
                if math.isfinite(c):
                    sn = refs[r][l].parametrizations.weight
                    torch.testing.assert_close(getattr(net, f"u{l}")[r], sn[0]._u, atol=1e-6, rtol=0)
                    # gradient through sigma, as torch's parametrization has it
                    torch.testing.assert_close(net.weights[l].grad[r], sn.original.grad, atol=1e-5, rtol=1e-4)
                    with torch.no_grad():               # keep the reference's weights equal to the (untrained) stack's
                        sn.original.copy_(net.weights[l][r])


def test_spectral_scale_bounds_sigma_and_plain_members_are_plain():
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    net = StackedSNMLP([3, 16, 16, 9], gens, sn_scale=[0.5, 1.0, 4.0, math.inf])
    x = torch.randn(32, 3)
    for _ in range(30):
        net(x)
    net.eval()
    for l in (0, 1):
        s = torch.linalg.matrix_norm(net.effective_weight(l).detach(), ord=2)
        torch.testing.assert_close(s[:3], torch.tensor([0.5, 1.0, 4.0]), rtol=1e-3, atol=0)
        assert torch.equal(net.effective_weight(l)[3], net.weights[l][3])
    # members with the same generator seed start equal; eval forwards leave the buffers alone
    a = StackedSNMLP([3, 4, 2], [torch.Generator().manual_seed(7) for _ in range(2)], sn_scale=[1.0, math.inf])
    assert torch.equal(a.weights[0][0], a.weights[0][1])
    u = a.u0.clone()
    a.eval()
    a(x)
    assert torch.equal(u, a.u0)


def test_dynamics_loss_and_sampling():
    out = torch.randn(2, 50, 4)
    y = torch.randn(50, 2)
    loss = dynamics_loss(out, y, torch.tensor([False, True]))
    mu, raw = out.chunk(2, -1)
    torch.testing.assert_close(loss[0], (mu[0] - y).pow(2).mean())
    var = bounded_logvar(raw[1]).exp()
    ref = nn.GaussianNLLLoss(full=False, eps=0)(mu[1], y, var)        # 0.5 (log var + (mu - y)^2 / var)
    torch.testing.assert_close(loss[1], 2 * ref)
    lv = bounded_logvar(torch.linspace(-50, 50, 101))
    assert lv.min() >= -10.0 - 1e-5 and lv.max() <= 0.5 + 1e-3
    # one deterministic member: the draw is its mean; a probabilistic member: mean and variance of the draws
    D = torch.zeros(3, 20000, 4)
    D[0, :, :2], D[1, :, :2], D[2, :, :2] = 1.0, 2.0, 5.0
    D[2, :, 2:] = math.log(4.0)
    g = torch.Generator().manual_seed(0)
    draw = sample_ensemble(D, torch.tensor([[0, 0], [0, 1], [2, 2]]), torch.tensor([False, False, True]), g)
    assert torch.equal(draw[0], torch.ones(20000, 2))
    assert set(draw[1].unique().tolist()) == {1.0, 2.0} and abs(draw[1].mean().item() - 1.5) < 0.02
    var = bounded_logvar(torch.tensor(math.log(4.0))).exp().item()      # the soft bound pulls it below 4
    assert abs(draw[2].mean().item() - 5.0) < 0.03 and abs(draw[2].var().item() / var - 1) < 0.03


def test_adversarial_smoothness_closed_form():
    # f(x) = a x in one dimension: the FGSM step from any start reaches the ball's edge, penalty a^2 eps^2
    a = torch.tensor([[2.0], [3.0], [1.0]])
    f = lambda x: x * a[:, None, :]                      # noqa: E731  [R, B, 1] -> [R, B, 1]
    eps = torch.tensor([0.1, 0.01, 0.0])
    p = adversarial_smoothness(f, torch.randn(8, 1), eps, torch.Generator().manual_seed(0))
    torch.testing.assert_close(p, (a[:, 0] * eps) ** 2)
    # a ReLU network: the penalty never exceeds the worst case over the ball's corners (2-D input)
    net = StackedSNMLP([2, 16, 3], [torch.Generator().manual_seed(1)])
    x = torch.randn(4, 2)
    e = 0.05
    p = adversarial_smoothness(net, x, torch.tensor([e]))
    corners = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float32) * e
    # a ReLU net is piecewise linear: inside a small ball the max is at most max over corners of the (convex) l2^2
    worst = torch.stack([(net(x + c) - net(x)).pow(2).sum(-1) for c in corners]).amax(0).mean(-1)
    assert p.item() <= worst.item() * 1.5 + 1e-8 and p.item() > 0


def test_value_iteration_closed_forms():
    grid = AngleSpeedGrid(12, 9, 8.0)
    S = grid.states()
    V = torch.randn(len(S), dtype=torch.float64)
    torch.testing.assert_close(grid.interpolate(V, S), V)                       # exact on grid points
    shifted = S.clone()
    shifted[:, 0] += 2 * math.pi
    torch.testing.assert_close(grid.interpolate(V, shifted), V)                 # theta is periodic
    # a system that stays put, reward -(action index): V* = 0 (best action 0) and then -1/(1 - gamma) for action 1
    step = lambda s, u: (s, -u.abs())                                            # noqa: E731
    out = value_iteration(grid, step, torch.tensor([0.0, 1.0], dtype=torch.float64), gamma=0.9)
    assert out["residual"] < 1e-6 and torch.allclose(out["V"], torch.zeros_like(out["V"]))
    torch.testing.assert_close(out["Q"][:, 1], torch.full_like(out["V"], -1.0), atol=1e-5, rtol=0)
    # constant reward -1 whatever the action: V* = -1 / (1 - gamma)
    out = value_iteration(grid, lambda s, u: (s, -torch.ones_like(u)), torch.tensor([0.0, 1.0], dtype=torch.float64), 0.8)
    torch.testing.assert_close(out["V"], torch.full_like(out["V"], -5.0), atol=1e-5, rtol=0)


def _features(z):
    return torch.stack([torch.cos(z[..., 0]), torch.sin(z[..., 0]), z[..., 1]], -1)


def test_fitted_q_iteration_reaches_a_known_fixed_point():
    # states never move and every action costs 1: Q* = -1 / (1 - gamma) = -2 everywhere
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                              # tiny ops: threads only contend
    g = torch.Generator().manual_seed(0)
    q = StackedSNMLP([3, 16, 16, 3], [torch.Generator().manual_seed(s) for s in (0, 1)], sn_scale=[1.0, math.inf])
    sample = lambda B: torch.rand(B, 2, generator=g) * 2 - 1                    # noqa: E731
    nxt = lambda z: z[None, :, None, :].expand(2, len(z), 3, 2)                 # noqa: E731
    rew = lambda z: -torch.ones(len(z), 3)                                       # noqa: E731
    out = fitted_q_iteration(q, _features, sample, nxt, rew, gamma=0.5, iters=15, inner=20, batch=64,
                             lrs=torch.tensor([1e-2, 1e-2]), eps=torch.tensor([0.0, 0.05]), probe=sample(50))
    torch.set_num_threads(threads)
    assert out["values"].shape == (15, 2, 50) and out["td"].shape == (15, 2)
    torch.testing.assert_close(out["values"][-1], torch.full((2, 50), -2.0), atol=0.05, rtol=0)


def test_bellman_gap_bound_and_value_gradient():
    torch.manual_seed(0)
    R, K, P, A = 3, 4, 30, 5
    q = StackedSNMLP([3, 16, 16, A], [torch.Generator().manual_seed(s) for s in range(R)], sn_scale=[1.0, 3.0, math.inf])
    for _ in range(5):
        q(torch.randn(8, 3))
    q.eval()
    z = torch.rand(P, 2) * 2 - 1
    true_next = torch.rand(P, A, 2) * 2 - 1
    model_next = true_next[None, None] + 0.1 * torch.randn(R, K, P, A, 2)
    metric = lambda a, b: (a - b).norm(dim=-1)                                   # noqa: E731
    bg = bellman_gap(q, _features, torch.randn(P, A), true_next, model_next, 0.9, metric)
    L = lipschitz_bound([q.effective_weight(l).detach() for l in range(3)], norm="l2")
    assert (bg["gap"] <= 0.9 * bg["vdiff"] + 1e-6).all()
    assert (bg["gap"] <= 0.9 * L[:, None].float() * bg["w1"] + 1e-6).all()
    # the value gradient norm against central differences at the maximising state
    lip = value_gradient_norm(q, _features, z)
    h = 1e-3
    fd = []
    for r in range(R):
        best = 0.0
        for p in range(P):
            g2 = []
            for i in range(2):
                e = torch.zeros(2)
                e[i] = h
                g2.append((state_values(q, _features, (z[p] + e)[None])[r] - state_values(q, _features, (z[p] - e)[None])[r]) / (2 * h))
            best = max(best, torch.stack(g2).norm().item())
        fd.append(best)
    torch.testing.assert_close(lip, torch.tensor(fd), rtol=2e-2, atol=1e-3)
    assert (lip <= L.float() + 1e-5).all()


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 12)), rng.normal(size=(4, 12))
    x[0, :3] = 1.0                                        # ties
    ours = spearman(x, y)
    ref = [stats.spearmanr(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_blocked_fitted_q_iteration_and_fixed_stack_give_the_same_numbers():
    # the blocked form (draws first, targets of an iteration at once, no host reads of the scales) against
    # fitted_q_iteration step by step on a stack with SN, plain and adversarial members and model-like draws
    from reprolib.models import StackedSNMLPFixed
    from reprolib.rl.dynamics import ensemble_draws
    from reprolib.rl.fitted_q import fitted_q_iteration_blocked

    R, A, scales = 3, 3, [1.0, math.inf, math.inf]
    shift = torch.tensor([0.1, -0.2, 0.3])[:, None, None, None]

    def run(blocked):
        g = torch.Generator().manual_seed(0)
        cls = StackedSNMLPFixed if blocked else StackedSNMLP
        q = cls([3, 16, 16, A], [torch.Generator().manual_seed(s) for s in range(R)], sn_scale=scales)

        def nxt(z, draws=None):
            pick, noise = draws if draws is not None else ensemble_draws(R, 2, len(z) * A, 2, g)
            base = z[None, :, None, :].expand(R, len(z), A, 2)
            return base + shift + 0.01 * (pick.view(R, len(z), A, 1) + noise.view(R, len(z), A, 2))

        sample = lambda B: torch.rand(B, 2, generator=g) * 2 - 1                # noqa: E731
        rew = lambda z: -z.pow(2).sum(-1, keepdim=True).expand(len(z), A)       # noqa: E731
        kw = dict(gamma=0.5, iters=3, inner=4, batch=8, lrs=torch.tensor([1e-2, 3e-3, 1e-2]),
                  eps=torch.tensor([0.0, 0.0, 0.05]), probe=torch.linspace(-1, 1, 20).view(10, 2), generator=g)
        if blocked:
            out = fitted_q_iteration_blocked(q, _features, lambda B: (lambda z: (z, ensemble_draws(R, 2, B * A, 2, g)))(
                sample(B)), nxt, rew, **kw)
        else:
            out = fitted_q_iteration(q, _features, sample, nxt, rew, **kw)
        return out, q

    (a, qa), (b, qb) = run(False), run(True)
    assert torch.equal(a["values"], b["values"]) and torch.equal(a["td"], b["td"])
    for pa, pb in zip(qa.state_dict().values(), qb.state_dict().values()):
        assert torch.equal(pa, pb)
