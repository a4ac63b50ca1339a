"""Tests for reprolib.metrics against closed forms."""

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reprolib.metrics import classification_error
from reprolib.metrics import (
    block_quadratic_forms,
    directional_sharpness,
    effective_rank,
    ema,
    hvp,
    median_spread,
    quadratic_form,
    row_norm_cv,
    spectral_norm,
    stable_rank,
    steps_to_target,
    taylor_terms,
    top_hessian_eigenvalue,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def orthonormal(m, k, gen):
    Q, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    return Q


def with_singular_values(s, m, n, seed=0):
    """W = U diag(s) V^T with orthonormal U [m, r], V [n, r]."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.as_tensor(s, dtype=torch.float64)
    U, V = orthonormal(m, len(s), gen), orthonormal(n, len(s), gen)
    return U @ torch.diag(s) @ V.T


# ---------------------------------------------------------------- spectra

S = [5.0, 3.0, 2.0, 1.0, 0.5]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spectra_closed_forms(device, dtype):
    W = with_singular_values(S, 8, 6).to(device, dtype)
    s = np.array(S)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert isinstance(spectral_norm(W), float)
    # the default stopping rule (relative change < 1e-7) leaves ~1e-7 error
    assert rel_err(spectral_norm(W), torch.linalg.matrix_norm(W, 2).item()) < 1e-6
    assert rel_err(spectral_norm(W, iters=500, tol=0.0), 5.0) < tol
    assert rel_err(stable_rank(W), (s**2).sum() / 25.0) < tol
    p = s / s.sum()
    assert rel_err(effective_rank(W), np.exp(-(p * np.log(p)).sum())) < tol


def test_spectral_norm_needs_iterations():
    # one step from a random start cannot resolve sigma_1 = 5 vs sigma_2 = 4.9
    W = with_singular_values([5.0, 4.9, 1.0], 6, 6)
    assert rel_err(spectral_norm(W, iters=1), 5.0) > 1e-6
    assert rel_err(spectral_norm(W, iters=2000, tol=1e-14), 5.0) < 1e-8


def test_effective_rank_extremes():
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0, rel=1e-6)
    u, v = torch.randn(9, 1, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    assert effective_rank(u @ v) == pytest.approx(1.0, rel=1e-6)
    # an exactly zero singular value must not give NaN (0 log 0 = 0)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(2.0, rel=1e-6)


def test_row_norm_cv_closed_forms():
    gen = torch.Generator().manual_seed(1)
    Q = orthonormal(10, 10, gen)
    assert abs(row_norm_cv(3.0 * Q)) < 1e-12
    # k rows of norm a and l rows of norm b:
    # mean = (ka + lb)/(k+l), std = sqrt(kl)|a-b|/(k+l)  =>  cv = sqrt(kl)|a-b|/(ka+lb)
    k, l, a, b = 3, 1, 2.0, 5.0
    rows = torch.randn(k + l, 6, generator=gen, dtype=torch.float64)
    rows = rows / rows.norm(dim=1, keepdim=True)
    W = rows * torch.tensor([a] * k + [b] * l, dtype=torch.float64)[:, None]
    expected = math.sqrt(k * l) * abs(a - b) / (k * a + l * b)
    assert row_norm_cv(W) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_spectra_batched(device):
    Ws = torch.stack([with_singular_values(S, 8, 6, seed=i) * (i + 1) for i in range(3)])
    Ws = torch.stack([Ws, 0.5 * Ws]).to(device)  # batch shape [2, 3]
    # tol=0 runs all iterations, so batched and per-matrix calls agree to round-off
    sn = functools.partial(spectral_norm, iters=300, tol=0.0)
    for fn in (sn, stable_rank, effective_rank, row_norm_cv):
        out = fn(Ws)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
        per_matrix = [[fn(Ws[i, j]) for j in range(3)] for i in range(2)]
        assert rel_err(out.cpu(), per_matrix) < 1e-10
    assert rel_err(sn(Ws).cpu(), torch.linalg.matrix_norm(Ws, 2).cpu()) < 1e-10
    assert rel_err(spectral_norm(Ws).cpu(), torch.linalg.matrix_norm(Ws, 2).cpu()) < 1e-6


# ---------------------------------------------------------------- curvature


def symmetric(eigs, seed=0):
    gen = torch.Generator().manual_seed(seed)
    Q = orthonormal(len(eigs), len(eigs), gen)
    return Q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ Q.T


def quadratic(A, b, theta):
    """L = 1/2 theta^T A theta + b^T theta over params [theta]."""
    return lambda: 0.5 * theta @ A @ theta + b @ theta


EIGS_POS = [4.0] + list(np.linspace(-2.0, 2.0, 19))
EIGS_NEG = [-4.0] + list(np.linspace(-2.0, 2.0, 19))


@pytest.fixture
def quad():
    A = symmetric(EIGS_NEG)
    gen = torch.Generator().manual_seed(3)
    b = torch.randn(20, generator=gen, dtype=torch.float64)
    theta = torch.randn(20, generator=gen, dtype=torch.float64).requires_grad_()
    u = torch.randn(20, generator=gen, dtype=torch.float64)
    return A, b, theta, u


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hvp_quadratic(device, dtype):
    A = symmetric(EIGS_NEG).to(device, dtype)
    b = torch.ones(20, device=device, dtype=dtype)
    theta = torch.randn(20, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(20, device=device, dtype=dtype)
    (Hv,) = hvp(quadratic(A, b, theta), [theta], [v])
    assert Hv.shape == theta.shape and Hv.dtype == dtype
    assert rel_err(Hv.cpu(), (A @ v).cpu()) < (1e-5 if dtype == torch.float32 else 1e-12)


def test_quadratic_form_and_nds(quad):
    A, b, theta, u = quad
    L = quadratic(A, b, theta)
    uAu = (u @ A @ u).item()
    assert quadratic_form(L, [theta], [u]) == pytest.approx(uAu, rel=1e-12)
    assert directional_sharpness(L, [theta], [u]) == pytest.approx(uAu / (u @ u).item(), rel=1e-12)
    # NDS is scale-invariant, the quadratic form is not
    assert directional_sharpness(L, [theta], [7 * u]) == pytest.approx(uAu / (u @ u).item(), rel=1e-12)


@pytest.mark.parametrize("eigs", [EIGS_POS, EIGS_NEG], ids=["positive", "negative"])
def test_top_hessian_eigenvalue(eigs):
    A = symmetric(eigs, seed=5)
    theta = torch.zeros(20, dtype=torch.float64, requires_grad=True)
    lam = top_hessian_eigenvalue(quadratic(A, torch.ones(20, dtype=torch.float64), theta), [theta])
    w = np.linalg.eigh(A.numpy())[0]
    expected = w[np.argmax(np.abs(w))]
    assert lam == pytest.approx(expected, rel=1e-4)


def test_block_quadratic_forms():
    # theta = [a (shape 2x4), b (shape 12)], A = [[A_aa, A_ab], [A_ba, A_bb]]
    A = symmetric(list(np.linspace(-1.0, 3.0, 20)), seed=7)
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(2, 4, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(12, generator=gen, dtype=torch.float64).requires_grad_()
    c = torch.randn(20, generator=gen, dtype=torch.float64)
    u_a, u_b = torch.randn(2, 4, generator=gen, dtype=torch.float64), torch.randn(12, generator=gen, dtype=torch.float64)

    def L():
        th = torch.cat([a.reshape(-1), b])
        return 0.5 * th @ A @ th + c @ th

    out = block_quadratic_forms(L, [a, b], [u_a, u_b], groups=[[0], [1]])
    ua, ub = u_a.reshape(-1), u_b
    A_aa, A_ab, A_bb = A[:8, :8], A[:8, 8:], A[8:, 8:]
    u = torch.cat([ua, ub])
    assert out["total"] == pytest.approx((u @ A @ u).item(), rel=1e-12)
    assert out["within"] == pytest.approx([(ua @ A_aa @ ua).item(), (ub @ A_bb @ ub).item()], rel=1e-12)
    assert out["cross"] == pytest.approx(2 * (ua @ A_ab @ ub).item(), rel=1e-10)
    # a single group covering everything has no cross term
    one = block_quadratic_forms(L, [a, b], [u_a, u_b], groups=[[0, 1]])
    assert one["cross"] == pytest.approx(0.0, abs=1e-10)


def test_taylor_terms(quad):
    A, b, theta, d = quad
    L = quadratic(A, b, theta)
    g = A @ theta.detach() + b
    out = taylor_terms(L, [theta], [d])
    dAd = (d @ A @ d).item()
    assert out["first_order"] == pytest.approx(-(g @ d).item(), rel=1e-12)
    assert out["second_order"] == pytest.approx(0.5 * dAd, rel=1e-12)
    assert out["nds"] == pytest.approx(dAd / (d @ d).item(), rel=1e-12)
    assert out["step_norm"] == pytest.approx(d.norm().item(), rel=1e-12)
    # on a quadratic the second-order model is exact
    with torch.no_grad():
        actual = (L() - quadratic(A, b, theta + d)()).item()
    assert out["predicted_decrease"] == pytest.approx(actual, rel=1e-10)


def test_hvp_param_with_constant_gradient():
    # w enters linearly: g_w = c has no graph, so its Hessian rows are zero
    A = symmetric(list(range(1, 6)))
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, dtype=torch.float64)
    v = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    Hx, Hw = hvp(lambda: 0.5 * x @ A @ x + c @ w, [x, w], v)
    assert rel_err(Hx, A @ v[0]) < 1e-12
    assert torch.equal(Hw, torch.zeros(3, dtype=torch.float64))


class TinyAttention(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, 1)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


def attention_problem(dtype, device="cpu"):
    torch.manual_seed(0)
    model = TinyAttention().to(device, torch.float64)
    x = torch.randn(2, 5, 8, dtype=torch.float64, device=device)
    y = torch.randn(2, 5, 1, dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device) for p in model.parameters()]
    return model.to(dtype), x.to(dtype), y.to(dtype), [vi.to(dtype) for vi in v]


def fd_hvp(model, x, y, v, eps=1e-5):
    """(g(theta + eps v) - g(theta - eps v)) / 2 eps, single backward only."""
    params = list(model.parameters())

    def grad_at(sign):
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.add_(sign * eps * vi)
        g = torch.autograd.grad(F.mse_loss(model(x), y), params)
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.sub_(sign * eps * vi)
        return g

    return [(gp - gm) / (2 * eps) for gp, gm in zip(grad_at(1), grad_at(-1))]


def test_default_sdpa_kernel_has_no_double_backward():
    """Guard: shows the MATH-backend context in hvp is what makes the next test pass."""
    model, x, y, v = attention_problem(torch.float64)
    params = list(model.parameters())
    g = torch.autograd.grad(F.mse_loss(model(x), y), params, create_graph=True)
    try:
        torch.autograd.grad(g, params, grad_outputs=v)
    except RuntimeError:
        return
    pytest.skip("this build's default SDPA kernel supports double backward")


@pytest.mark.parametrize("device", DEVICES)
def test_hvp_through_sdpa_matches_finite_difference(device):
    model, x, y, v = attention_problem(torch.float64, device)
    params = list(model.parameters())
    Hv = hvp(lambda: F.mse_loss(model(x), y), params, v)
    ref = fd_hvp(model, x, y, v)
    assert rel_err(torch.cat([h.flatten() for h in Hv]).cpu(), torch.cat([r.flatten() for r in ref]).cpu()) < 1e-5


def test_hvp_ignores_outer_autocast():
    # fp32 HVP under an enclosing bf16 autocast must stay near fp32 accuracy
    model64, x64, y64, v64 = attention_problem(torch.float64)
    ref = torch.cat([r.flatten() for r in fd_hvp(model64, x64, y64, v64)])
    model, x, y, v = attention_problem(torch.float32)
    params = list(model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Hv = hvp(lambda: F.mse_loss(model(x), y), params, v)
    assert all(h.dtype == torch.float32 for h in Hv)
    assert rel_err(torch.cat([h.flatten() for h in Hv]).double(), ref) < 1e-4


def test_hvp_restores_matmul_precision():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        theta = torch.randn(3, requires_grad=True)
        hvp(lambda: (theta**3).sum(), [theta], [torch.ones(3)])
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# ---------------------------------------------------------------- progress


def test_ema():
    x = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert np.array_equal(ema(x, 1.0), x)
    s, expected = x[0], []
    for xi in x:
        s = 0.3 * xi + 0.7 * s
        expected.append(s)
    assert np.allclose(ema(x, 0.3), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="alpha"):
        ema(x, 0.0)
    # a diverged run stays diverged; NaN does not leak backwards
    assert np.array_equal(ema([1.0, 3.0, math.inf, 2.0], 0.5), [1.0, 2.0, math.inf, math.inf])
    out = ema([1.0, 3.0, math.nan, 2.0], 0.5)
    assert np.array_equal(out[:2], [1.0, 2.0]) and np.isnan(out[2:]).all()


def test_steps_to_target_interpolates():
    steps, values = [0, 10, 20, 30], [4.0, 3.0, 1.0, 0.5]
    # between (10, 3) and (20, 1): 10 + (2 - 3) * 10 / (1 - 3) = 15
    assert steps_to_target(steps, values, 2.0) == pytest.approx(15.0)
    assert steps_to_target(steps, values, 1.0) == pytest.approx(20.0)
    assert steps_to_target(steps, values, 5.0) == 0.0
    assert steps_to_target(steps, values, 0.1) == math.inf
    # token counts work the same way
    assert steps_to_target([1e6, 2e6], [3.0, 1.0], 2.0) == pytest.approx(1.5e6)


def test_steps_to_target_smoothing_delays_noisy_crossing():
    rng = np.random.default_rng(0)
    steps = np.arange(200)
    clean = 2.0 * np.exp(-steps / 60.0) + 0.5
    noisy = clean + 0.15 * rng.standard_normal(200)
    raw = steps_to_target(steps, noisy, 1.0)
    smoothed = steps_to_target(steps, noisy, 1.0, smooth=0.1)
    true = 60.0 * math.log(2.0 / 0.5)  # clean curve hits 1.0 here
    assert raw < smoothed < math.inf
    assert raw < true  # a downward noise spike crosses early


def test_steps_to_target_validates():
    with pytest.raises(ValueError, match="equal length"):
        steps_to_target([0, 1, 2], [1.0, 0.5], 0.7)
    with pytest.raises(ValueError, match="increasing"):
        steps_to_target([0, 2, 1], [1.0, 0.5, 0.2], 0.7)
    with pytest.raises(ValueError, match="increasing"):
        steps_to_target([0, 1, 1], [1.0, 0.5, 0.2], 0.7)


def test_median_spread():
    out = median_spread([3.0, float("nan"), 1.0, 2.0])
    assert out == dict(median=2.0, min=1.0, max=3.0, n=3)
    out = median_spread([1.0, math.inf, float("nan"), math.inf])
    assert out == dict(median=math.inf, min=1.0, max=math.inf, n=3)
    out = median_spread([float("nan")] * 2)
    assert out["n"] == 0 and math.isnan(out["median"])


def test_optimizer_state_bytes_counts_what_each_keeps():
    from reprolib.metrics import optimizer_state_bytes, parameter_bytes
    from reprolib.optim import Lion, Muon
    W = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(torch.randn(4))
    for opt, expected in ((torch.optim.AdamW([W, b], foreach=False), 2 * parameter_bytes([W, b])),
                          (Lion([W, b]), parameter_bytes([W, b])),
                          (Muon([W]), parameter_bytes([W]))):
        W.grad, b.grad = torch.ones_like(W), torch.ones_like(b)
        opt.step()
        got = optimizer_state_bytes(opt)
        steps = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items()
                    if k == "step" and torch.is_tensor(v))
        assert got - steps == expected


def test_classification_error_counts_wrong_argmax_in_chunks():
    x = torch.arange(10.0)[:, None]
    model = lambda v: torch.cat([v, 5 - v], dim=1)   # class 1 when x < 2.5, else class 0
    y = torch.zeros(10, dtype=torch.long)
    assert classification_error(model, x, y, chunk=3) == 0.3
    assert classification_error(model, x, 1 - y, chunk=100) == 0.7


def test_tail_drop_share_and_steps_fraction():
    from reprolib.metrics import steps_fraction, tail_drop, tail_share
    steps = [0, 25, 50, 75, 100]
    linear = [4.0, 3.0, 2.0, 1.0, 0.0]              # a steady fall: the last quarter holds a quarter of it
    assert tail_drop(steps, linear) == pytest.approx(1.0)
    assert tail_share(steps, linear) == pytest.approx(0.25)
    flat = [4.0, 1.0, 0.6, 0.5, 0.5]
    assert tail_drop(steps, flat) == pytest.approx(0.0) and tail_share(steps, flat) == pytest.approx(0.0)
    assert tail_drop(steps, linear, tail=0.1) == pytest.approx(0.4)   # interpolated between evaluations
    assert steps_fraction(steps, linear, 2.0) == pytest.approx(0.5)
    assert steps_fraction(steps, linear, 2.0, total=200) == pytest.approx(0.25)
    assert math.isinf(steps_fraction(steps, linear, -1.0))
    with pytest.raises(ValueError):
        tail_drop(steps, linear, tail=1.5)


def test_count_flops_of_a_matmul():
    from reprolib.metrics import count_flops
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(torch.matmul, a, b) == 2 * 8 * 16 * 4
