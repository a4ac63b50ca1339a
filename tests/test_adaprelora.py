"""AdaPreLoRA (reprolib.optim.adaprelora) against its definitions: torch.optim.Adafactor's factored
second moments, the weighted least-squares problem solved by brute force on the Kronecker system,
the gauge's balancing criterion minimised by brute force, and Riemannian preconditioning's formula."""
import pytest
import torch
from torch import nn

from reprolib.layers import lora_linears
from reprolib.optim import (AdaPreLoRA, RiemannianAdamW, adafactor_direction, adafactor_stats,
                            adaprelora_factor_step, riemannian_precondition)



@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _factors(m=7, n=5, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, A, D = torch.randn(m, r, generator=g), torch.randn(r, n, generator=g), torch.randn(m, n, generator=g)
    h_r, h_c = torch.rand(m, generator=g) + 0.2, torch.rand(n, generator=g) + 0.2
    return B, A, D, h_r, h_c


def test_adafactor_stats_match_torch_adafactor():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, 4))
    opt = torch.optim.Adafactor([p], lr=1e-2)
    R, C = torch.zeros(6), torch.zeros(4)
    for t in range(1, 5):
        G = torch.randn(6, 4) * (1 + torch.arange(6.0))[:, None]
        p.grad = G.clone()
        opt.step()
        adafactor_stats(R, C, G, t, eps1=0.0)
        st = opt.state[p]
        torch.testing.assert_close(R, st["row_var"].flatten())
        torch.testing.assert_close(C, st["col_var"].flatten())
        # V = R C^T / mean R, and the direction is G / sqrt(V) before clipping (d large)
        D, h_r, h_c = adafactor_direction(G, R, C, d=1e9)
        V = R[:, None] * C[None, :] / R.mean()
        torch.testing.assert_close(D, G / V.sqrt())
        torch.testing.assert_close(h_r[:, None] ** 2 * h_c[None, :] ** 2, V)


def test_adafactor_direction_clips_rms_at_d():
    G = torch.randn(5, 3) * 100
    R, C = adafactor_stats(torch.zeros(5), torch.zeros(3), G * 1e-3, 1)  # small V: a large raw direction
    D, _, _ = adafactor_direction(G, R, C, d=1.0)
    torch.testing.assert_close(D.pow(2).mean().sqrt(), torch.tensor(1.0))


def _weighted_lstsq_product(B, A, D, h_r, h_c):
    """Brute force: min ||H_r^1/2 (dB A + B dA - D) H_c^1/2||_F over (dB, dA) via lstsq on vec."""
    m, r = B.shape
    n = A.shape[1]
    wr, wc = h_r.sqrt(), h_c.sqrt()
    cols = []
    for k in range(m * r):
        E = torch.zeros(m * r)
        E[k] = 1
        cols.append((E.view(m, r) @ A).flatten())
    for k in range(r * n):
        E = torch.zeros(r * n)
        E[k] = 1
        cols.append((B @ E.view(r, n)).flatten())
    J = torch.stack(cols, 1)
    W = (wr[:, None] * wc[None, :]).flatten()
    sol = torch.linalg.lstsq(W[:, None] * J, W * D.flatten(), driver="gelsd").solution
    return (J @ sol).view(m, n)


def test_w_space_step_is_the_weighted_least_squares_solution():
    B, A, D, h_r, h_c = _factors()
    dB, dA, _ = adaprelora_factor_step(B, A, D, h_r, h_c, delta=0.0)
    torch.testing.assert_close(dB @ A + B @ dA, _weighted_lstsq_product(B, A, D, h_r, h_c))


def test_identity_metric_gives_the_frobenius_projection():
    B, A, D, _, _ = _factors(seed=1)
    one_r, one_c = torch.ones(B.shape[0]), torch.ones(A.shape[1])
    dB, dA, _ = adaprelora_factor_step(B, A, D, one_r, one_c, delta=0.0)
    PB = B @ torch.linalg.pinv(B)
    PA = torch.linalg.pinv(A) @ A
    torch.testing.assert_close(dB @ A + B @ dA, PB @ D + (torch.eye(len(PB)) - PB) @ D @ PA)


def test_gauge_minimises_the_imbalance_and_leaves_the_w_step_unchanged():
    B, A, D, h_r, h_c = _factors(seed=2)
    dB, dA, X = adaprelora_factor_step(B, A, D, h_r, h_c, delta=0.0)
    wr, wc = h_r.sqrt()[:, None], h_c.sqrt()[None, :]
    Bt, At = wr * B, A * wc
    dBt, dAt = wr * dB, dA * wc

    def imbalance(Y):  # the family at gauge X + Y
        return (dBt + Bt @ Y) @ At - Bt @ (dAt - Y @ At)

    r = B.shape[1]
    # brute force: imbalance(Y) is affine in Y; its least-squares minimiser must be Y = 0
    cols = []
    for k in range(r * r):
        E = torch.zeros(r * r)
        E[k] = 1
        cols.append((imbalance(E.view(r, r)) - imbalance(torch.zeros(r, r))).flatten())
    Y = torch.linalg.lstsq(torch.stack(cols, 1), -imbalance(torch.zeros(r, r)).flatten()).solution
    assert Y.abs().max() < 1e-8
    # any other gauge: same W-space step, larger imbalance
    Y = torch.randn(r, r)
    torch.testing.assert_close((dBt + Bt @ Y) @ At + Bt @ (dAt - Y @ At), dBt @ At + Bt @ dAt)
    assert imbalance(Y).norm() > imbalance(torch.zeros(r, r)).norm()


