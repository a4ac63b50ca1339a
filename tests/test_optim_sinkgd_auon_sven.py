"""SinkGD (arXiv 2502.06742), AuON (arXiv 2509.24320), Sven (arXiv 2604.01279).

Oracles: SR-Sinkhorn's fixed point; the AuON paper's and training script's equations
(github.com/ryyzn9/AuON, Auon_Adam_train.py; transcribed below) and a 2x2 case by hand;
for Sven, the minimum-norm / truncated least-squares solutions of torch.linalg in float64.
"""
import math

import pytest
import torch

from reprolib.optim.auon import AuON, auon_update
from reprolib.optim.sinkgd import SinkGD, sinkhorn_normalize
from reprolib.optim.sven import Sven, sven_step, truncated_pinv_solve

MATMULS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear"}
F64 = dict(dtype=torch.float64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _dev(X):  # worst relative deviation of the row norms from sqrt(n) and of the column norms from sqrt(m)
    m, n = X.shape[-2:]
    return ((X.norm(dim=-1) / n ** 0.5 - 1).abs().max().item(), (X.norm(dim=-2) / m ** 0.5 - 1).abs().max().item())


# ---------------------------------------------------------------- SinkGD
@pytest.mark.parametrize("shape", [(48, 64), (96, 32), (32, 96)])
@pytest.mark.parametrize("positive", [True, False])
def test_sinkhorn_reaches_the_fixed_point(shape, positive):
    G = torch.randn(shape, generator=_gen(0))
    assert max(_dev(sinkhorn_normalize(G.abs() + 1e-3 if positive else G, iters=100))) < 1e-4


def test_sinkhorn_after_five_iterations():
    """L = 5: at the fixed point for Gaussian gradients, 5-10% off for heavy-tailed ones. Columns
    are normalised last, so they are always exact."""
    gauss = torch.randn(64, 64, generator=_gen(0))
    heavy = gauss * torch.exp(2 * torch.randn(64, 64, generator=_gen(1)))   # log-normal entry scales
    dev = {name: _dev(sinkhorn_normalize(G, 5)) for name, G in (("gauss", gauss), ("heavy", heavy))}
    print(f"(row, column) deviation after L=5: {dev}")
    assert dev["gauss"][0] < 1e-4 and 1e-3 < dev["heavy"][0] < 0.2 and max(dev["gauss"][1], dev["heavy"][1]) < 1e-6
    assert _dev(sinkhorn_normalize(gauss, 1))[0] > 1e-2


def test_sinkhorn_scale_invariant_and_batched():
    G = torch.randn(3, 24, 40, generator=_gen(1))
    X = sinkhorn_normalize(G, 5)
    torch.testing.assert_close(sinkhorn_normalize(7 * G, 5), X, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sinkhorn_normalize(torch.rand(3, 24, 1, generator=_gen(2)) * G, 5), X, rtol=1e-5, atol=1e-5)
    for i in range(3):
        torch.testing.assert_close(sinkhorn_normalize(G[i], 5), X[i], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(sinkhorn_normalize(G + 0.3 * torch.randn(G.shape, generator=_gen(3)), 5), X, atol=1e-2)


def test_sinkgd_is_stateless_and_steps_minus_lr_x():
    W, V, unused = (torch.nn.Parameter(torch.randn(s, generator=_gen(2))) for s in [(16, 24), (16, 24), (8, 8)])
    b = torch.nn.Parameter(torch.zeros(5))
    opt = SinkGD([dict(params=[W, V, unused]), dict(params=[b], use_muon=False, lr=1e-2)], lr=0.01)
    U0 = unused.detach().clone()
    for _ in range(3):
        W0 = W.detach().clone()
        for p in (W, V, b):
            p.grad = torch.randn(p.shape)
        opt.step()
    torch.testing.assert_close(W.detach(), W0 - 0.01 * sinkhorn_normalize(W.grad, 5), rtol=0, atol=1e-6)
    assert torch.equal(unused.detach(), U0) and not {W, V, unused} & set(opt.state)   # no state at all
    nbytes = {p: sum(t.nbytes for t in s.values() if torch.is_tensor(t)) for p, s in opt.state.items()}
    assert sum(nbytes.get(p, 0) for p in (W, V, unused)) == 0 and nbytes[b] == 2 * 5 * 4   # AdamW: 2 moments


# ---------------------------------------------------------------- AuON
def test_auon_closed_form_one_step():
    G = [[1.0, 2.0], [3.0, 4.0]]                                # ||G||_F = sqrt(30)
    r = math.sqrt(sum(math.cosh(v / 30 ** 0.5) ** 2 for v in (1, 2, 3, 4)) / 4)
    assert abs(r - 1.13352) < 1e-5
    W, T = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.zeros(4, 2))   # T: tall, scale sqrt(2)
    opt = AuON([W, T], lr=0.1, weight_decay=0.5)
    W.grad, T.grad = torch.tensor(G), torch.tensor(G + G)      # G stacked twice: ||.||_F = sqrt(60)
    opt.step()
    torch.testing.assert_close(W.detach(), torch.tensor([[0.95 - 0.1 * v / 30 ** 0.5 / r for v in row] for row in G]))
    r_T = math.sqrt(sum(math.cosh(v / 60 ** 0.5) ** 2 for v in (1, 2, 3, 4)) / 4)
    torch.testing.assert_close(T.detach(), -(2 ** 0.5) * 0.1 * torch.tensor(G + G) / 60 ** 0.5 / r_T)


@pytest.mark.parametrize("gamma", [1.0, 1.5])
def test_auon_matches_official_equations(gamma):
    ours = [torch.nn.Parameter(torch.randn(s, generator=_gen(3))) for s in [(12, 8), (8, 12), (10, 10), (10, 10)]]
    ref, bufs = [p.detach().double().clone() for p in ours], [torch.zeros(p.shape, **F64) for p in ours]
    opt, g = AuON(ours, lr=0.24, weight_decay=0.1, gamma=gamma), _gen(4)
    for _ in range(5):
        for p, q, m in zip(ours, ref, bufs):   # the script's auon step (= paper Sec. 3.1); gamma, wd: the package's
            p.grad = torch.randn(p.shape, generator=g) * torch.rand(p.shape[0], 1, generator=g) * 3
            u = p.grad.double().lerp(m.lerp_(p.grad.double(), 1 - 0.95), 0.95)
            X = u / (u.norm() + 1e-7)
            q.mul_(1 - 0.24 * 0.1).sub_(0.24 * max(1, q.size(-2) / q.size(-1)) ** 0.5 * X
                                       / (torch.sqrt(torch.mean(torch.cosh(gamma * X) ** 2)) + 1e-8))
        opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.detach().double(), q, rtol=0, atol=1e-6)


