"""GaLore and Fira against the official packages (galore-torch 1.0, fira 1.0.2) and the paper's equations."""
import sys
import types

import pytest
import torch

from reprolib.optim import Fira, GaLore, fira_scaling, galore_basis, norm_growth_limit, project, project_back


def _stub_oracle_imports():
    """The official packages import transformers (a version check) and bitsandbytes (8-bit Adam,
    unused here) at import time; stub both so the AdamW oracles load without them."""
    if "transformers" not in sys.modules:
        tr, ut, ve = (types.ModuleType(n) for n in ("transformers", "transformers.utils", "transformers.utils.versions"))
        ve.require_version = lambda *a, **k: None
        tr.utils, ut.versions = ut, ve
        sys.modules.update({"transformers": tr, "transformers.utils": ut, "transformers.utils.versions": ve})
    if "bitsandbytes" not in sys.modules:
        bnb, bo, boo = (types.ModuleType(n) for n in ("bitsandbytes", "bitsandbytes.optim", "bitsandbytes.optim.optimizer"))
        boo.Optimizer2State = type("Optimizer2State", (torch.optim.Optimizer,), {})
        bnb.optim, bo.optimizer = bo, boo
        sys.modules.update({"bitsandbytes": bnb, "bitsandbytes.optim": bo, "bitsandbytes.optim.optimizer": boo})


def _run(opt_cls, shapes, steps, seed=0, **kw):
    torch.manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in shapes]
    grads = [[torch.randn(*s, dtype=torch.float64) * (1 + 0.5 * t) for s in shapes] for t in range(steps)]
    opt = opt_cls(ps, **kw)
    out = []
    for g in grads:
        for p, gi in zip(ps, g):
            p.grad = gi.clone()
        opt.step()
        out.append([p.detach().clone() for p in ps])
    return out


SHAPES = [(6, 10), (12, 5), (8, 8)]  # wide, tall, square


def _groups(ps, rank, gap, scale):
    return [dict(params=ps[:3], rank=rank, update_proj_gap=gap, scale=scale)]


@pytest.mark.parametrize("which", ["galore", "fira"])
def test_matches_official(which):
    _stub_oracle_imports()
    if which == "galore":
        official = pytest.importorskip("galore_torch").GaLoreAdamW
        mine, key = GaLore, "scale"
    else:
        official = pytest.importorskip("fira").FiraAdamW
        mine, key = Fira, "alpha"
    rank, gap, scale = 3, 4, 0.25
    ref = _run(lambda ps, **k: official([dict(params=ps, rank=rank, update_proj_gap=gap, proj_type="std",
                                              **{key: scale})], lr=0.01, no_deprecation_warning=True),
               SHAPES, 11)
    got = _run(lambda ps, **k: mine([dict(params=ps, rank=rank, update_proj_gap=gap, scale=scale)], lr=0.01),
               SHAPES, 11)
    for a, b in zip(ref, got):
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-9)


def test_regular_group_matches_official_adamw():
    _stub_oracle_imports()
    official = pytest.importorskip("fira").FiraAdamW
    ref = _run(lambda ps: official(ps, lr=0.01, no_deprecation_warning=True), SHAPES, 5)
    got = _run(lambda ps: GaLore(ps, lr=0.01), SHAPES, 5)
    torch.testing.assert_close(got[-1], ref[-1], rtol=1e-9, atol=1e-9)


