"""Federated adversarial learning: the l2 PGD adversary against the closed-form worst case of a linear
model, the NTK two-layer net against its formula, one FAL round against centralised gradient descent and
against each run alone, the sphere data against the separability assumption, k-means against sklearn."""
import math

import pytest
import torch

from reprolib.data.sphere import (client_spread, client_tensors, kmeans, partition_clients, separated_sphere,
                                  sphere_teacher)
from reprolib.metrics.robust import pgd_l2, random_l2
from reprolib.models.ntk_two_layer import ntk_two_layer, ntk_two_layer_init
from reprolib.optim.fal import client_losses, fal_round


def test_pgd_reaches_the_closed_form_worst_case_of_a_linear_model():
    # f(x) = <w, x>, loss 1/2 (f - y)^2: the worst delta in the rho-ball is rho sign(f(x) - y) w / ||w||
    gen = torch.Generator().manual_seed(0)
    d, n, rho = 6, 50, 0.3
    w = torch.randn(d, dtype=torch.float64, generator=gen)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen)
    f = x @ w
    y = f + torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0) * (2 * rho * w.norm() + 0.1)
    loss = lambda z: 0.5 * (z @ w - y) ** 2
    best = rho * torch.sign(f - y)[:, None] * w / w.norm()
    x_adv = pgd_l2(loss, x, rho, steps=20, random_start=False)     # from delta = 0 it walks along +-w
    assert (x_adv - x - best).abs().max() < 1e-3
    x_adv = pgd_l2(loss, x, rho, steps=20, generator=gen)           # from a random start it must get close
    assert (x_adv - x).norm(dim=1).sub(rho).abs().max() < 1e-9      # on the sphere of radius rho
    assert (loss(x_adv) / loss(x + best)).min() > 0.95                # (the random start's sideways part decays)
    assert (loss(x_adv) <= loss(x + best) * (1 + 1e-12)).all()      # and never beyond the optimum


def test_pgd_stays_in_the_ball_and_beats_random_noise():
    gen = torch.Generator().manual_seed(1)
    W, a = ntk_two_layer_init(3, 64, 5, gen, dtype=torch.float64)
    x = torch.nn.functional.normalize(torch.randn(3, 40, 5, generator=gen, dtype=torch.float64), dim=-1)
    y = torch.zeros(3, 40, dtype=torch.float64)
    loss = lambda z: 0.5 * (ntk_two_layer(W, a, z) - y) ** 2
    x_adv = pgd_l2(loss, x, 0.2, steps=10, generator=gen)
    assert (x_adv - x).norm(dim=-1).max() <= 0.2 * (1 + 1e-9)
    noisy = random_l2(x, 0.2, gen)
    assert torch.allclose((noisy - x).norm(dim=-1), torch.full((3, 40), 0.2, dtype=torch.float64))
    assert (loss(x_adv).mean(-1) > loss(noisy).mean(-1)).all()
    assert (loss(x_adv).mean(-1) > loss(x).mean(-1)).all()
    assert torch.equal(pgd_l2(loss, x, 0.0, 10), x)


def test_ntk_two_layer_formula_and_width_independent_output_scale():
    gen = torch.Generator().manual_seed(2)
    W, a = ntk_two_layer_init(2, 7, 4, gen, dtype=torch.float64)
    x = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    loop = torch.tensor([[sum(a[s, r] * max(0.0, float(W[s, r] @ x[s, i])) for r in range(7)) / math.sqrt(7)
                          for i in range(5)] for s in range(2)], dtype=torch.float64)
    assert torch.allclose(ntk_two_layer(W, a, x), loop)
    x = torch.nn.functional.normalize(torch.randn(1, 500, 8, generator=gen), dim=-1)
    for m in (16, 1024):
        W, a = ntk_two_layer_init(200, m, 8, gen)
        var = ntk_two_layer(W, a, x.expand(200, -1, -1)).var()
        assert abs(var.item() - 0.5) < 0.05, (m, var)   # E[relu(g)^2] = 1/2 for every width


def _grad_closed_form(W, a, x, y, wc):
    # dL/dw_r = sum_i wc_i (f_i - y_i) a_r / sqrt(m) 1[<w_r, x_i> > 0] x_i
    f = ntk_two_layer(W, a, x)
    act = (x @ W.T > 0).to(W.dtype)                               # [n, m]
    return torch.einsum("i,ir,id->rd", wc * (f - y), act * a / math.sqrt(W.shape[0]), x)


