"""reprolib.metrics.neural_collapse against closed forms: an exact simplex ETF gives zero, known
within-class spreads give known NC1 values, known non-ETF geometries give known NC2 and NC3."""
import math

import numpy as np
import pytest
import torch

from reprolib.metrics import (class_means, collapse_metrics, covariance_traces, covariances, nc1, nc1_trace_ratio,
                              nc2_etf_distance, nc3_self_duality)


def simplex_etf(K, d, radius, gen):
    """K centred means of norm `radius` in R^d forming a simplex ETF, randomly rotated: [K, d]."""
    Q, _ = torch.linalg.qr(torch.randn(d, K, generator=gen, dtype=torch.float64))
    return radius * math.sqrt(K / (K - 1)) * (torch.eye(K, dtype=torch.float64) - 1.0 / K) @ Q.T


def with_spread(means, a):
    """Each class: 2d samples mean +- a e_j (j = 1..d), so Sigma_W = (a^2 / d) I exactly. (x [N, d], y [N])"""
    K, d = means.shape
    dev = torch.cat([a * torch.eye(d, dtype=means.dtype), -a * torch.eye(d, dtype=means.dtype)])   # [2d, d]
    x = (means[:, None, :] + dev[None]).reshape(-1, d)
    return x, torch.arange(K).repeat_interleave(2 * d)


@pytest.mark.parametrize("K,d", [(2, 2), (4, 10), (10, 16)])
def test_exact_collapse_gives_zero(K, d):
    gen = torch.Generator().manual_seed(K)
    M = simplex_etf(K, d, 3.0, gen) + torch.randn(d, generator=gen, dtype=torch.float64)   # any global offset
    x, y = M.repeat_interleave(5, 0), torch.arange(K).repeat_interleave(5)
    W = 0.7 * (M - M.mean(0))                                       # classifier = scaled centred means
    out = collapse_metrics(x, y, classifier=W)
    for k in ("nc1", "nc1_trace_ratio"):             # rounding in the class means only
        assert float(out[k]) < 1e-25, k
    assert float(out["nc2"]) < 1e-12 and float(out["nc3"]) < 1e-12


@pytest.mark.parametrize("K,d,r,a", [(3, 4, 1.0, 0.1), (10, 16, 2.5, 0.3), (5, 5, 1.0, 2.0)])
def test_isotropic_spread_around_an_etf(K, d, r, a):
    """Sigma_W = sigma^2 I, Sigma_B = r^2/(K-1) on the (K-1)-dim span: NC1 = sigma^2 (K-1)^2 / (K r^2),
    NC1-tilde = d sigma^2 / r^2; the means stay an exact ETF (NC2 = 0)."""
    x, y = with_spread(simplex_etf(K, d, r, torch.Generator().manual_seed(1)), a)
    s2 = a * a / d
    assert float(nc1(x, y)) == pytest.approx(s2 * (K - 1) ** 2 / (K * r * r), rel=1e-10)
    assert float(nc1_trace_ratio(x, y)) == pytest.approx(d * s2 / r ** 2, rel=1e-10)
    assert float(nc2_etf_distance(x, y)) < 1e-12
    Sw, Sb = covariances(x, y)
    assert torch.allclose(Sw, s2 * torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert float(torch.trace(Sb)) == pytest.approx(r * r, rel=1e-12)
    tr_w, tr_b = covariance_traces(x, y)
    assert float(tr_w) == pytest.approx(a * a, rel=1e-12) and float(tr_b) == pytest.approx(r * r, rel=1e-12)


def test_nc1_matches_the_pseudoinverse_formula_and_ignores_the_offset():
    gen = torch.Generator().manual_seed(0)
    K, d, n = 6, 20, 30
    means = 2 * torch.randn(K, d, generator=gen, dtype=torch.float64)
    x = torch.randn(K * n, d, generator=gen, dtype=torch.float64) + means.repeat_interleave(n, 0)
    y = torch.arange(K).repeat_interleave(n)
    Sw, Sb = covariances(x, y)
    direct = float(torch.trace(Sw @ torch.linalg.pinv(Sb, hermitian=True))) / K
    assert float(nc1(x, y)) == pytest.approx(direct, rel=1e-9)
    assert float(nc1(x + 5.0, y)) == pytest.approx(direct, rel=1e-9)          # global offset
    assert float(nc1(3.0 * x, y)) == pytest.approx(direct, rel=1e-9)          # scale
    assert float(nc1_trace_ratio(x, y)) == pytest.approx(float(torch.trace(Sw) / torch.trace(Sb)), rel=1e-12)


def test_a_known_non_etf_geometry():
    """K = 3 collinear means -1, 0, +1 on one axis: the centred Gram is [[1,0,-1],[0,0,0],[-1,0,1]],
    <G/||G||, ETF/||ETF||> = 1/sqrt(2), so NC2 = sqrt(2 - sqrt(2)); a classifier -M gives NC3 = 2."""
    M = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.arange(3)
    assert float(nc2_etf_distance(M, y)) == pytest.approx(math.sqrt(2 - math.sqrt(2)), rel=1e-12)
    assert float(nc3_self_duality(-M, M, y)) == pytest.approx(2.0, rel=1e-12)
    assert float(nc3_self_duality(M, M, y)) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_means_are_a_simplex_etf_after_centring():
    K = 5
    x = torch.eye(K, dtype=torch.float64).repeat_interleave(3, 0)
    assert float(nc2_etf_distance(x, torch.arange(K).repeat_interleave(3))) < 1e-12


def test_a_stack_of_runs_matches_one_at_a_time():
    gen = torch.Generator().manual_seed(2)
    K, d, n, R = 4, 8, 12, 3
    x = torch.randn(R, K * n, d, generator=gen)                      # float32 input: computed in float64
    y = torch.arange(K).repeat_interleave(n)
    W = torch.randn(R, K, d, generator=gen)
    stacked = collapse_metrics(x, y, classifier=W)
    for r in range(R):
        one = collapse_metrics(x[r], y, classifier=W[r])
        for k in stacked:
            assert stacked[k].dtype == torch.float64 and stacked[k].shape == (R,)
            assert float(stacked[k][r]) == pytest.approx(float(one[k]), rel=1e-12)
    means, glob = class_means(x, y)
    assert means.shape == (R, K, d) and glob.shape == (R, d)
    assert torch.allclose(means[1, 2], x[1, 2 * n:3 * n].double().mean(0))


def test_unbalanced_classes_and_bad_input():
    x = torch.tensor([[0.0], [2.0], [10.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    means, glob = class_means(x, y)
    assert means[:, 0].tolist() == [1.0, 10.0] and float(glob[0]) == 4.0   # the global mean is over samples
    Sw, _ = covariances(x, y)
    assert float(Sw[0, 0]) == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError):
        nc1(x, torch.tensor([0, 2, 2]))          # class 1 empty
    with pytest.raises(ValueError):
        nc1(x, torch.tensor([0, 1]))
    assert np.isfinite(float(nc1(x, y)))


def test_a_diverged_run_in_a_stack_gives_nan_and_leaves_the_others_alone():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 20, 5, generator=gen, dtype=torch.float64)
    y = torch.arange(4).repeat_interleave(5)
    ref = collapse_metrics(x, y)
    x[1, 3, 2] = float("nan")
    out = collapse_metrics(x, y)
    for k, v in out.items():
        assert torch.isnan(v[1]) and torch.equal(v[[0, 2]], ref[k][[0, 2]]), k