def test_full_rank_galore_is_scaled_adam_and_fira_residual_vanishes():
    """At r = min(m, n) the projection loses nothing: GaLore's first step is alpha * lr * sign-like
    Adam step, and Fira's residual G - alpha P R is (1 - alpha) G, scaled by phi."""
    torch.manual_seed(1)
    G = torch.randn(5, 9, dtype=torch.float64)
    P = galore_basis(G, 5)
    torch.testing.assert_close(project_back(project(G, P), P, True), G, rtol=1e-5, atol=1e-5)  # fp32 SVD
    # first Adam step: psi = g / (|g| + eps) elementwise (bias-corrected size lr), here in the rotated basis
    p = torch.nn.Parameter(torch.zeros(5, 9, dtype=torch.float64))
    p.grad = G.clone()
    GaLore([dict(params=[p], rank=5, update_proj_gap=200, scale=0.25)], lr=0.1, eps=0.0).step()
    R = P.T @ G
    torch.testing.assert_close(p.detach(), -0.1 * 0.25 * P @ torch.sign(R))  # exact: same P
    # alpha = 1: Fira adds nothing to GaLore at full rank
    q1, q2 = (torch.nn.Parameter(torch.zeros(5, 9, dtype=torch.float64)) for _ in range(2))
    for q, cls in ((q1, GaLore), (q2, Fira)):
        q.grad = G.clone()
        cls([dict(params=[q], rank=5, update_proj_gap=200, scale=1.0)], lr=0.1).step()
    torch.testing.assert_close(q1.detach(), q2.detach(), rtol=0, atol=1e-6)  # fp32 SVD residue


def test_fira_step_closed_form():
    """One Fira step on a wide matrix equals Eqs. (6)-(9) written out by hand."""
    torch.manual_seed(2)
    G = torch.randn(4, 7, dtype=torch.float64)
    U = torch.linalg.svd(G)[0][:, :2]
    R = U.T @ G
    psi = (0.1 * R) / ((0.001 * R * R).sqrt() + 1e-6)     # first step: m = 0.1 R, v = 0.001 R^2
    phi = psi.norm(dim=0) / (R.norm(dim=0) + 1e-8)        # per column of R
    S = (G - 0.25 * U @ R) * phi
    step = 0.01 * (1 - 0.999) ** 0.5 / (1 - 0.9)
    want = -step * (0.25 * U @ psi + S)
    p = torch.nn.Parameter(torch.zeros(4, 7, dtype=torch.float64))
    p.grad = G.clone()
    Fira([dict(params=[p], rank=2, update_proj_gap=200, scale=0.25)], lr=0.01).step()
    torch.testing.assert_close(p.detach(), want)
    tall = torch.randn(7, 4, dtype=torch.float64)
    assert fira_scaling(tall @ torch.randn(4, 2, dtype=torch.float64), torch.randn(7, 2)).shape == (7, 1)


def test_limiter_bounds_growth_and_leaves_small_growth_alone():
    prev = None
    norms = []
    for t in range(20):
        S = torch.randn(6, 6) * (3.0 ** t)  # explosive growth
        S, prev = norm_growth_limit(S, prev, 1.01)
        norms.append(float(S.norm()))
        torch.testing.assert_close(S.norm(), prev)
    ratios = [b / a for a, b in zip(norms, norms[1:])]
    assert max(ratios) <= 1.01 + 1e-6 and min(ratios) > 1.0
    S = torch.ones(3, 3)
    out, n = norm_growth_limit(S, torch.tensor(3.0), 1.01)  # ||S|| = 3: ratio 1 <= gamma, untouched
    torch.testing.assert_close(out, S)


def test_projector_refreshes_every_T_steps():
    torch.manual_seed(3)
    p = torch.nn.Parameter(torch.randn(6, 10))
    opt = GaLore([dict(params=[p], rank=2, update_proj_gap=5, scale=0.25)], lr=0.01)
    changed = []
    last = None
    for t in range(16):
        p.grad = torch.randn(6, 10)
        opt.step()
        b = opt.state[p]["basis"]
        changed.append(last is not None and not torch.equal(b, last))
        last = b.clone()
    assert [t for t, c in enumerate(changed) if c] == [5, 10, 15]
    assert opt.state[p]["exp_avg"].shape == (2, 10)
    assert opt.state_elements() == 2 * 2 * 10 + 6 * 2
