"""Spectral weight constraints (arXiv 2507.13338) against SVD closed forms: matrices are built as
U diag(s) V^T with chosen singular values, so every operator's exact output is known."""
import math

import numpy as np
import pytest
import torch

from reprolib.kernels import NS6_SCHEDULE, newton_schulz_schedule
from reprolib.metrics import rms_operator_norm
from reprolib.optim import (power_iteration, project_rms, soft_cap_coupling, soft_cap_map, spectral_hammer,
                            spectral_normalize, spectral_soft_cap, svd_clip)

SHAPES = [(20, 50), (50, 20), (30, 30)]


def with_singular_values(m, n, s, seed=0, batch=()):
    """U diag(s) V^T in float64 with Haar-random U, V; s: a sequence of min(m, n) values (or one per batch row)."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(*batch, m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(*batch, n, k, generator=g, dtype=torch.float64))
    s = torch.as_tensor(s, dtype=torch.float64)
    return (U * s[..., None, :]) @ V.mT, U, V


def spread(k, top=3.0, gap=1.5):
    """Singular values with a clear gap below the top one: top, top - gap, then down to 0.1 (power iteration converges as ((top - gap) / top)^(2 iters))."""
    return [top, *np.linspace(top - gap, 0.1, k - 1)]


def close(a, b, tol=1e-9):
    return (a - b).norm().item() <= tol * max(1.0, b.norm().item())


# ---- Newton-Schulz with the official 6-step schedule --------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_ns6_lands_every_singular_value_near_one(shape):
    """Every s >= 3e-3 ||G||_F maps into [0.9955, 0.9994] (the scalar polynomials' range on that interval)."""
    k = min(shape)
    s = np.geomspace(1.0, 3e-3, k)
    G, U, V = with_singular_values(*shape, s / np.linalg.norm(s) * 7.0)    # ||G||_F = 7, s / ||G||_F >= 3e-3 / ||s||
    out = torch.linalg.svdvals(newton_schulz_schedule(G.float()))
    assert out.min() > 0.9955 and out.max() < 0.9995


@pytest.mark.parametrize("shape", SHAPES)
def test_ns6_is_the_polar_factor_to_within_its_flatness(shape):
    G, U, V = with_singular_values(*shape, np.geomspace(2.0, 0.05, min(shape)))
    O = newton_schulz_schedule(G, dtype=torch.float64)
    assert (O - U @ V.mT).norm() / (U @ V.mT).norm() < 5e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_ns6_matches_the_official_orientation(shape):
    """Official `_orthogonalize`: transpose to tall, M <- M (a I + b A + c A^2) with A = M^T M."""
    G = np.random.default_rng(0).standard_normal(shape)
    M = G.T if G.shape[1] > G.shape[0] else G
    M = M / (np.linalg.norm(M) + 1e-12)
    for a, b, c in NS6_SCHEDULE:
        A = M.T @ M
        M = M @ (a * np.eye(A.shape[0]) + b * A + c * A @ A)
    M = M.T if G.shape[1] > G.shape[0] else M
    ours = newton_schulz_schedule(torch.from_numpy(G), dtype=torch.float64).numpy()
    assert np.abs(ours - M).max() < 1e-12


def test_ns6_batch_equals_one_at_a_time():
    G = torch.randn(5, 24, 40, generator=torch.Generator().manual_seed(2))
    one = torch.stack([newton_schulz_schedule(g) for g in G])
    assert torch.allclose(newton_schulz_schedule(G), one, atol=1e-6)


# ---- power iteration and the four projections ---------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_power_iteration_finds_the_top_singular_triple(shape):
    M, U, V = with_singular_values(*shape, spread(min(shape)))
    u, sigma, v = power_iteration(M, iters=16, generator=torch.Generator().manual_seed(1))
    assert sigma.item() == pytest.approx(3.0, rel=1e-6)
    assert abs(u @ U[:, 0]) == pytest.approx(1.0, abs=1e-6) and abs(v @ V[:, 0]) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(M @ v, sigma * u, atol=1e-5)


def test_power_iteration_never_overestimates_a_flat_top():
    """A flat top (Muon's regime): 16 iterations may fall short of sigma_1, never past it."""
    M, _, _ = with_singular_values(40, 60, np.linspace(2.0, 1.9, 40), batch=(8,))
    _, sigma, _ = power_iteration(M, generator=torch.Generator().manual_seed(0))
    assert (sigma <= 2.0 + 1e-12).all() and (sigma >= 1.9).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w_max", [1.0, 5.0])
def test_spectral_normalize_is_a_single_rescale(shape, w_max):
    M, _, _ = with_singular_values(*shape, spread(min(shape)))
    out = spectral_normalize(M, w_max, generator=torch.Generator().manual_seed(0))
    assert close(out, M * min(1.0, w_max / 3.0))


def test_spectral_normalize_takes_one_cap_per_matrix():
    M, _, _ = with_singular_values(20, 30, [spread(20), spread(20, top=0.5, gap=0.25)], batch=(2,))
    out = spectral_normalize(M, torch.tensor([1.0, 1.0], dtype=torch.float64), generator=torch.Generator())
    assert close(out[0], M[0] / 3.0) and close(out[1], M[1])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w_max", [1.0, 4.0])
def test_spectral_hammer_moves_only_the_top_singular_value(shape, w_max):
    s = spread(min(shape))
    M, U, V = with_singular_values(*shape, s)
    out = spectral_hammer(M, w_max, generator=torch.Generator().manual_seed(0))
    expected = (U * torch.tensor([w_max, *s[1:]], dtype=torch.float64)) @ V.mT
    assert close(out, expected, 1e-8)


@pytest.mark.parametrize("shape", SHAPES)
def test_soft_cap_maps_each_singular_value_by_its_polynomial(shape):
    s = np.linspace(1.3, 0.05, min(shape))
    M, U, V = with_singular_values(*shape, s)
    alpha = 0.2
    out = spectral_soft_cap(M, alpha)
    expected = (U * torch.as_tensor(soft_cap_map(s, alpha))) @ V.mT
    assert close(out, expected)


def test_soft_cap_map_is_the_two_official_steps():
    s, a = 0.9, 0.3
    p = s * (1 - a * s ** 2)                        # M (I - alpha M^T M)
    assert soft_cap_map(s, a) == pytest.approx(p * (1 + a * p ** 2), rel=1e-15)


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_clip_is_the_exact_projection(shape):
    s = np.linspace(3.0, 0.1, min(shape))
    M, U, V = with_singular_values(*shape, s)
    out = svd_clip(M, 1.0)
    assert close(out, (U * torch.as_tensor(np.minimum(s, 1.0))) @ V.mT)
    assert close(svd_clip(out, 1.0), out)                                      # idempotent
    assert close(svd_clip(M, 5.0), M)                                          # inside the cap: unchanged


# ---- the soft cap's coupling to the update norm -------------------------------------------------------
GRID = [(w, wd, eta) for w in (0.5, 1.0, 3.0, 6.0) for wd in (0.0, 0.01) for eta in (0.01, 0.05, 0.2)]


@pytest.mark.parametrize("w_max,wd,eta", GRID)
def test_coupling_is_the_official_np_roots_choice(w_max, wd, eta):
    k = w_max * (1 - wd) + eta
    roots = np.roots([-k ** 9, 3 * k ** 7, -3 * k ** 5, 0, k - w_max])
    official = np.min(np.where((np.abs(roots.imag) < 1e-6) & (roots.real >= 0), roots.real, 1.0))
    assert soft_cap_coupling(w_max, wd, eta) == pytest.approx(official, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("w_max,wd,eta", GRID)
def test_coupling_sends_k_back_to_w_max_and_is_the_smallest_root(w_max, wd, eta):
    alpha = soft_cap_coupling(w_max, wd, eta)
    k = w_max * (1 - wd) + eta
    if alpha == 1.0:                             # the official fallback: the quartic has no root in [0, 1)
        q = soft_cap_map(k, np.linspace(0, 1, 20001)[:-1]) - w_max
        assert np.all(q > 0) or np.all(q < 0)
        return
    assert soft_cap_map(k, alpha) == pytest.approx(w_max, rel=1e-9)
    a = np.linspace(0, alpha, 20001)[:-1]                                      # no earlier sign change
    assert np.all(soft_cap_map(k, a) - w_max > -1e-12)


def test_coupling_broadcasts_over_runs():
    w = np.array([0.5, 1.0, 3.0])
    got = soft_cap_coupling(w, 0.0, 0.05)
    assert got.shape == (3,) and all(g == pytest.approx(soft_cap_coupling(x, 0.0, 0.05)) for g, x in zip(got, w))


@pytest.mark.parametrize("w_max,eta", [(1.0, 0.05), (2.0, 0.2), (6.0, 0.07), (0.75, 0.02)])
def test_soft_cap_keeps_a_stepped_weight_under_w_max(w_max, eta):
    """The co-design: sigma_max(W) <= w_max and ||update||_2 <= eta give sigma_max(softcap(W + update)) <= w_max."""
    alpha = soft_cap_coupling(w_max, 0.0, eta)
    assert alpha < 1.0
    for seed in range(5):
        W, _, _ = with_singular_values(30, 60, np.linspace(w_max, 0.0, 30), seed=seed)
        D, _, _ = with_singular_values(30, 60, np.full(30, eta), seed=100 + seed)   # an orthogonal update
        out = spectral_soft_cap(W + D, alpha)
        assert torch.linalg.matrix_norm(out, 2).item() <= w_max * (1 + 1e-9)


@pytest.mark.parametrize("w_max,eta,over", [(0.5, 0.3, 0.054), (1.0, 0.6, 0.054), (0.5, 0.6, 0.269)])
def test_soft_cap_guarantee_lapses_when_the_step_is_large_next_to_the_cap(w_max, eta, over):
    """alpha k^2 > 1/3: the map is no longer increasing on [0, k] and its hump passes w_max."""
    alpha = soft_cap_coupling(w_max, 0.0, eta)
    k = w_max + eta
    assert alpha * k ** 2 > 1 / 3
    s = np.linspace(0, k, 200001)
    assert soft_cap_map(s, alpha).max() / w_max - 1 == pytest.approx(over, abs=2e-3)


@pytest.mark.parametrize("method", ["spec_normalize", "svd_clip"])
def test_project_rms_caps_the_rms_operator_norm(method):
    # a fixed draw: spec_normalize divides by a power-iteration estimate of sigma_max, whose error after
    # 200 iterations depends on the gap to the second singular value (a random W made this test flaky)
    W = torch.randn(3, 16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    out = project_rms(W, method, w_max=torch.tensor([0.5, 1.0, 100.0], dtype=torch.float64),
                      iters=200, generator=torch.Generator().manual_seed(0))
    before, after = rms_operator_norm(W), rms_operator_norm(out)
    assert torch.allclose(after, torch.minimum(before, torch.tensor([0.5, 1.0, 100.0], dtype=torch.float64)),
                          rtol=1e-6 if method == "svd_clip" else 1e-4)


def test_project_rms_soft_cap_acts_on_the_rms_scaled_matrix():
    W = torch.randn(16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    scale = math.sqrt(16 / 64)
    assert close(project_rms(W, "soft_cap", alpha=0.1), scale * spectral_soft_cap(W / scale, 0.1))
    with pytest.raises(ValueError, match="alpha"):
        project_rms(W, "soft_cap")
    with pytest.raises(ValueError, match="projection"):
        project_rms(W, "hard_cap")
