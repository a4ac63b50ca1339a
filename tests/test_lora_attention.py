"""The LoRA attention-head gradient (reprolib.kernels.lora_attention) against torch.autograd through
reprolib's LoRALinear, the chained low-rank path against the explicit formulas, the Taylor feature map
against the multinomial identity, the FLOP formula against torch's FLOP counter, and eps_rank against
closed forms. All in float64."""
import math

import pytest
import torch
from torch import nn

from reprolib.kernels import (attention_loss, attention_svd, budget_rank, head_flops, lora_attention_grads,
                              relative_error, scale_to_entry_bound, svd_factors, taylor_degree, taylor_factors,
                              taylor_features, taylor_rank)
from reprolib.layers import LoRALinear
from reprolib.metrics import count_flops, eps_rank


def _head(L=96, d=5, r=2, full=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(L, d, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True)
    Y = torch.randn(L, d, generator=g, dtype=torch.float64)
    mods = []
    for name in "qkv":
        lin = nn.Linear(d, d, bias=False).double()
        lin.weight.data = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        if name == "k" and not full:
            mods.append(lin.requires_grad_(False))
            continue
        B = torch.randn(d, r, generator=g, dtype=torch.float64)
        A = torch.randn(r, d, generator=g, dtype=torch.float64)
        mods.append(LoRALinear(lin, B, A, None, scale=2.0 / r))
    return X, Y, mods


@pytest.mark.parametrize("full", [True, False])
def test_exact_gradient_equals_autograd_through_lora_linear(full):
    X, Y, (q, k, v) = _head(full=full)
    tau = 1 / X.shape[1]
    out = lora_attention_grads(X, Y, q, k, v, tau)
    loss = attention_loss(q(X), k(X), v(X), Y, tau)
    loss.backward()
    torch.testing.assert_close(out["loss"], loss.detach(), rtol=1e-12, atol=0)
    adapted = [("q", q), ("k", k), ("v", v)] if full else [("q", q), ("v", v)]
    assert sorted(out["grads"]) == sorted(f"{n}.{f}" for n, _ in adapted for f in "AB")
    for n, m in adapted:
        torch.testing.assert_close(out["grads"][f"{n}.A"], m.A.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out["grads"][f"{n}.B"], m.B.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_taylor_features_give_the_truncated_exponential_series(degree):
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (7, 9))
    phi_x, phi_y = taylor_features(x, degree), taylor_features(y, degree)
    assert phi_x.shape[1] == taylor_rank(6, degree) == math.comb(6 + degree, degree)
    s = x @ y.T
    torch.testing.assert_close(phi_x @ phi_y.T, sum(s ** j / math.factorial(j) for j in range(degree + 1)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("factors", ["taylor2", "taylor3", "svd7"])
def test_chained_low_rank_path_equals_the_explicit_formulas_with_the_same_factors(full, factors):
    X, Y, (q, k, v) = _head(full=full, seed=2)
    tau = 1 / X.shape[1]
    f = {"taylor2": taylor_factors(2), "taylor3": taylor_factors(3), "svd7": svd_factors(7)}[factors]
    chained = lora_attention_grads(X, Y, q, k, v, tau, f)
    explicit = lora_attention_grads(X, Y, q, k, v, tau, f, explicit=True)
    assert relative_error(chained["grads"], explicit["grads"]) < 1e-11
    for key in ("dQ", "dK", "dV"):
        torch.testing.assert_close(chained[key], explicit[key], rtol=1e-10, atol=1e-12)


def test_full_rank_svd_reproduces_exact_and_error_falls_with_degree_at_small_norm():
    X, Y, (q, k, v) = _head(L=64, seed=3)
    tau = 1 / X.shape[1]
    for layer in (q, k):
        scale_to_entry_bound(layer, X, 0.5)
    exact = lora_attention_grads(X, Y, q, k, v, tau)["grads"]
    assert relative_error(lora_attention_grads(X, Y, q, k, v, tau, svd_factors(64))["grads"], exact) < 1e-10
    errs = [relative_error(lora_attention_grads(X, Y, q, k, v, tau, taylor_factors(g))["grads"], exact)
            for g in (1, 2, 3, 4)]
    assert errs[3] < 1e-3 * errs[0] and errs[2] < errs[0]
    # a larger norm makes the same degree worse
    for layer in (q, k):
        scale_to_entry_bound(layer, X, 3.0)
    exact = lora_attention_grads(X, Y, q, k, v, tau)["grads"]
    worse = relative_error(lora_attention_grads(X, Y, q, k, v, tau, taylor_factors(2))["grads"], exact)
    assert worse > 10 * errs[1]


def test_scale_to_entry_bound_sets_the_max_entry_and_keeps_direction():
    X, _, (q, k, _) = _head(seed=4)
    W_before = q.weight + q.delta_weight()
    gamma = scale_to_entry_bound(q, X, 1.7)
    W_after = (q.weight + q.delta_weight()).detach()
    torch.testing.assert_close(W_after, gamma * W_before.detach())
    assert abs(float((X @ W_after.T).abs().max()) - 1.7) < 1e-12
    scale_to_entry_bound(k, X, 0.3)
    assert abs(float((X @ (k.weight + k.delta_weight()).detach().T).abs().max()) - 0.3) < 1e-12


@pytest.mark.parametrize("L,d,k", [(64, 4, None), (64, 4, 15), (48, 6, 28)])
def test_head_flops_counts_the_products_torch_counts(L, d, k):
    X, Y, (q, kk, v) = _head(L=L, d=d, seed=5)
    tau = 1 / d
    Q, K, V = (X @ m.weight.T for m in (q, kk, v))   # the head's own products, not the projections
    if k is None:
        from reprolib.kernels.lora_attention import _explicit_head_grads
        counted = count_flops(_explicit_head_grads, Q, K, V, Y, tau)
    else:
        from reprolib.kernels.lora_attention import _chained_head_grads
        U, F = torch.randn(L, k, dtype=torch.float64), torch.randn(L, k, dtype=torch.float64)
        counted = count_flops(_chained_head_grads, Q, K, V, Y, tau, U, F)
    # torch counts matrix products (and einsums as bmm); the row sums (a matrix-vector product) are not
    assert abs(counted - head_flops(L, d, k)) <= 0.05 * head_flops(L, d, k)


def test_budget_rank_and_taylor_degree():
    for L, d in ((1024, 8), (4096, 8), (777, 5)):
        k = budget_rank(L, d)
        assert head_flops(L, d, k) <= 0.5 * head_flops(L, d) < head_flops(L, d, k + 1)
        g = taylor_degree(d, k)
        assert taylor_rank(d, g) <= k < taylor_rank(d, g + 1)
    assert [taylor_degree(8, budget_rank(L, 8)) for L in (256, 1024, 4096, 16384)] == [1, 2, 3, 4]


def test_eps_rank_closed_forms():
    sig = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    M = torch.diag(sig)
    total = float(sig.norm())
    assert eps_rank(M, 0.0) == 4
    assert eps_rank(M, 0.5 / total + 1e-12) == 3          # dropping 0.5 leaves exactly 0.5
    assert eps_rank(sig.flip(0), math.sqrt(1.25) / total + 1e-12) == 2
    assert eps_rank(M, 1.0) == 0
    g = torch.Generator().manual_seed(0)
    low = torch.randn(50, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 40, generator=g, dtype=torch.float64)
    assert eps_rank(low, 1e-10) == 3


def test_attention_svd_and_svd_factors_match_torch_svd_and_eckart_young():
    g = torch.Generator().manual_seed(6)
    Q, K = (torch.randn(40, 4, generator=g, dtype=torch.float64) * 2 for _ in range(2))
    U, sig, P = attention_svd(Q, K, 0.5)
    torch.testing.assert_close(P, torch.softmax(0.5 * Q @ K.T, -1))
    ref = torch.linalg.svdvals(P)
    big = ref > 1e-6 * ref[0]
    torch.testing.assert_close(sig[big], ref[big], rtol=1e-8, atol=1e-12)
    for k in (1, 5, 12):
        Uk, F = svd_factors(k)(Q, K, 0.5)
        assert Uk.shape == (40, k) and F.shape == (40, k)
        err = float((P - Uk @ F.T).norm())
        assert abs(err - float(ref[k:].norm())) < 1e-9 * float(ref.norm())   # the best rank-k error