def test_auon_gamma_changes_the_update_and_norm_at_most_one():
    spike = torch.zeros(3, 3)
    spike[0, 0], spike[1, 2] = 5.0, 1.0
    assert (auon_update(spike, torch.zeros(3, 3), gamma=1.0) - auon_update(spike, torch.zeros(3, 3), gamma=1.5)).norm() > 0.05
    for shape in [(2, 2), (16, 64), (64, 16), (128, 128)]:
        assert auon_update(torch.randn(shape, generator=_gen(4)) ** 3, torch.zeros(shape)).norm() <= 1 + 1e-6
    D = auon_update(spike[:2, :2], torch.zeros(2, 2))           # one entry: r = sqrt((cosh(1)^2 + 3) / 4)
    assert abs(D.norm().item() - ((math.cosh(1) ** 2 + 3) / 4) ** -0.5) < 1e-5


def test_auon_is_linear_time_hybrid_is_not():
    ops = {}
    for ns_steps in (0, 1):
        W = torch.nn.Parameter(torch.randn(32, 48))
        opt, W.grad = AuON([W], hybrid_ns_steps=ns_steps), torch.randn(32, 48)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
        ops[ns_steps] = {e.key for e in prof.key_averages()} & MATMULS
    assert not ops[0] and ops[1]                                # the profiler does see products


