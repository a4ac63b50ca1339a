"""Stable-SPAM, gradient noise and TrAct against their oracles.

Oracles: the official Stable-SPAM step (github.com/TianjinYellow/StableSPAM, galore_torch/stablespam.py,
transcribed below; `stale_reset` keeps its one-step-late moment reset) and pytorch-optimizer's StableSPAM
(equal up to the first reset); the law eta / (1 + t)^gamma by sampling; for TrAct an explicit inverse and
the gradients printed by the official src/tract.py. Changed constants are shown to fail each oracle.
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from reprolib.optim.grad_noise import GradientNoise, add_gradient_noise
from reprolib.optim.stable_spam import StableSPAM
from reprolib.optim.tract import TrActConv2d, TrActLinear, tract, tract_grad

SHAPES = [(12, 8), (20,), (4, 3, 5)]


def _maxdiff(xs, ys):
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(xs, ys))


def _grads(steps, spike_at=7):
    """One gradient per shape and step; at step 8 three entries of each are 1000x (a planted spike)."""
    g = torch.Generator().manual_seed(0)
    out = [[torch.randn(s, generator=g) * (1 + 0.1 * t) for s in SHAPES] for t in range(steps)]
    for grad in out[spike_at]:
        grad.view(-1)[:3] *= 1000.0
    return out


def official_step(p, grad, st, s, lr, wd, scale=1.0, gap=10, stale_reset=False, b1=0.9, b2=0.999,
                  gamma1=0.7, gamma2=0.9, theta=0.999, eps=1e-8):
    """The official StableSPAM.step for one tensor at global step s, transcribed (amsgrad off)."""
    p.mul_(1 - lr * wd)
    grad, exp_avg, exp_avg_sq = grad.clone(), st["exp_avg"], st["exp_avg_sq"]
    max_gradient = grad.abs().max()
    st["step"] += 1
    st["m_max"] = theta * st["m_max"] + (1 - theta) * max_gradient
    m_max_hat = st["m_max"] / (1 - theta ** st["step"])
    mask = grad.abs() > m_max_hat
    grad[mask] = grad[mask] / max_gradient * m_max_hat
    norm = torch.norm(grad)
    st["m_norm"] = gamma1 * scale * st["m_norm"] + (1 - gamma1 * scale) * norm
    st["v_norm"] = gamma2 * st["v_norm"] + (1 - gamma2) * norm ** 2
    m_hat, v_hat = st["m_norm"] / (1 - (gamma1 * scale) ** st["step"]), st["v_norm"] / (1 - gamma2 ** st["step"])
    if norm > 0:
        grad = grad / norm * (m_hat / (torch.sqrt(v_hat) + eps))
    if s % gap == 0:
        st["exp_avg"], st["exp_avg_sq"], st["step"] = torch.zeros_like(grad), torch.zeros_like(grad), 1
        if not stale_reset:  # the official code goes on updating the old tensors in this step
            exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
    b1 = b1 * scale
    exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - b2 ** st["step"])).add_(eps)
    p.add_(exp_avg / denom, alpha=-lr / (1 - b1 ** st["step"]))
    return mask.any().item()


def _vs_official(steps=25, total_T=None, stale_reset=False, **changed):
    """Max |ours - official| over SHAPES after `steps` (spike at 8, resets at 10 and 20, wd 0.1)."""
    ours_p = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(1))) for s in SHAPES]
    theirs_p = [p.detach().clone() for p in ours_p]
    ours = StableSPAM(ours_p, lr=1e-2, weight_decay=0.1, reset_interval=10, total_T=total_T)
    ours.param_groups[0].update(changed)
    states = [dict(step=0, m_max=0, m_norm=0, v_norm=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
              for p in theirs_p]
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)  # the official CosineDecay
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, (total_T or 0) + 1, 0.5)
    clipped = []
    for s, grads in enumerate(_grads(steps), start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(s)
        for p, q, grad, st in zip(ours_p, theirs_p, grads, states):
            p.grad = grad.clone()
            clipped.append(official_step(q, grad, st, s, 1e-2, 0.1, sgd.param_groups[0]["lr"] if total_T else 1.0,
                                         stale_reset=stale_reset))
        ours.step()
    assert steps < 8 or all(clipped[21:24])  # AdaClip does cut the planted spike (step 8)
    return _maxdiff(ours_p, theirs_p)


@pytest.mark.parametrize("total_T", [None, 30])
def test_stable_spam_matches_official_equations(total_T):
    assert _vs_official(total_T=total_T) < 1e-6


@pytest.mark.parametrize("change", [dict(gamma1=0.75), dict(theta=0.99), dict(gamma2=0.95),
                                    dict(reset_interval=11), dict(stale_reset=True)])
def test_stable_spam_oracle_catches_a_change(change):
    assert _vs_official(**change) > 1e-4
    if "stale_reset" in change:  # the official late reset matters from the reset step on, not before
        assert _vs_official(steps=9, **change) < 1e-6 < 1e-4 < _vs_official(steps=10, **change)


def test_stable_spam_vs_pytorch_optimizer_and_missing_grads():
    po = pytest.importorskip("pytorch_optimizer")
    a = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    b, idle = [torch.nn.Parameter(p.detach().clone()) for p in a], torch.nn.Parameter(torch.ones(3))
    ours = StableSPAM(a + [idle], lr=1e-2, weight_decay=0.1, reset_interval=10)
    theirs = po.StableSPAM(b, lr=1e-2, weight_decay=0.1, update_proj_gap=10)
    diffs = []
    for grads in _grads(14):
        for p, q, grad in zip(a, b, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        diffs.append(_maxdiff(a, b))
        assert torch.equal(a[0].grad, grads[0])  # unlike theirs, ours leaves p.grad alone
    assert max(diffs[:10]) < 1e-6  # through the spike and the reset step itself
    assert diffs[-1] > 1e-5  # after a reset they bias-correct AdaClip/AdaGN with the global step
    assert idle not in ours.state and torch.equal(idle, torch.ones(3))


@pytest.mark.parametrize("t", [0, 9, 999])
def test_noise_variance_follows_the_schedule(t):
    p = torch.nn.Parameter(torch.zeros(200_000))
    p.grad = torch.zeros_like(p)
    add_gradient_noise([p], t, eta=0.3, gamma=0.55, generator=torch.Generator().manual_seed(t))
    err, tol = abs(p.grad.var().item() / (0.3 / (1 + t) ** 0.55) - 1), 5 * math.sqrt(2 / p.numel())
    assert err < tol and abs(p.grad.mean().item()) < 5 * math.sqrt(0.3 / p.numel())
    assert t == 0 or abs(p.grad.var().item() / (0.3 / (1 + t) ** 0.5) - 1) > tol  # gamma 0.5 would fail


def _noise_run(seed, eta=0.3, steps=4):
    """The noise itself: SGD with lr 1 on a zero gradient moves p by -noise."""
    p = torch.nn.Parameter(torch.zeros(50_000))
    opt, out = GradientNoise(torch.optim.SGD([p], lr=1.0), eta=eta, seed=seed), []
    for _ in range(steps):
        before, p.grad = p.detach().clone(), torch.zeros_like(p)
        opt.step()
        out.append(before - p.detach())
    return out


def test_noise_decays_and_is_seeded():
    noises = _noise_run(0)
    stds = [n.std().item() for n in noises]
    assert all(x > y for x, y in zip(stds, stds[1:]))
    assert all(torch.equal(x, y) for x, y in zip(noises, _noise_run(0)))
    assert not torch.equal(noises[0], _noise_run(1)[0])


def test_eta_zero_is_the_inner_optimizer_and_state_dict_resumes():
    a, idle = torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(a.detach().clone())
    wrapped = GradientNoise(torch.optim.Adam([a, idle], lr=1e-2), eta=0.0, seed=0)
    plain = torch.optim.Adam([b], lr=1e-2)
    for _ in range(5):
        a.grad = torch.randn(6, 4)
        b.grad = a.grad.clone()
        wrapped.step()
        plain.step()
    assert torch.equal(a, b) and idle.grad is None and torch.equal(idle, torch.ones(2))
    p = torch.nn.Parameter(torch.zeros(10))
    opt, p.grad = GradientNoise(torch.optim.SGD([p], lr=1.0), eta=1.0, seed=3), torch.zeros(10)
    opt.step()
    saved, p0, p.grad = opt.state_dict(), p.detach().clone(), torch.zeros(10)
    opt.step()
    opt2, second = GradientNoise(torch.optim.SGD([p], lr=1.0), eta=1.0, seed=99), p.detach().clone()
    opt2.load_state_dict(saved)  # brings back the noise step and the generator (seed 99 unused)
    p.data.copy_(p0)
    p.grad = torch.zeros(10)
    opt2.step()
    assert opt2.noise_step == 2 and torch.equal(p.detach(), second)


def _explicit(grad_W, X, lam):
    return grad_W @ torch.linalg.inv(X.T @ X / X.shape[0] + lam * torch.eye(X.shape[1], dtype=X.dtype))


def _rel_err(got, want):
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("b", [40, 6])  # the n x n solve and the Woodbury b x b solve
def test_tract_grad_closed_form(b):
    G, X = torch.randn(5, 16, dtype=torch.float64), torch.randn(b, 16, dtype=torch.float64)
    torch.testing.assert_close(tract_grad(G, X, 0.1), _explicit(G, X, 0.1), rtol=1e-9, atol=1e-10)
    assert _rel_err(tract_grad(G, X, 0.1), _explicit(G, X, 0.12)) > 1e-3  # lam matters
    torch.testing.assert_close(1e8 * tract_grad(G, X, 1e8), G)  # lam -> inf: lam grad_W' -> grad_W


@pytest.mark.parametrize("kind,batch,kw", [("linear", 3, {}), ("conv", 4, dict(stride=2, padding=1)),
                                          ("conv", 1, dict(dilation=2))])
def test_tract_layer_forward_input_and_weight_grads(kind, batch, kw):
    """Forward and input gradient of nn.Linear / nn.Conv2d; weight gradient = the closed form."""
    ref = torch.nn.Linear(16, 7) if kind == "linear" else torch.nn.Conv2d(3, 6, 3, **kw)
    ours = tract(ref, lam=0.1)
    assert ours.weight is ref.weight and isinstance(ours, TrActLinear if kind == "linear" else TrActConv2d)
    x = torch.randn(batch, 4, 16) if kind == "linear" else torch.randn(batch, 3, 7, 7)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), ours(x2)
    assert torch.equal(y1, y2)
    gw, gx, gb = torch.autograd.grad(y1.square().sum(), (ref.weight, x1, ref.bias))
    tw, tx, tb = torch.autograd.grad(y2.square().sum(), (ours.weight, x2, ours.bias))
    torch.testing.assert_close(tx, gx, rtol=0, atol=1e-5)
    torch.testing.assert_close(tb, gb)
    if kind == "linear":  # 12 rows < 16 features: the Woodbury branch
        X = x.reshape(-1, 16)
    else:  # batch 1 with dilation 2: 9 rows < 27 features
        X = F.unfold(x, 3, kw.get("dilation", 1), kw.get("padding", 0), kw.get("stride", 1))
        X = X.transpose(1, 2).reshape(-1, 27)
    want = _explicit(gw.double().reshape(gw.shape[0], -1), X.double(), 0.1)
    assert _rel_err(tw.reshape(gw.shape[0], -1), want) < 2e-5  # float32 solves vs a float64 inverse


# Printed by the official src/tract.py's self-test (seed 0, lam 0.1, MSE to random targets).
OFFICIAL_LINEAR_W = [[0.0741, 0.0949, -0.0559, -0.0398, -0.1364, 0.0013, 0.1603, -0.0468],
                     [-0.0994, -0.1061, -0.1781, 0.1479, 0.1114, -0.0374, 0.0324, -0.1329],
                     [0.0303, 0.0484, 0.1385, -0.1675, 0.0778, -0.0854, -0.0592, 0.0526],
                     [-0.0726, 0.1049, 0.0998, 0.0420, -0.1409, -0.0031, -0.0432, -0.1150],
                     [0.1438, -0.0729, -0.0261, -0.1015, -0.0902, 0.1821, -0.1520, 0.0950]]
OFFICIAL_CONV_W0 = [[[-0.0501, -0.0166, 0.0214], [-0.0230, 0.0324, 0.0655], [0.0010, 0.0600, 0.0290]],
                    [[-0.0144, 0.0254, 0.0484], [0.0741, -0.0920, 0.0260], [-0.0109, -0.0480, -0.0420]]]
OFFICIAL_CONV_B = [0.0052, -0.0397, 0.1093, 0.0464, -0.1079]


def _official_example(lam):
    torch.manual_seed(0)
    x, y, lin = torch.randn(30, 8), torch.randn(30, 5), TrActLinear(8, 5, lam=lam)
    (y - lin(x)).pow(2).mean().backward()
    torch.manual_seed(0)
    x, y, con = torch.randn(30, 2, 6, 4), torch.randn(30, 5, 4, 2), TrActConv2d(2, 5, 3, 1, 0, lam=lam)
    (y - con(x)).pow(2).mean().backward()
    return _maxdiff([lin.weight.grad, con.weight.grad[0], con.bias.grad],
                    map(torch.tensor, [OFFICIAL_LINEAR_W, OFFICIAL_CONV_W0, OFFICIAL_CONV_B]))


def test_tract_matches_official_printed_gradients():
    assert _official_example(0.1) <= 5.01e-5  # the official values have 4 decimals
    assert _official_example(0.12) > 1e-3  # a changed lambda fails

