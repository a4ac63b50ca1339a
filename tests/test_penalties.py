"""Tests for reprolib.penalties and reprolib.metrics.hessian: closed forms (quadratics, the logistic
head's Hessian), torch.autograd.functional.hessian and torch.func as oracles, and transcriptions of
the official Colored-MNIST scripts (cmnist_HGP.py, cmnist_Hutchinson.py, the Fishr and IRM code)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import autograd, nn

from reprolib.metrics.hessian import hessian_matrix, linear_head_hessian, linear_head_hvp, logit_hessian
from reprolib.penalties import (alignment_penalty, annealed_objective, autograd_hvp, binary_risk, fishr_penalty, flat,
                                hessian_gradient_product, hgp_penalty, hutchinson_diagonal, hutchinson_penalty,
                                irm_penalty, linear_head_sample_grads, vrex_penalty)

D = torch.float64


def spd(n, seed, cond=10.0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    return Q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=D)) @ Q.T


def quadratic(A, b, theta):
    return 0.5 * theta @ A @ theta + b @ theta


def head_problem(n=200, d=6, seed=0, stack=()):
    """Features, binary labels and a linear head (weight [*stack, 1, d], bias [*stack, 1])."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(*stack, n, d, generator=g, dtype=D)
    y = (torch.rand(*stack, n, 1, generator=g) < 0.5).to(D)
    w = (0.5 * torch.randn(*stack, 1, d, generator=g, dtype=D)).requires_grad_()
    b = (0.1 * torch.randn(*stack, 1, generator=g, dtype=D)).requires_grad_()
    return f, y, w, b


def head_logits(f, w, b):
    return f @ w.mT + b.unsqueeze(-2)


def logistic_closed_form(f, y, w, b):
    """g and H of the mean BCE of a linear head, [w, b] order: g = Phi^T (p - y) / n, H = Phi^T diag(p(1-p)) Phi / n."""
    phi = torch.cat([f, torch.ones(*f.shape[:-1], 1, dtype=D)], -1)
    p = torch.sigmoid(head_logits(f, w, b)).detach()
    n = f.shape[-2]
    g = (phi.mT @ (p - y)).squeeze(-1) / n
    H = phi.mT @ (phi * (p * (1 - p))) / n
    return g, H


# ---------------------------------------------------------------- exact Hessian

def test_hessian_matrix_of_a_quadratic_is_its_matrix():
    A, b = spd(7, 0), torch.randn(7, dtype=D)
    theta = torch.randn(7, dtype=D, requires_grad=True)
    H = hessian_matrix(quadratic(A, b, theta), [theta])
    torch.testing.assert_close(H, A, rtol=1e-12, atol=1e-12)


def test_hessian_matrix_of_the_logistic_head_matches_closed_form_and_autograd():
    f, y, w, b = head_problem()
    H = hessian_matrix(binary_risk(head_logits(f, w, b), y), [w, b])
    _, H_cf = logistic_closed_form(f, y, w, b)
    torch.testing.assert_close(H, H_cf, rtol=1e-10, atol=1e-12)
    H_ag = autograd.functional.hessian(lambda wf: binary_risk(head_logits(f, wf[:-1].view(1, -1), wf[-1:]), y),
                                       flat([w, b]).detach())
    torch.testing.assert_close(H, H_ag, rtol=1e-10, atol=1e-12)


