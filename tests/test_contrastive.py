"""SimCLR / Barlow Twins objectives and their AMCL versions against per-anchor loops written from the
equations (Wang et al. ECCV 2024, Eq. 2.1, 2.3, 3, 5; the official amcl/losses.py), the multi-head
projector, the SSL augmentations, and the frozen-feature evaluations against scikit-learn and loops."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprolib.data import augment_views
from reprolib.metrics import histogram_overlap, knn_accuracy, linear_probe
from reprolib.models import MultiHeadProjector
from reprolib.penalties import PairTemperature, amcl_barlow_twins, amcl_nt_xent, barlow_twins, nt_xent, omega


class ConstTemperature(torch.nn.Module):
    def __init__(self, tau):
        super().__init__()
        self.tau = tau

    def forward(self, u, v):
        return torch.full((len(u), len(v)), self.tau, dtype=torch.float32)


def test_nt_xent_matches_a_double_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    tau, n, total = 0.3, 10, 0.0
    for i in range(n):
        p = (i + 5) % n
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n) if j != i)
        total += -float(z[i] @ z[p]) / tau + math.log(den)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(total / n, rel=1e-5)


def _amcl_reference(z1, z2, temp, beta, topk):
    """Eq. 2.1 with the Top-k form (Eq. 5), one anchor at a time, both views as anchors, summed over heads."""
    b, c, d = z1.shape
    total = 0.0
    for h in range(c):
        views = [F.normalize(v, dim=0) for v in torch.cat([z1[:, h], z2[:, h]]).double()]
        per_anchor = []
        for i in range(2 * b):
            p = (i + b) % (2 * b)
            tau_of = lambda j: float(temp(views[i][None].float(), views[j][None].float())[0, 0])
            negs = sorted((j for j in range(2 * b) if j not in (i, p)), key=lambda j: -float(views[i] @ views[j]))[:topk]
            t_pos = tau_of(p)
            l = -float(views[i] @ views[p]) / t_pos + np.mean([float(views[i] @ views[j]) / tau_of(j) for j in negs])
            l += beta * (d / 2 * math.log(t_pos) + 1 / t_pos)
            l -= beta * sum(math.log(tau_of(j)) + 1 / tau_of(j) for j in negs)
            per_anchor.append(l)
        total += np.mean(per_anchor)
    return total


@pytest.mark.parametrize("topk", [3, 100])
def test_amcl_nt_xent_matches_per_anchor_loops(topk):
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 2, 8), torch.randn(6, 2, 8)
    temp = PairTemperature(8, hidden=16)
    got = float(amcl_nt_xent(z1, z2, temp, beta=0.05, topk=topk))
    assert got == pytest.approx(_amcl_reference(z1, z2, temp, 0.05, topk), rel=1e-4)


def test_amcl_nt_xent_with_one_head_and_a_constant_temperature_is_the_plain_hard_negative_form():
    torch.manual_seed(2)
    z1, z2 = torch.randn(4, 1, 5), torch.randn(4, 1, 5)
    z = F.normalize(torch.cat([z1, z2])[:, 0], dim=1)
    s = z @ z.T
    expect = np.mean([(-float(s[i, (i + 4) % 8]) + float(s[i, [j for j in range(8) if j not in (i, (i + 4) % 8)]].mean())) / 0.7
                      for i in range(8)])
    assert float(amcl_nt_xent(z1, z2, ConstTemperature(0.7), beta=0.0, topk=100)) == pytest.approx(expect, rel=1e-5)


def test_pair_temperature_stays_in_its_bounds_and_is_symmetric_on_one_set():
    torch.manual_seed(3)
    temp = PairTemperature(4, hidden=8, tau_min=1e-5, tau_max=2.0)
    u = torch.randn(20, 4) * 100           # extreme scores saturate the sigmoid
    tau = temp(u, u)
    assert tau.shape == (20, 20) and float(tau.min()) >= 1e-5 * (1 - 1e-6) and float(tau.max()) <= 2.0
    assert torch.allclose(tau, tau.T)
    assert float(temp(torch.zeros(1, 4), torch.zeros(1, 4)).squeeze()) == pytest.approx(
        1e-5 + (2 - 1e-5) * torch.sigmoid(-temp.phi(torch.zeros(1, 4)).pow(2).sum()).item(), rel=1e-6)


def test_omega_has_its_minimum_at_two_over_d():
    tau = torch.linspace(1e-3, 1.0, 100_000, dtype=torch.float64)
    assert float(tau[omega(tau, 64).argmin()]) == pytest.approx(2 / 64, rel=1e-3)


def _bt_numpy(a, b, lambd):
    a = (a - a.mean(0)) / (a.std(0, ddof=1) + 1e-9)
    b = (b - b.mean(0)) / (b.std(0, ddof=1) + 1e-9)
    r = a.T @ b / len(a)
    return ((1 - np.diag(r)) ** 2).sum() + lambd * (r ** 2 - np.diag(np.diag(r) ** 2)).sum()


def test_barlow_twins_matches_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(16, 6)), rng.normal(size=(16, 6))
    got = float(barlow_twins(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), 0.1))
    assert got == pytest.approx(_bt_numpy(a, b, 0.1), rel=1e-5)


def test_amcl_barlow_twins_matches_a_loop_and_reduces_to_barlow_twins():
    torch.manual_seed(5)
    n, c, dim, beta, lambd = 8, 2, 5, 0.01, 0.1
    z1, z2 = torch.randn(n, c, dim), torch.randn(n, c, dim)
    temp = PairTemperature(n, hidden=16)
    expect = 0.0
    for h in range(c):
        a, b = z1[:, h].double(), z2[:, h].double()
        r = ((a - a.mean(0)) / a.std(0)).T @ ((b - b.mean(0)) / b.std(0)) / n
        tau = temp(z1[:, h].T, z2[:, h].T).double()
        for l in range(dim):
            for m in range(dim):
                om = dim / 2 * math.log(tau[l, m]) + 1 / tau[l, m]
                if l == m:
                    expect += (1 - r[l, l] / tau[l, l]) ** 2 + beta * om
                else:
                    expect += lambd * r[l, m] ** 2 / tau[l, m] - beta * om
    assert float(amcl_barlow_twins(z1, z2, temp, beta, lambd)) == pytest.approx(float(expect), rel=1e-4)
    same = torch.cat([z1[:, :1], z1[:, :1]], 1), torch.cat([z2[:, :1], z2[:, :1]], 1)
    assert float(amcl_barlow_twins(*same, ConstTemperature(1.0), 0.0, lambd)) == pytest.approx(
        2 * float(barlow_twins(z1[:, 0], z2[:, 0], lambd)), rel=1e-5)


def test_multi_head_projector_heads_are_independent():
    torch.manual_seed(6)
    proj = MultiHeadProjector(10, 16, 4, heads=3)
    h = torch.randn(5, 10)
    z = proj(h)
    assert z.shape == (5, 3, 4)
    assert not torch.allclose(z[:, 0], z[:, 1])               # independent initialisations
    z[:, 1].sum().backward()                                   # a loss on one head trains that head only
    grads = [sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in head.parameters()) for head in proj.heads]
    assert grads[1] > 0 and grads[0] == 0 and grads[2] == 0
    bn = MultiHeadProjector(10, 16, 4, heads=2, depth=3, batch_norm=True)
    assert bn(h).shape == (5, 2, 4) and sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules()) == 6


def test_augment_views_identity_crop_reproducibility_and_range():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(6, 1, 28, 28, generator=g)
    same = augment_views(x, "single", torch.Generator().manual_seed(0), crop_scale=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)                 # a full-size crop, no other step: the image itself
    v1 = augment_views(x, "multi", torch.Generator().manual_seed(1))
    v2 = augment_views(x, "multi", torch.Generator().manual_seed(1))
    v3 = augment_views(x, "multi", torch.Generator().manual_seed(2))
    assert torch.equal(v1, v2) and not torch.equal(v1, v3) and v1.shape == x.shape and torch.isfinite(v1).all()
    crop = augment_views(x, "single", torch.Generator().manual_seed(3), crop_scale=(0.25, 0.25))
    # a quarter-area crop resized back changes the image and stays in the pixel range
    assert not torch.allclose(crop, x, atol=1e-3) and float(crop.min()) >= 0 and float(crop.max()) <= 1 + 1e-6
    with pytest.raises(ValueError):
        augment_views(x, "double", g)


def test_linear_probe_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(8)
    n, d, k, wd = 600, 12, 4, 1e-2
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + 1.5 * rng.normal(size=(n, d))
    xs = (x - x.mean(0)) / (x.std(0, ddof=1) + 1e-6)
    ref = LogisticRegression(C=1 / (wd * n), max_iter=5000, tol=1e-10).fit(xs, y)
    acc = linear_probe(torch.tensor(x, dtype=torch.float32), torch.tensor(y), [torch.tensor(x, dtype=torch.float32)],
                       [torch.tensor(y)], weight_decay=wd)[0]
    assert acc == pytest.approx(100 * ref.score(xs, y), abs=0.5)


def test_knn_accuracy_matches_a_loop():
    rng = np.random.default_rng(9)
    ftr, ytr = rng.normal(size=(50, 5)), rng.integers(0, 3, 50)
    fte, yte = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    ntr = ftr / np.linalg.norm(ftr, axis=1, keepdims=True)
    correct = 0
    for f, label in zip(fte, yte):
        s = ntr @ (f / np.linalg.norm(f))
        top = np.argsort(-s)[:7]
        votes = np.zeros(3)
        for j in top:
            votes[ytr[j]] += np.exp(s[j] / 0.1)
        correct += int(votes.argmax() == label)
    t = lambda a: torch.tensor(a)
    assert knn_accuracy(t(ftr).float(), t(ytr), t(fte).float(), t(yte), k=7, t=0.1, chunk=6) == pytest.approx(100 * correct / 20)


def test_histogram_overlap_limits():
    a = torch.linspace(-0.9, -0.1, 100)
    assert histogram_overlap(a, a) == pytest.approx(1.0)
    assert histogram_overlap(a, -a) == pytest.approx(0.0)
    assert 0 < histogram_overlap(a, a + 0.3) < 1