def _federated(n, d, min_dist, clients, scheme, m, seed, dtype=torch.float64):
    """Teacher data on the sphere split over `clients`, and one NTK net drawn from a generator seeded
    `seed` (returned too, for the draws a test makes later)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = sphere_teacher(n, d, min_dist, seed=seed, dtype=dtype)
    xc, yc, wc = client_tensors(x, y, partition_clients(x, clients, scheme, seed=0), clients)
    W, a = ntk_two_layer_init(1, m, d, gen, dtype=dtype)
    return gen, x, y, xc, yc, wc, W, a


def test_one_round_with_one_local_step_is_centralised_gradient_descent():
    # equal client sizes, K = 1, no adversary, eta_global = 1: the average of the client steps is one GD step
    _, x, y, xc, yc, wc, W, a = _federated(40, 5, 0.2, 4, "iid", m=32, seed=3)
    new = fal_round(W, a, xc[None], yc[None], wc[None], 0.7, local_steps=1, rho=0.0, pgd_steps=5)
    central = W[0] - 0.7 * _grad_closed_form(W[0], a[0], x, y, torch.full((40,), 1 / 40, dtype=torch.float64))
    assert (new[0] - central).abs().max() < 1e-12


def test_client_loss_gradient_matches_the_closed_form():
    _, x, y, xc, yc, wc, W, a = _federated(30, 4, 0.2, 3, "kmeans", m=16, seed=4)
    Wc = W[:, None].expand(-1, 3, -1, -1).clone().requires_grad_(True)
    g, = torch.autograd.grad(client_losses(Wc, a, xc[None], yc[None], wc[None]).sum(), Wc)
    for c in range(3):
        assert torch.allclose(g[0, c], _grad_closed_form(W[0], a[0], xc[c], yc[c], wc[c]))


def test_identical_clients_average_to_local_training():
    # every client holds the same data: FedAvg of K local steps equals K GD steps of one client
    gen = torch.Generator().manual_seed(5)
    x, y = sphere_teacher(20, 4, 0.2, seed=5, dtype=torch.float64)
    w = torch.full((20,), 1 / 20, dtype=torch.float64)
    xc, yc, wc = x.expand(3, -1, -1), y.expand(3, -1), w.expand(3, -1)
    W, a = ntk_two_layer_init(1, 16, 4, gen, dtype=torch.float64)
    new = fal_round(W, a, xc[None], yc[None], wc[None], 0.5, local_steps=4, rho=0.0, pgd_steps=3)
    V = W[0].clone()
    for _ in range(4):
        V = V - 0.5 * _grad_closed_form(V, a[0], x, y, w)
    assert (new[0] - V).abs().max() < 1e-12


def test_stacked_runs_equal_each_run_alone():
    gen = torch.Generator().manual_seed(6)
    data = [sphere_teacher(24, 4, 0.2, seed=s, dtype=torch.float64) for s in (0, 1)]
    parts = [client_tensors(x, y, partition_clients(x, 3, scheme, seed=0), 3)
             for (x, y), scheme in zip(data, ("iid", "kmeans"))]
    n_max = max(p[0].shape[1] for p in parts)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, n_max - t.shape[1])) if t.ndim == 3 else \
        torch.nn.functional.pad(t, (0, n_max - t.shape[1]))
    xc, yc, wc = (torch.stack([pad(p[i]) for p in parts]) for i in range(3))
    W, a = ntk_two_layer_init(2, 16, 4, gen, dtype=torch.float64)
    lrs = torch.tensor([0.3, 1.0], dtype=torch.float64)
    both = fal_round(W, a, xc, yc, wc, lrs, local_steps=3, rho=0.0, pgd_steps=3)
    for s in range(2):
        alone = fal_round(W[s:s + 1], a[s:s + 1], *(p[None] for p in parts[s]), float(lrs[s]), local_steps=3,
                          rho=0.0, pgd_steps=3)
        assert (both[s] - alone[0]).abs().max() < 1e-12


def test_adversarial_round_lowers_the_robust_loss_of_a_wide_net():
    gen, x, y, xc, yc, wc, W, a = _federated(40, 5, 0.3, 4, "kmeans", m=256, seed=7, dtype=torch.float32)
    loss = lambda V: (lambda z: 0.5 * (ntk_two_layer(V, a, z) - y) ** 2)
    robust = lambda V: loss(V)(pgd_l2(loss(V), x[None], 0.1, 10, generator=gen)).mean()
    start = robust(W)
    for _ in range(8):
        W = fal_round(W, a, xc[None], yc[None], wc[None], 3.0, local_steps=2, rho=0.1, pgd_steps=3, generator=gen)
    assert robust(W) < 0.3 * start


def test_sphere_data_meets_the_assumptions():
    x, y = sphere_teacher(200, 6, 0.4, seed=0, dtype=torch.float64)
    assert torch.allclose(x.norm(dim=1), torch.ones(200, dtype=torch.float64))
    assert torch.pdist(x).min() >= 0.4
    assert y.abs().max() == pytest.approx(1.0) and abs(y.mean()) < 0.1
    with pytest.raises(ValueError):
        separated_sphere(50, 2, 1.0, torch.Generator().manual_seed(0), max_draws=2000)


def test_partitions_and_client_tensors():
    x, y = sphere_teacher(100, 5, 0.2, seed=1)
    iid, non = partition_clients(x, 5, "iid", 0), partition_clients(x, 5, "kmeans", 0)
    assert torch.bincount(iid).tolist() == [20] * 5
    assert torch.bincount(non, minlength=5).min() > 0
    assert client_spread(x, non, 5) > 2 * client_spread(x, iid, 5)
    xc, yc, wc = client_tensors(x, y, non, 5)
    assert torch.allclose(wc.sum(1), torch.ones(5))
    for c in range(5):
        k = int((non == c).sum())
        assert torch.equal(xc[c, :k], x[non == c]) and torch.equal(yc[c, :k], y[non == c])
        assert (xc[c, k:] == 0).all() and (wc[c, k:] == 0).all()
    with pytest.raises(ValueError):
        partition_clients(x, 5, "dirichlet")


def test_kmeans_against_sklearn():
    cluster = pytest.importorskip("sklearn.cluster")
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 3, generator=gen, dtype=torch.float64) * 10
    x = (centres[:, None] + torch.randn(4, 50, 3, generator=gen, dtype=torch.float64)).reshape(-1, 3)
    ours = kmeans(x, 4, generator=gen)
    ref = cluster.KMeans(4, n_init=10, random_state=0).fit(x.numpy())
    assert metrics.adjusted_rand_score(ref.labels_, ours.numpy()) == pytest.approx(1.0)
    inertia = sum(((x[ours == c] - x[ours == c].mean(0)) ** 2).sum() for c in range(4))
    assert float(inertia) <= ref.inertia_ * (1 + 1e-9)