def test_stacked_hessian_matrix_equals_each_models_own():
    f, y, w, b = head_problem(stack=(3,))
    H = hessian_matrix(binary_risk(head_logits(f, w, b), y, stack_dims=1), [w, b], stack_dims=1)
    assert H.shape == (3, 7, 7)
    for s in range(3):
        ws, bs = w[s].detach().requires_grad_(), b[s].detach().requires_grad_()
        Hs = torch.func.hessian(lambda v: binary_risk(head_logits(f[s], v[:-1].view(1, -1), v[-1:]), y[s]))(
            flat([ws, bs]).detach())
        torch.testing.assert_close(H[s], Hs, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- HGP

def test_hgp_is_hessian_times_gradient_on_a_quadratic():
    A, b = spd(6, 1), torch.randn(6, dtype=D)
    theta = torch.randn(6, dtype=D, requires_grad=True)
    g, Hg = hessian_gradient_product(quadratic(A, b, theta), [theta])
    g_cf = A @ theta.detach() + b
    torch.testing.assert_close(g, g_cf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Hg, A @ g_cf, rtol=1e-12, atol=1e-12)


def test_hgp_matches_logistic_closed_form_per_model_in_a_stack():
    f, y, w, b = head_problem(stack=(4,), seed=2)
    g, Hg = hessian_gradient_product(binary_risk(head_logits(f, w, b), y, 1), [w, b], stack_dims=1)
    g_cf, H_cf = logistic_closed_form(f, y, w, b)
    torch.testing.assert_close(g, g_cf, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(Hg, (H_cf @ g_cf.unsqueeze(-1)).squeeze(-1), rtol=1e-9, atol=1e-13)


class OfficialMLP(nn.Module):
    """The official CMNIST MLP's shape (two ReLU layers, a `classifier` head), small."""

    def __init__(self, d_in=12, hidden=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self._main = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()).double()
        self.classifier = nn.Linear(hidden, 1).double()

    def forward(self, x):
        features = self._main(x)
        return features, self.classifier(features)


def official_envs(seed=0, n=64, d_in=12):
    g = torch.Generator().manual_seed(seed)
    return [dict(images=torch.randn(n, d_in, generator=g, dtype=D) + k,
                 labels=(torch.rand(n, 1, generator=g) < 0.4 + 0.2 * k).to(D)) for k in range(2)]


def official_hgp_penalty(mlp, envs):
    """cmnist_HGP.py, its lines for the 'sad' penalty, transcribed (names kept)."""
    mean_nll = lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)
    _flatten_grad = lambda grads: torch.cat([g.flatten() for g in grads])

    def compute_sad_penalty(logits, y):
        loss = mean_nll(logits, y)
        grads = autograd.grad(loss, mlp.classifier.parameters(), create_graph=True, retain_graph=True)
        flatten_grads = torch.cat([torch.flatten(grad) for grad in grads])
        return torch.norm(flatten_grads, p=2), grads, flatten_grads

    flatten_grad_of_env = {}
    for edx, env in enumerate(envs):
        features, logits = mlp(env['images'])
        env['nll'] = mean_nll(logits, env['labels'])
        env['sad'], _, flatten_grad_of_env[edx] = compute_sad_penalty(logits, env['labels'])
    train_nll = torch.stack([envs[0]['nll'], envs[1]['nll']]).mean()
    mean_grad = autograd.grad(train_nll, mlp.classifier.parameters(), create_graph=True, retain_graph=True)
    flatten_mean_grads = _flatten_grad(mean_grad)
    norm_of_flatten_mean_grads = flatten_mean_grads.pow(2).sum().sqrt()
    grad_of_norm = autograd.grad(norm_of_flatten_mean_grads, mlp.classifier.parameters(), create_graph=True,
                                 retain_graph=True)
    mean_Hg = torch.mul(norm_of_flatten_mean_grads, _flatten_grad(grad_of_norm))
    grads_0 = autograd.grad(envs[0]['sad'], mlp.classifier.parameters(), create_graph=True, retain_graph=True)
    grads_1 = autograd.grad(envs[1]['sad'], mlp.classifier.parameters(), create_graph=True, retain_graph=True)
    Hg_0 = torch.mul(envs[0]['sad'], _flatten_grad(grads_0))
    Hg_1 = torch.mul(envs[1]['sad'], _flatten_grad(grads_1))
    return ((Hg_0 - mean_Hg).pow(2).sum() + (Hg_1 - mean_Hg).pow(2).sum()
            + (flatten_grad_of_env[0] - flatten_mean_grads).pow(2).sum()
            + (flatten_grad_of_env[1] - flatten_mean_grads).pow(2).sum())


def test_hgp_penalty_and_its_gradient_equal_the_official_script():
    mlp, envs = OfficialMLP(), official_envs()
    ref = official_hgp_penalty(mlp, envs)
    ref_grads = autograd.grad(ref, list(mlp.parameters()))
    risks = [binary_risk(mlp(e['images'])[1], e['labels']) for e in envs]
    ours = hgp_penalty(risks, mlp.classifier.parameters())
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    # the penalty trains the whole network: its gradient reaches the layers below the head
    for a, r in zip(autograd.grad(ours, list(mlp.parameters())), ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-14)
    assert ref_grads[0].abs().max() > 0


def test_hgp_penalty_vanishes_for_identical_environments_and_not_otherwise():
    mlp, envs = OfficialMLP(seed=3), official_envs(seed=3)
    same = [binary_risk(mlp(envs[0]['images'])[1], envs[0]['labels'])] * 2
    assert hgp_penalty(same, mlp.classifier.parameters()).item() < 1e-28
    risks = [binary_risk(mlp(e['images'])[1], e['labels']) for e in envs]
    assert hgp_penalty(risks, mlp.classifier.parameters()).item() > 1e-6


def test_stacked_hgp_penalty_is_the_per_model_penalty():
    f, y, w, b = head_problem(stack=(3,), n=120, seed=5)
    risks = [binary_risk(head_logits(f[:, i::2], w, b), y[:, i::2], 1) for i in range(2)]
    stacked = hgp_penalty(risks, [w, b], stack_dims=1)
    grad_w = autograd.grad(stacked.sum(), w)[0]      # summed over the stack: each model gets its own gradient
    for s in range(3):
        ws, bs = w[s].detach().requires_grad_(), b[s].detach().requires_grad_()
        one = hgp_penalty([binary_risk(head_logits(f[s, i::2], ws, bs), y[s, i::2]) for i in range(2)], [ws, bs])
        torch.testing.assert_close(stacked[s], one, rtol=1e-11, atol=0)
        torch.testing.assert_close(grad_w[s], autograd.grad(one, ws)[0], rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------- Hutchinson

def test_hutchinson_is_exact_for_a_diagonal_hessian():
    A = torch.diag(torch.arange(1.0, 8.0, dtype=D))
    theta = torch.randn(7, dtype=D, requires_grad=True)
    (g,) = autograd.grad(quadratic(A, torch.zeros(7, dtype=D), theta), [theta], create_graph=True)
    d = hutchinson_diagonal(autograd_hvp([g], [theta]), [theta], n_samples=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d, torch.diagonal(A), rtol=1e-12, atol=1e-12)


def test_hutchinson_is_unbiased_with_the_predicted_variance():
    A, b = spd(8, 4, cond=5.0), torch.zeros(8, dtype=D)
    theta = torch.randn(8, dtype=D, requires_grad=True)
    (g,) = autograd.grad(quadratic(A, b, theta), [theta], create_graph=True)
    K, R = 10, 400
    gen = torch.Generator().manual_seed(1)
    est = torch.stack([hutchinson_diagonal(autograd_hvp([g], [theta]), [theta], K, gen) for _ in range(R)]).detach()
    off = A - torch.diag(torch.diagonal(A))
    var = off.pow(2).sum(1) / K                     # Var of coordinate i: (1/K) sum_{j != i} A_ij^2
    se = (var / R).sqrt()
    assert ((est.mean(0) - torch.diagonal(A)).abs() < 4.5 * se).all()
    ratio = est.var(0) / var                        # sampling sd of a variance over R draws ~ sqrt(2/R) = 7%
    assert ((ratio > 0.7) & (ratio < 1.35)).all(), ratio


def test_batched_hutchinson_probes_equal_the_official_loop():
    """calc_hessian_diag loops over probes z, one autograd.grad each; the batched call gives the same."""
    mlp, envs = OfficialMLP(seed=1), official_envs(seed=1)
    head = list(mlp.classifier.parameters())
    loss = binary_risk(mlp(envs[0]['images'])[1], envs[0]['labels'])
    grads = autograd.grad(loss, head, create_graph=True)
    K = 5
    ours = hutchinson_diagonal(autograd_hvp(grads, head), head, K, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)            # replay the same probes
    z = [torch.randint(0, 2, (K, *p.shape), generator=gen).to(D) * 2 - 1 for p in head]
    gg = torch.cat([g.flatten() for g in grads])
    diag = []
    for k in range(K):
        zk = torch.cat([zi[k].flatten() for zi in z])
        Hz = autograd.grad(torch.dot(gg, zk), head, retain_graph=True, create_graph=True)
        diag.append(zk * torch.cat([torch.flatten(h) for h in Hz]))
    torch.testing.assert_close(ours, sum(diag) / len(diag), rtol=1e-12, atol=1e-15)


def test_hutchinson_penalty_equals_exact_diagonal_penalty_when_the_hessian_is_diagonal():
    """One-hot features and no bias make the head's Hessian diagonal, so any K is exact."""
    g = torch.Generator().manual_seed(0)
    n, d = 90, 6
    feats = [F.one_hot(torch.randint(0, d, (n,), generator=g), d).to(D) for _ in range(2)]
    ys = [(torch.rand(n, 1, generator=g) < 0.3 + 0.3 * k).to(D) for k in range(2)]
    w = torch.randn(1, d, generator=g, dtype=D).requires_grad_()
    risks = [binary_risk(f @ w.T, y) for f, y in zip(feats, ys)]
    pen = hutchinson_penalty(risks, [w], n_samples=2, generator=g)
    mean = torch.stack(risks).mean()
    exact = lambda r: (torch.diagonal(hessian_matrix(r, [w])), flat(autograd.grad(r, [w], retain_graph=True)))
    (d_bar, g_bar), per_env = exact(mean), [exact(r) for r in risks]
    ref = alignment_penalty([gg for _, gg in per_env], [dd for dd, _ in per_env], g_bar, d_bar)
    torch.testing.assert_close(pen, ref, rtol=1e-12, atol=0)
    assert pen.item() > 1e-6


def test_stacked_hutchinson_penalty_is_differentiable_and_per_model():
    f, y, w, b = head_problem(stack=(2,), n=80, seed=6)
    f.requires_grad_()
    risks = [binary_risk(head_logits(f[:, i::2], w, b), y[:, i::2], 1) for i in range(2)]
    pen = hutchinson_penalty(risks, [w, b], n_samples=4000, generator=torch.Generator().manual_seed(0), stack_dims=1)
    assert pen.shape == (2,)
    (df,) = autograd.grad(pen.sum(), f)
    assert df[0].abs().max() > 0 and df[1].abs().max() > 0
    for s in range(2):   # many probes: close to the penalty with the exact diagonals
        ws, bs = w[s].detach().requires_grad_(), b[s].detach().requires_grad_()
        rs = [binary_risk(head_logits(f[s, i::2].detach(), ws, bs), y[s, i::2]) for i in range(2)]
        exact = [(torch.diagonal(hessian_matrix(r, [ws, bs])), flat(autograd.grad(r, [ws, bs], retain_graph=True)))
                 for r in [torch.stack(rs).mean(), *rs]]
        ref = alignment_penalty([e[1] for e in exact[1:]], [e[0] for e in exact[1:]], exact[0][1], exact[0][0])
        assert abs(pen[s].item() - ref.item()) < 0.1 * ref.item()


# ---------------------------------------------------------------- IRM, V-REx, Fishr, the objective

def test_irm_penalty_closed_form_per_model():
    f, y, w, b = head_problem(stack=(3,), seed=8)
    z = head_logits(f, w, b)
    pen = irm_penalty(z, y, stack_dims=1)
    # d/ds mean BCE(s z, y) at s = 1 is mean_i (sigmoid(z_i) - y_i) z_i
    ref = ((torch.sigmoid(z) - y) * z).mean((1, 2)).pow(2)
    torch.testing.assert_close(pen, ref.detach(), rtol=1e-12, atol=0)
    assert irm_penalty(z[0], y[0]).shape == ()


def test_vrex_is_the_squared_difference_for_two_environments_and_pairwise_mean_beyond():
    r = [torch.tensor([0.3, 1.0], dtype=D), torch.tensor([0.7, 0.5], dtype=D), torch.tensor([0.1, 0.9], dtype=D)]
    torch.testing.assert_close(vrex_penalty(r[:2]), (r[0] - r[1]) ** 2)
    pairs = [(0, 1), (0, 2), (1, 2)]
    torch.testing.assert_close(vrex_penalty(r), sum((r[i] - r[j]) ** 2 for i, j in pairs) / 3)
    with pytest.raises(ValueError):
        vrex_penalty(r[:1])


def test_linear_head_sample_grads_match_torch_func_per_sample_gradients():
    f, y, w, b = head_problem(n=30, d=5, seed=9)
    z = head_logits(f, w, b)
    losses = F.binary_cross_entropy_with_logits(z, y, reduction="none").squeeze(-1)
    ours = linear_head_sample_grads(f, z, losses)

    def loss_one(wb, fi, yi):
        return F.binary_cross_entropy_with_logits(fi @ wb[:-1] + wb[-1], yi[0])
    ref = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(flat([w, b]).detach(), f, y)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    # and the closed form of a BCE head: (sigmoid(z_i) - y_i) [f_i, 1]
    torch.testing.assert_close(ours, (torch.sigmoid(z) - y).detach() * torch.cat([f, torch.ones(30, 1, dtype=D)], 1))


def test_fishr_penalty_matches_the_official_variance_computation():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(50, 7, generator=g, dtype=D) * 2, torch.randn(40, 7, generator=g, dtype=D) + 0.3]
    ours = fishr_penalty(grads)
    var = [((G - G.mean(0, keepdim=True)).pow(2)).mean(0) for G in grads]   # compute_grads_variance
    avg = torch.stack(var).mean(0)                                         # dict_grads_variance_averaged
    ref = (var[0] - avg).pow(2).sum() + (var[1] - avg).pow(2).sum()       # l2_between_grads_variance
    torch.testing.assert_close(ours, ref)
    # a shift of one environment's gradients changes its mean, not its variance
    torch.testing.assert_close(fishr_penalty([grads[0], grads[1] + 5.0]), ours)
    stacked = fishr_penalty([torch.stack([G, 2 * G]) for G in grads])
    torch.testing.assert_close(stacked, torch.stack([ours, 16 * ours]))


@pytest.mark.parametrize("step,expected", [(10, 0.5 + 0.01 * 3.0 + 1.0 * 2.0),
                                           (190, (0.5 + 0.01 * 3.0 + 1e4 * 2.0) / 1e4)])
def test_annealed_objective_follows_the_cmnist_schedule(step, expected):
    risk, pen, l2 = torch.tensor(0.5), torch.tensor(2.0), torch.tensor(3.0)
    out = annealed_objective(risk, pen, weight=1e4, step=step, anneal_steps=190, l2=l2, l2_weight=0.01)
    assert out.item() == pytest.approx(expected, rel=1e-6)
    # ERM: no penalty and no rescaling, at any step
    assert annealed_objective(risk, None, 1e4, 400, 190, l2, 0.01).item() == pytest.approx(0.53)
    # a weight below 1 is applied but never divided by
    assert annealed_objective(risk, pen, 0.5, 400, 190).item() == pytest.approx(1.5)


# ---------------------------------------------------------------- a linear head in closed form

def ce_head_problem(n=40, d=5, out=3, seed=10, stack=(2,)):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(*stack, n, d, generator=g, dtype=D, requires_grad=True)
    labels = torch.randint(0, out, (*stack, n), generator=g)
    w = (0.5 * torch.randn(*stack, out, d, generator=g, dtype=D)).requires_grad_()
    b = (0.1 * torch.randn(*stack, out, generator=g, dtype=D)).requires_grad_()
    z = head_logits(f, w, b)
    loss = F.cross_entropy(z.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape).mean(-1)
    return f, z, loss, w, b


def test_logit_hessian_of_bce_and_cross_entropy_closed_forms():
    f, y, w, b = head_problem(n=30)
    z = head_logits(f, w, b)
    B = logit_hessian(binary_risk(z, y), z)
    p = torch.sigmoid(z).detach()
    torch.testing.assert_close(B, (p * (1 - p) / 30).unsqueeze(-1))
    f, z, loss, w, b = ce_head_problem(stack=())
    B = logit_hessian(loss, z)
    s = torch.softmax(z, -1).detach()
    torch.testing.assert_close(B, (torch.diag_embed(s) - s.unsqueeze(-1) * s.unsqueeze(-2)) / 40)


@pytest.mark.parametrize("out", [1, 3])
def test_linear_head_hessian_and_hvp_equal_autograd(out):
    f, z, loss, w, b = ce_head_problem(out=out) if out > 1 else (None,) * 5
    if out == 1:
        f, y, w, b = head_problem(stack=(2,), n=50, seed=11)
        f.requires_grad_()
        z = head_logits(f, w, b)
        loss = binary_risk(z, y, stack_dims=1)
    H = linear_head_hessian(f, z, loss)
    torch.testing.assert_close(H, hessian_matrix(loss, [w, b], stack_dims=1), rtol=1e-10, atol=1e-13)
    K = 4
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(K, *p.shape, generator=g, dtype=D) for p in (w, b)]
    ours = linear_head_hvp(f, z, loss)(v)
    grads = autograd.grad(loss.sum(), [w, b], create_graph=True)
    ref = autograd_hvp(grads, [w, b])(v)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-13)
    # differentiable through the features, as the penalty needs
    da = autograd.grad(sum(o.pow(2).sum() for o in ours), f, retain_graph=True)[0]
    dr = autograd.grad(sum(o.pow(2).sum() for o in ref), f)[0]
    torch.testing.assert_close(da, dr, rtol=1e-9, atol=1e-13)


def test_hutchinson_penalty_with_linear_head_hvps_equals_the_autograd_path():
    f, y, w, b = head_problem(stack=(3,), n=60, seed=12)
    f.requires_grad_()
    halves = [(f[:, i::2], y[:, i::2]) for i in range(2)]
    logits = [head_logits(fi, w, b) for fi, _ in halves]
    risks = [binary_risk(z, yi, 1) for z, (_, yi) in zip(logits, halves)]
    hvps = [linear_head_hvp(fi, z, r) for (fi, _), z, r in zip(halves, logits, risks)]
    fast = hutchinson_penalty(risks, [w, b], 6, torch.Generator().manual_seed(3), stack_dims=1, hvps=hvps)
    slow = hutchinson_penalty(risks, [w, b], 6, torch.Generator().manual_seed(3), stack_dims=1)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=0)
    torch.testing.assert_close(autograd.grad(fast.sum(), f, retain_graph=True)[0], autograd.grad(slow.sum(), f)[0],
                               rtol=1e-9, atol=1e-14)