def test_zero_b_init_moves_only_b():
    B, A, D, h_r, h_c = _factors(seed=3)
    dB, dA, X = adaprelora_factor_step(torch.zeros_like(B), A, D, h_r, h_c, delta=1e-12)
    assert dA.abs().max() == 0 and X.abs().max() == 0
    wc = h_c.sqrt()[None, :]
    At = A * wc
    torch.testing.assert_close(dB * h_r.sqrt()[:, None] @ At, (h_r.sqrt()[:, None] * D * wc) @ torch.linalg.pinv(At) @ At)


def test_optimizer_hooks_form_the_full_weight_gradient_and_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    layers = lora_linears(net, "lora", r=2, alpha=4, generator=torch.Generator().manual_seed(0))
    for lay in layers.values():
        with torch.no_grad():
            lay.B.normal_()
    opt = AdaPreLoRA(layers, lr=0.1, beta1=0.0, delta=0.0)
    x, y = torch.randn(4, 5, 6), torch.randn(4, 5, 3)
    # the reference: G = dL/dW from a dense copy of each layer's weight
    lay = layers["2"]
    W = (lay.weight + lay.delta_weight()).detach().requires_grad_(True)
    h = net[1](layers["0"](x))
    ((nn.functional.linear(h, W, lay.bias) - y) ** 2).mean().backward()
    G = W.grad.clone()
    B0, A0 = lay.B.detach().clone(), lay.A.detach().clone()
    ((net(x) - y) ** 2).mean().backward()
    opt.step()
    R, C = adafactor_stats(torch.zeros(3), torch.zeros(8), G, 1)
    D, h_r, h_c = adafactor_direction(G, R, C)
    dB, dA, _ = adaprelora_factor_step(B0, A0, D / lay.scale, h_r, h_c, delta=0.0)
    torch.testing.assert_close(lay.B.detach(), B0 - 0.1 * dB)
    torch.testing.assert_close(lay.A.detach(), A0 - 0.1 * dA)
    # state: R, C and two momenta, (m + n)(r + 1) per layer, below Adam's 2 (m + n) r
    assert opt.state_elements() == sum((l.weight.shape[0] + l.weight.shape[1]) * 3 for l in layers.values())
    opt.zero_grad()
    with torch.no_grad():
        net(x)  # no graph: no hook fires, nothing is queued
    opt.step()
    torch.testing.assert_close(lay.B.detach(), B0 - 0.1 * dB)


def test_riemannian_precondition_formula_and_scale_invariance():
    B, A, _, _, _ = _factors(seed=4)
    gB, gA = torch.randn_like(B), torch.randn_like(A)
    nB, nA = riemannian_precondition(B, A, gB, gA, delta=0.0)
    torch.testing.assert_close(nA, torch.linalg.inv(B.T @ B) @ gA)
    torch.testing.assert_close(nB, gB @ torch.linalg.inv(A @ A.T))
    # the W-space step nB A + B nA is invariant to B -> B S, A -> S^-1 A (gradients transform covariantly)
    S = torch.randn(2, 2) + 3 * torch.eye(2)
    Si = torch.linalg.inv(S)
    G = torch.randn(B.shape[0], A.shape[1])
    step = lambda B, A: (lambda g: g[0] @ A + B @ g[1])(riemannian_precondition(B, A, G @ A.T, B.T @ G, 0.0))
    torch.testing.assert_close(step(B, A), step(B @ S, Si @ A))


def test_riemannian_adamw_steps_on_preconditioned_grads():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4))
    layers = lora_linears(net, "lora", r=2, generator=torch.Generator().manual_seed(0))
    lay = layers["0"]
    with torch.no_grad():
        lay.B.normal_()
    ref = lay.B.detach().clone(), lay.A.detach().clone()
    opt = RiemannianAdamW(layers, lr=0.01, delta=1e-6, betas=(0.9, 0.95))
    (net(torch.randn(3, 6)) ** 2).sum().backward()
    gB, gA = riemannian_precondition(*ref, lay.B.grad.clone(), lay.A.grad.clone(), 1e-6)
    opt.step()
    torch.testing.assert_close(lay.B.grad, gB.to(lay.B.grad.dtype))
    torch.testing.assert_close(lay.A.grad, gA.to(lay.A.grad.dtype))
    assert not torch.equal(lay.B.detach(), ref[0])


def test_step_ignores_the_overall_scale_of_h_and_damping_vanishes_at_zero_b():
    B, A, D, h_r, h_c = _factors(seed=5)
    dB, dA, _ = adaprelora_factor_step(B, A, D, h_r, h_c, delta=1e-3)
    dB2, dA2, _ = adaprelora_factor_step(B, A, D, 7.0 * h_r, 0.01 * h_c, delta=1e-3)
    torch.testing.assert_close((dB, dA), (dB2, dA2))
    # near-zero B: the damped gauge stays small instead of growing like 1 / |B|
    _, _, X = adaprelora_factor_step(1e-6 * B, A, D, h_r, h_c, delta=1e-3)
    assert X.abs().max() < 1e-2
