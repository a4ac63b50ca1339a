"""reprolib.models.ufm (Tirer, Huang & Niles-Weed 2023) against autograd, finite differences and the
paper's closed forms (Theorems 2.1, 3.1, 4.1, 4.2)."""
import math

import numpy as np
import pytest
import torch

from reprolib.metrics import nc1_trace_ratio
from reprolib.models import ufm

torch_f64 = dict(dtype=torch.float64)


def orthonormal(d, K, seed):
    Q, _ = torch.linalg.qr(torch.randn(d, K, generator=torch.Generator().manual_seed(seed), **torch_f64))
    return Q


def noisy_features(d, K, n, seed, spread=1.0, offset=1.0):
    """Class means with a non-zero global mean plus Gaussian within-class spread: H0 [d, K n]."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(d, K, generator=g, **torch_f64) + offset
    return means.repeat_interleave(n, 1) + spread * torch.randn(d, K * n, generator=g, **torch_f64)


def within_class(X, K, n):
    """X minus its class means (columns class-major)."""
    Xc = X.reshape(X.shape[0], K, n)
    return (Xc - Xc.mean(2, keepdim=True)).reshape(X.shape)


def labels(K, n):
    return torch.arange(K).repeat_interleave(n)


def test_optimal_classifier_is_the_ridge_solution():
    K, n, d, lam_W = 3, 5, 7, 0.1
    H, Y = noisy_features(d, K, n, 0), ufm.targets(K, n)
    W = ufm.optimal_classifier(H, Y, lam_W, n)
    Wg = W.clone().requires_grad_()
    ufm.objective(Wg, H, None, Y, lam_W, 0.3, 0.0).backward()
    assert float(Wg.grad.abs().max()) < 1e-14
    # ridge as an augmented least-squares problem: [H^T; sqrt(n lam_W) I] W^T = [Y^T; 0]
    A = torch.cat([H.T, math.sqrt(n * lam_W) * torch.eye(d, **torch_f64)])
    B = torch.cat([Y.T, torch.zeros(d, K, **torch_f64)])
    assert torch.allclose(W, torch.linalg.lstsq(A, B).solution.T, atol=1e-12)


def test_central_path_velocity_is_minus_N_times_the_gradient_of_the_reduced_loss():
    """Autograd differentiates through W*(H); the library uses grad_W f = 0 (envelope theorem)."""
    K, n, d, lam_W, lam_H = 4, 6, 9, 0.05, 0.02
    H, Y = noisy_features(d, K, n, 1).requires_grad_(), ufm.targets(K, n)
    ufm.reduced_loss(H, Y, lam_W, lam_H, n).backward()
    v = ufm.central_path_velocity(H.detach(), Y, lam_W, lam_H, n)
    assert torch.allclose(v, -K * n * H.grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("lam_H", [0.0, 0.01])
def test_theorem_3_1_along_the_central_path(lam_H):
    K, n, d, lam_W, dt = 4, 8, 12, 0.01, 0.05
    H0, Y = noisy_features(d, K, n, 2), ufm.targets(K, n)
    H0 = H0 / H0.square().mean(1).sum().sqrt()       # unit mean squared column norm
    y = labels(K, n)

    def rec(H):
        Hc = within_class(H, K, n)
        return float(Hc.square().sum() / (K * n)), float(nc1_trace_ratio(H.T, y))

    times, recs = ufm.central_path_flow(H0, Y, 0.01, lam_H, n, dt, 400, record_every=10, record=rec)
    t = np.array(times)
    tr_w, ratio = np.array(recs).T
    tr_b = tr_w / ratio
    assert np.all(np.diff(ratio) < 0)                                   # strictly decreasing
    assert np.all(np.diff(np.exp(2 * lam_H * t) * tr_w) <= 1e-15)      # non-increasing
    assert np.all(np.diff(np.exp(2 * lam_H * t) * tr_b) > 0)           # strictly increasing
    assert ratio[-1] < 0.5 * ratio[0]
    # two flows integrated as one batch give the same paths
    H1 = noisy_features(d, K, n, 9)
    H1 = H1 / H1.square().mean(1).sum().sqrt()
    _, both = ufm.central_path_flow(torch.stack([H0, H1]), Y, 0.01, lam_H, n, dt, 20)
    _, alone = ufm.central_path_flow(H1, Y, 0.01, lam_H, n, dt, 20)
    assert torch.allclose(both[-1][1], alone[-1], atol=1e-12)


def test_collapsed_minimizer_theorem_2_1_and_corollary_2_2():
    K, n, d, lam_W, lam_H, beta = 4, 5, 10, math.sqrt(2), 0.3, 50.0
    W, H = ufm.collapsed_minimizer(orthonormal(d, K, 3), n, lam_W, lam_H)
    Y = ufm.targets(K, n)
    Wg, Hg = W.clone().requires_grad_(), H.clone().requires_grad_()
    ufm.objective(Wg, Hg, None, Y, lam_W, lam_H, 0.0).backward()
    assert max(float(Wg.grad.abs().max()), float(Hg.grad.abs().max())) < 1e-15     # stationary for eq. 1
    rho = (1 - math.sqrt(lam_W * lam_H)) * math.sqrt(lam_W / lam_H)
    Hbar = H[:, ::n]
    assert torch.allclose(Hbar.T @ Hbar, rho * torch.eye(K, **torch_f64), atol=1e-14)
    assert torch.allclose(W, math.sqrt(lam_H / lam_W) * Hbar.T, atol=1e-14)
    # a collapsed input is its own minimizer (Corollary 2.2) and random perturbations cost more
    W2, H2, info = ufm.vicinity_minimizer(H, Y, lam_W, lam_H, beta, n)
    assert torch.allclose(H2, H, atol=1e-12) and info["grad_norm"] < 1e-13
    f0 = float(ufm.objective(W, H, None, Y, lam_W, lam_H, 0.0))
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        dW, dH = (1e-3 * torch.randn(*A.shape, generator=g, **torch_f64) for A in (W, H))
        assert float(ufm.objective(W + dW, H + dH, None, Y, lam_W, lam_H, 0.0)) > f0
    with pytest.raises(ValueError):
        ufm.collapsed_minimizer(orthonormal(d, K, 3), n, 2.0, 0.6)


def test_vicinity_minimizer_agrees_with_lbfgs_and_corollary_3_2():
    K, n, d, lam_W, lam_H, beta = 3, 6, 8, 0.05, 0.01, 20.0
    H0, Y = noisy_features(d, K, n, 4), ufm.targets(K, n)
    W, H, info = ufm.vicinity_minimizer(H0, Y, lam_W, lam_H, beta, n)
    assert info["grad_norm"] < 1e-12
    Wl, Hl = ufm.optimal_classifier(H0, Y, lam_W, n).clone().requires_grad_(), H0.clone().requires_grad_()
    opt = torch.optim.LBFGS([Wl, Hl], lr=1, max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ufm.objective(Wl, Hl, H0, Y, lam_W, lam_H, beta)
        loss.backward()
        return loss
    opt.step(closure)
    assert torch.allclose(H, Hl.detach(), atol=1e-7) and torch.allclose(W, Wl.detach(), atol=1e-7)
    y = labels(K, n)
    assert float(nc1_trace_ratio(H.T, y)) < float(nc1_trace_ratio(H0.T, y))       # Corollary 3.2


def _collapsed_setup(beta, K=4, n=5, d=7, lam_W=math.sqrt(2), lam_H=0.3):
    W, H = ufm.collapsed_minimizer(orthonormal(d, K, 5), n, lam_W, lam_H)
    return W, H, ufm.targets(K, n), dict(K=K, n=n, d=d, lam_W=lam_W, lam_H=lam_H, beta=beta)


def test_theorem_4_1_operator_against_finite_differences():
    """At a non-collapsed H0 too: re-solving after a small change of H0 moves H by F times the change."""
    K, n, d, lam_W, lam_H, beta = 3, 4, 5, 0.2, 0.1, 30.0
    H0, Y = noisy_features(d, K, n, 6, spread=0.3), ufm.targets(K, n)
    W, H, _ = ufm.vicinity_minimizer(H0, Y, lam_W, lam_H, beta, n)
    F = ufm.perturbation_operator(W, H, H0, Y, lam_W, lam_H, beta)
    dH0 = torch.randn(d, K * n, generator=torch.Generator().manual_seed(7), **torch_f64)
    eps = 1e-6
    _, Hp, _ = ufm.vicinity_minimizer(H0 + eps * dH0, Y, lam_W, lam_H, beta, n)
    _, Hm, _ = ufm.vicinity_minimizer(H0 - eps * dH0, Y, lam_W, lam_H, beta, n)
    fd = ((Hp - Hm) / (2 * eps)).T.reshape(-1)
    pred = F @ dH0.T.reshape(-1)
    assert float((fd - pred).norm() / pred.norm()) < 1e-6


def test_eq_5_is_theorem_4_1_up_to_second_order_in_one_over_beta():
    errs = []
    for beta in (100.0, 1000.0):
        W, H, Y, p = _collapsed_setup(beta)
        F = ufm.perturbation_operator(W, H, H, Y, p["lam_W"], p["lam_H"], beta)
        F5 = ufm.perturbation_operator_large_beta(W, H, Y, p["lam_W"], p["lam_H"], beta, p["n"])
        errs.append(float(torch.linalg.matrix_norm(F - F5, 2)))
    assert 0.005 < errs[1] / errs[0] < 0.02      # O(beta^-2): 10x beta, 100x smaller


@pytest.mark.parametrize("lam_H", [0.05, 0.3, 0.7])
def test_theorem_4_2_singular_values(lam_H):
    beta = 100.0
    W, H, Y, p = _collapsed_setup(beta, lam_H=lam_H)
    F = ufm.perturbation_operator_large_beta(W, H, Y, p["lam_W"], lam_H, beta, p["n"])
    b = p["d"] * p["n"]
    pred = ufm.theorem42_singular_values(p["lam_W"], lam_H, beta)
    for k in range(p["K"]):
        s = torch.linalg.svdvals(F[k * b:(k + 1) * b, k * b:(k + 1) * b])
        assert float(s.max()) == pytest.approx(pred["intra_max"], abs=1e-12)
        assert float(s.min()) == pytest.approx(pred["intra_min"], abs=1e-12)
        for kk in range(p["K"]):
            if kk != k:
                s = torch.linalg.svdvals(F[k * b:(k + 1) * b, kk * b:(kk + 1) * b])
                assert float(s[0]) == pytest.approx(pred["inter_max"], rel=1e-10)
                assert float(s[1]) < 1e-12 * float(s[0])               # rank one


def test_within_class_attenuation_is_exact_in_beta():
    beta = 5.0                                                   # far from the large-beta regime
    W, H, Y, p = _collapsed_setup(beta)
    F = ufm.perturbation_operator(W, H, H, Y, p["lam_W"], p["lam_H"], beta)
    a_span, a_perp = ufm.within_class_attenuation(p["lam_W"], p["lam_H"], beta)
    R = H[:, ::p["n"]] / H[:, ::p["n"]].norm(dim=0)              # the class means' span
    P = R @ torch.linalg.pinv(R)
    dH0 = within_class(torch.randn(p["d"], p["K"] * p["n"], generator=torch.Generator().manual_seed(8),
                                   **torch_f64), p["K"], p["n"])
    dH = (F @ dH0.T.reshape(-1)).reshape(-1, p["d"]).T
    assert torch.allclose(dH, a_span * P @ dH0 + a_perp * (dH0 - P @ dH0), atol=1e-12)
    assert 1 - math.sqrt(p["lam_H"] / p["lam_W"]) / 100.0 == pytest.approx(
        ufm.within_class_attenuation(p["lam_W"], p["lam_H"], 100.0)[0], abs=1e-4)