def test_hybrid_auon_is_one_ns_step_then_cosh_scaling():
    a, b, c = (3.4445, -4.7750, 2.0315)
    G = torch.randn(24, 40, generator=_gen(5), **F64)
    X = G / G.norm()                                            # step 1: U = (1 - beta^2) G, same direction
    A = X @ X.T
    X = a * X + (b * A + c * A @ A) @ X
    expected = X / (torch.sqrt(torch.mean(torch.cosh(X) ** 2)) + 1e-8)
    for g, e in ((G, expected), (G.T.contiguous(), expected.T)):   # wide and tall
        torch.testing.assert_close(auon_update(g.float(), torch.zeros(g.shape), hybrid_ns_steps=1,
                                               ns_dtype=torch.float32).double(), e, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- Sven
def residual(f, batch):
    return f(batch[0]).squeeze(-1) - batch[1]


def theta(model):
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().double()


def _linear(d, B, zero=True):
    torch.manual_seed(6)
    model = torch.nn.Linear(d, 1)
    for p in model.parameters() if zero else ():
        torch.nn.init.zeros_(p)
    X, y = torch.randn(B, d), torch.randn(B)
    return model, (X, y), torch.cat([X, torch.ones(B, 1)], 1).double()   # J = d residual / d (w, b)


@pytest.mark.parametrize("zero", [True, False])
def test_sven_full_rank_step_is_the_minimum_norm_solution(zero):
    model, batch, J = _linear(d=12, B=8, zero=zero)            # P = 13 > B = 8: underdetermined
    theta0 = theta(model)
    delta = sven_step(model, residual, batch, eta=1.0, k=8)
    assert torch.equal(theta(model), theta0)                  # pure
    Sven(model, eta=1.0, k=8).step(residual, batch)
    torch.testing.assert_close(theta(model) - theta0, delta.double(), rtol=0, atol=1e-6)
    y = batch[1].double()
    nearest = theta0 + torch.linalg.pinv(J) @ (y - J @ theta0)  # the solution nearest theta0: J^+ y from 0
    torch.testing.assert_close(theta(model), nearest, rtol=0, atol=1e-5)
    assert residual(model, batch).abs().max() < 1e-5


def test_sven_rank_k_and_overdetermined():
    model, batch, J = _linear(d=12, B=8, zero=False)
    r = residual(model, batch).detach().double()
    U, S, Vh = torch.linalg.svd(J, full_matrices=False)
    for k in (1, 3, 5):
        torch.testing.assert_close(sven_step(model, residual, batch, k=k).double(), -Vh[:k].T @ (U[:, :k].T @ r / S[:k]),
                                   rtol=0, atol=1e-5)
    model, batch, J = _linear(d=3, B=20)                       # P = 4 < B: the P x P Gram path
    lstsq = torch.linalg.lstsq(J, batch[1].double()[:, None]).solution[:, 0]
    torch.testing.assert_close(sven_step(model, residual, batch).double(), lstsq, rtol=0, atol=1e-5)


def test_sven_rcond_drops_tiny_singular_values():
    g = _gen(7)
    U, V = (torch.linalg.qr(torch.randn(n, 4, generator=g, **F64))[0] for n in (4, 6))
    s = torch.tensor([1.0, 0.5, 0.2, 1e-7], **F64)
    J, r = U @ torch.diag(s) @ V.T, torch.randn(4, generator=g, **F64)
    rank = {k: V[:, :k] @ (U[:, :k].T @ r / s[:k]) for k in (2, 3)}
    for rcond, k in ((1e-6, 3), (1e-3, 3), (0.3, 2)):
        torch.testing.assert_close(truncated_pinv_solve(J, r, rcond=rcond), rank[k], rtol=1e-6, atol=1e-6)
    assert truncated_pinv_solve(J, r, rcond=1e-9).norm() > 1e5 * rank[3].norm()   # 1 / 1e-7 let in


def test_sven_fits_a_tanh_mlp_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.linspace(-1, 1, 32)[:, None]
    batch, opt = (x, torch.sin(5 * x[:, 0])), Sven(model, eta=0.5, k=32)   # rcond 1e-3, the code's default
    first = opt.step(residual, batch).square().mean().item()
    for _ in range(19):
        opt.step(residual, batch)
    assert residual(model, batch).square().mean().item() < 1e-3 * first
