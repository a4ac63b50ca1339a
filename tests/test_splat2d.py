"""2-D Gaussian splats and density control (SteepGS, arXiv 2505.05587; 3DGS, arXiv 2308.04079):
the renderer against the Gaussian's closed form, the splitting matrix against autograd Hessians of the
post-split loss, the split's second-order loss change, the per-view position gradients against
autograd, SplatAdam against torch.optim.Adam, and the bookkeeping of ADC and SteepGS densification."""
import copy
import math

import pytest
import torch

from reprolib.data import stills
from reprolib.metrics.splitting import position_gradients, psnr, smallest_eigen, splitting_matrices
from reprolib.models.splat2d import SplatAdam, init_splats, inverse_covariance, pixel_grid, render
from reprolib.optim import density_control as D

DT = torch.float64


def _splats(k=5, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return {"xy": torch.rand(k, 2, generator=g, dtype=dtype) * 1.4 - 0.7,
            "log_scale": torch.log(torch.rand(k, 2, generator=g, dtype=dtype) * 0.3 + 0.15),
            "angle": torch.rand(k, generator=g, dtype=dtype) * 3,
            "opacity_logit": torch.randn(k, generator=g, dtype=dtype),
            "color": torch.rand(k, 3, generator=g, dtype=dtype) + 0.05}


def _target(h=12, seed=1):
    return torch.rand(h, h, 3, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_render_matches_the_gaussian_closed_form():
    p, pix = _splats(3), pixel_grid(7, 9, dtype=DT)
    out = render(p, pix, chunk=2)
    ref = torch.zeros(pix.shape[0], 3, dtype=DT)
    for k in range(3):
        c, s = math.cos(p["angle"][k]), math.sin(p["angle"][k])
        sx, sy = p["log_scale"][k].exp().tolist()
        for i, (x, y) in enumerate(pix.tolist()):
            dx, dy = x - float(p["xy"][k, 0]), y - float(p["xy"][k, 1])
            a, b = c * dx + s * dy, -s * dx + c * dy        # offset in the Gaussian's own axes
            ref[i] += torch.sigmoid(p["opacity_logit"][k]) * p["color"][k] * math.exp(-0.5 * ((a / sx) ** 2 + (b / sy) ** 2))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert pix[0].tolist() == [-1 + 1 / 9, -1 + 1 / 7]


def _post_split_loss(p, k, pix, flat, loss):
    """L as a function of the symmetric displacement delta of Gaussian k's two half-opacity offspring."""
    def f(delta):
        q = {n: torch.cat([v[:k], v[k + 1:]]) for n, v in p.items()}
        kids = D.offspring({n: v[k:k + 1] for n, v in p.items()}, torch.tensor([True]), delta[None], torch.ones(2, dtype=DT))
        q = {n: torch.cat([q[n], kids[n]]) for n in q}
        return D.image_loss(render(q, pix), flat, loss)
    return f


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_splitting_matrix_is_the_hessian_of_the_post_split_loss(loss):
    p, tgt = _splats(4), _target()
    pix, flat = pixel_grid(12, 12, dtype=DT), tgt.reshape(-1, 3)
    dl_di, _ = D.full_image_grad(p, pix, flat, loss)
    s = splitting_matrices(p, pix, dl_di, chunk=3)
    for k in range(4):
        hess = torch.autograd.functional.hessian(_post_split_loss(p, k, pix, flat, loss), torch.zeros(2, dtype=DT))
        torch.testing.assert_close(s[k], hess, rtol=1e-5, atol=1e-10)


def test_splitting_matrix_is_the_position_hessian_minus_its_gauss_newton_part():
    """For the MSE, d2L/dp_k^2 = S_k + J^T (2 / N) J with J = d image / d p_k."""
    p, tgt = _splats(3), _target()
    pix, flat = pixel_grid(12, 12, dtype=DT), tgt.reshape(-1, 3)
    s = splitting_matrices(p, pix, D.full_image_grad(p, pix, flat, "mse")[0])
    for k in range(3):
        def image_of(xy):
            q = dict(p, xy=torch.cat([p["xy"][:k], xy[None], p["xy"][k + 1:]]))
            return render(q, pix)
        hess = torch.autograd.functional.hessian(lambda xy: D.image_loss(image_of(xy), flat, "mse"), p["xy"][k])
        jac = torch.autograd.functional.jacobian(image_of, p["xy"][k]).reshape(-1, 2)
        torch.testing.assert_close(s[k], hess - 2 / flat.numel() * jac.T @ jac, rtol=1e-6, atol=1e-10)


def test_small_symmetric_split_changes_the_loss_by_half_delta_s_delta():
    p, tgt = _splats(6, seed=3), _target(16, seed=4)
    pix, flat = pixel_grid(16, 16, dtype=DT), tgt.reshape(-1, 3)
    s = splitting_matrices(p, pix, D.full_image_grad(p, pix, flat, "mse")[0])
    lam, v = smallest_eigen(s)
    base = D.image_loss(render(p, pix), flat, "mse")
    for k in range(6):
        delta = 1e-3 * v[k]
        change = _post_split_loss(p, k, pix, flat, "mse")(delta) - base
        predicted = 0.5 * delta @ s[k] @ delta
        assert abs(float(change / predicted) - 1) < 0.05, (k, float(change), float(predicted))
        assert math.isclose(float(predicted), 0.5e-6 * float(lam[k]), rel_tol=1e-9)


def test_two_half_opacity_offspring_at_zero_displacement_reproduce_the_parent():
    p, pix = _splats(4), pixel_grid(10, 10, dtype=DT)
    mask = torch.tensor([True, False, True, False])
    kids = D.offspring(p, mask, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT), torch.zeros(4, dtype=DT))
    q = {n: torch.cat([p[n][~mask], kids[n]]) for n in p}
    torch.testing.assert_close(render(q, pix), render(p, pix), rtol=1e-12, atol=1e-14)


def test_eigenvectors_of_the_splitting_matrix():
    s = torch.tensor([[[2.0, 1.0], [1.0, 2.0]], [[-1.0, 0.0], [0.0, 3.0]]], dtype=DT)
    lam, v = smallest_eigen(s)
    torch.testing.assert_close(lam, torch.tensor([1.0, -1.0], dtype=DT))
    torch.testing.assert_close(v.abs(), torch.tensor([[2 ** -0.5, 2 ** -0.5], [1.0, 0.0]], dtype=DT))


def test_view_position_gradients_match_autograd():
    p, tgt = _splats(5), _target(8)
    pix, flat = pixel_grid(8, 8, dtype=DT), tgt.reshape(-1, 3)
    views = list(torch.randperm(64, generator=torch.Generator().manual_seed(0)).chunk(4))
    dl_di, _ = D.full_image_grad(p, pix, flat, "l1")
    got = position_gradients(p, pix, dl_di, views, chunk=2)
    for v, g in zip(views, got):
        xy = p["xy"].clone().requires_grad_(True)
        D.image_loss(render(dict(p, xy=xy), pix[v]), flat[v], "l1").backward()
        torch.testing.assert_close(g, xy.grad, rtol=1e-10, atol=1e-14)
    xy = p["xy"].clone().requires_grad_(True)
    D.image_loss(render(dict(p, xy=xy), pix), flat, "l1").backward()
    torch.testing.assert_close(got.mean(0), xy.grad, rtol=1e-10, atol=1e-14)


def test_splat_adam_matches_torch_adam_and_keeps_moments_of_kept_rows():
    p, tgt = _splats(4), _target(8)
    pix, flat = pixel_grid(8, 8, dtype=DT), tgt.reshape(-1, 3)
    lrs = {"xy": 1e-2, "log_scale": 2e-2, "angle": 3e-3, "opacity_logit": 5e-2, "color": 1e-3}
    ours = SplatAdam(p, lrs)
    ref = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    torch_opt = torch.optim.Adam([{"params": [ref[k]], "lr": lr} for k, lr in lrs.items()], eps=1e-15)
    for _ in range(5):
        D.image_loss(render(ours.params, pix), flat).backward()
        ours.step()
        torch_opt.zero_grad()
        D.image_loss(render(ref, pix), flat).backward()
        torch_opt.step()
    for k in p:
        torch.testing.assert_close(ours.params[k], ref[k].detach(), rtol=1e-10, atol=1e-12)
    m_xy = ours.m["xy"].clone()
    ours.keep(torch.tensor([True, False, True, True]))
    ours.append({k: v[:1] for k, v in p.items()})
    assert len(ours) == 4 and torch.equal(ours.m["xy"][:3], m_xy[[0, 2, 3]]) and not ours.m["xy"][3].any()


def _stats(n, values):
    st = D.ViewStats.zeros(n)
    st.add(torch.stack([torch.tensor(values, dtype=torch.float32)[:, None] * torch.tensor([[0.6, 0.8]])]))
    return st


def test_adc_clones_small_and_splits_large_gaussians_above_the_threshold():
    p = _splats(4, dtype=torch.float32)
    p["log_scale"][1] = math.log(0.001)             # small: cloned when selected
    opt = SplatAdam(p, {k: 0.0 for k in p})
    out = D.densify_adc(opt, _stats(4, [1.0, 1.0, 1.0, 0.0]), tau=0.5, generator=torch.Generator().manual_seed(0))
    assert out == {"cloned": 1, "split": 2} and len(opt) == 4 + 1 - 2 + 4
    q = opt.detached()
    torch.testing.assert_close(q["xy"][:3], p["xy"][[1, 3, 1]])              # kept rows, then the clone
    torch.testing.assert_close(q["log_scale"][3:], p["log_scale"][[0, 2, 0, 2]] - math.log(1.6))
    torch.testing.assert_close(q["opacity_logit"][3:], p["opacity_logit"][[0, 2, 0, 2]])


def test_steepgs_splits_oppositely_along_v_min_with_half_opacity():
    p = _splats(5, dtype=torch.float32)
    s_mats = torch.diag_embed(torch.tensor([[-2.0, 1.0], [1.0, -3.0], [1.0, 2.0], [-1.0, 1.0], [-5.0, 1.0]]))
    opt = SplatAdam(p, {k: 0.0 for k in p})
    out = D.densify_steepest(opt, _stats(5, [1.0, 1.0, 1.0, 0.0, 1.0]), s_mats, tau=0.5, s_threshold=-1e-6,
                             generator=torch.Generator().manual_seed(0), lr_xy=1e-3)
    assert out == {"cloned": 0, "split": 3} and len(opt) == 2 + 6         # 0, 1, 4 selected; 3 filtered by tau
    q = opt.detached()
    v_min = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    for j, k in enumerate([0, 1, 4]):
        plus, minus = q["xy"][2 + j] - p["xy"][k], q["xy"][5 + j] - p["xy"][k]
        cross = lambda a: float(a[0] * v_min[j, 1] - a[1] * v_min[j, 0])
        assert abs(cross(plus)) < 1e-6 and abs(cross(minus)) < 1e-6 and float(plus @ minus) < 0
        for i in (2 + j, 5 + j):
            assert math.isclose(float(torch.sigmoid(q["opacity_logit"][i])), float(torch.sigmoid(p["opacity_logit"][k])) / 2, rel_tol=1e-5)
    torch.testing.assert_close(q["xy"][:2], p["xy"][[2, 3]])
    kept = SplatAdam(p, {k: 0.0 for k in p})
    D.densify_steepest(kept, _stats(5, [1.0] * 5), s_mats, 0.5, -1e-6, torch.Generator().manual_seed(0), 1e-3,
                       halve_opacity=False)
    torch.testing.assert_close(kept.detached()["opacity_logit"][1:5], p["opacity_logit"][[0, 1, 3, 4]])
    with pytest.raises(ValueError):
        D.densify_steepest(opt, _stats(len(opt), [1.0] * len(opt)), s_mats, 0.5, 0.0, torch.Generator(), 1e-3)


def test_psnr_closed_form():
    tgt = torch.full((4, 4, 3), 0.5)
    assert math.isclose(psnr(tgt + 0.1, tgt), 20.0, rel_tol=1e-5)
    assert math.isclose(psnr(torch.full((4, 4, 3), 1.5), torch.full((4, 4, 3), 0.9)), 20.0, rel_tol=1e-5)   # clipped to 1


def test_prune_drops_faint_gaussians():
    p = _splats(3, dtype=torch.float32)
    p["opacity_logit"][1] = -8.0
    opt = SplatAdam(p, {k: 0.0 for k in p})
    assert D.prune(opt) == 1 and len(opt) == 2


def test_images_and_a_tiny_fit():
    for img in (stills.sample_image("china.jpg", 16), stills.test_card(16)):
        assert img.shape == (16, 16, 3) and 0 <= float(img.min()) and float(img.max()) <= 1
    init = init_splats(stills.test_card(16), 10, torch.Generator().manual_seed(0))
    assert init["xy"].shape == (10, 2) and torch.allclose(torch.sigmoid(init["opacity_logit"]), torch.tensor(0.1))
    fit = D.fit_splats(stills.test_card(16), "adc", 60, torch.Generator().manual_seed(0), n_init=20, tau=0.0,
                       lr_scale=10, interval=20, densify_from=10, eval_every=20, stats_every=5)
    log = fit.densify_log
    assert [d["it"] for d in log] == [20] and log[0]["n"] == 20 and log[0]["split"] + log[0]["cloned"] == 20
    assert fit.count == [40 - log[0]["pruned"]] * 3 and fit.psnr[-1] > fit.psnr[0]
    none = D.fit_splats(stills.test_card(16), "none", 30, torch.Generator().manual_seed(0), n_init=20, interval=10,
                        densify_from=0, stats_every=5, snapshot_at=10)
    assert none.count == [20] and len(none.densify_log) == 1 and len(none.params["snapshot"]["opt"]) == 20


def test_count_at_psnr_reads_the_frontier():
    from reprolib.metrics.splitting import count_at_psnr
    counts, psnrs = [100, 400, 200, 800], [20.0, 24.0, 19.0, 23.0]     # 200 and 800 are off the frontier
    assert math.isclose(count_at_psnr(counts, psnrs, 22.0), 200.0)     # halfway in PSNR, log-halfway in count
    assert math.isclose(count_at_psnr(counts, psnrs, 24.0), 400) and count_at_psnr(counts, psnrs, 10.0) == 100
    assert count_at_psnr(counts, psnrs, 25.0) == math.inf


def test_sample_image_is_sklearns_photograph():
    from sklearn.datasets import load_sample_image
    ref = torch.from_numpy(load_sample_image("china.jpg").astype("float32") / 255.0)
    side = min(ref.shape[:2])
    top, left = (ref.shape[0] - side) // 2, (ref.shape[1] - side) // 2
    crop = ref[top:top + side, left:left + side]
    torch.testing.assert_close(stills.sample_image("china.jpg", side), crop)
    # area resizing by an integer factor (427 = 61 x 7) is the mean over 7 x 7 blocks
    assert side == 427
    block = crop.reshape(61, 7, 61, 7, 3).mean((1, 3))
    torch.testing.assert_close(stills.sample_image("china.jpg", 61), block)


def test_relative_thresholds_are_fixed_at_the_first_densification():
    kw = dict(n_init=20, interval=10, densify_from=5, stats_every=5, eval_every=40, relative=True)
    fit = D.fit_splats(stills.test_card(12), "steepest", 40, torch.Generator().manual_seed(0), tau=2.0,
                       s_threshold=-0.1, **kw)
    first = fit.densify_log[0]
    assert math.isclose(fit.tau, 2.0 * first["grad_upper_quartile"]) and first["grad_upper_quartile"] >= first["grad_median"]
    assert math.isclose(fit.s_threshold, -0.1 * first["lam_abs_median"])
    assert len(fit.densify_log) == 2 and fit.densify_log[1]["it"] == 20


def test_stacked_fits_equal_separate_fits():
    """fit_splats_stack runs each fit as fit_splats does (same draws, densification, snapshot). In float64;
    equal up to the last bits that the CPU's vectorised exp/sigmoid give rows at other offsets (with
    ATEN_CPU_CAPABILITY=default, bit for bit)."""
    tgts = [stills.test_card(12).to(DT), stills.test_card(12).to(DT).flip(0)]
    common = dict(n_init=8, interval=5, densify_from=5, stats_every=5, eval_every=5, relative=True, tau=1.0, lr_scale=3.0)
    jobs = [(0, "adc", 0, dict(snapshot_at=10)), (1, "steepest", 1, dict(s_threshold=-1e-2)), (0, "none", 2, {}),
            (1, "steepest", 3, dict(s_threshold=-1e-1, halve_opacity=False, uncertain_filter=False))]
    ref = [D.fit_splats(tgts[i], m, 30, torch.Generator().manual_seed(s), **common, **kw) for i, m, s, kw in jobs]
    got = D.fit_splats_stack([tgts[i] for i, *_ in jobs], [m for _, m, _, _ in jobs], 30,
                             [torch.Generator().manual_seed(s) for *_, s, _ in jobs], [kw for *_, kw in jobs], **common)
    close = dict(rtol=1e-9, atol=1e-12)
    for a, b in zip(ref, got):
        assert (a.steps, a.count) == (b.steps, b.count) and ("snapshot" in a.params) == ("snapshot" in b.params)
        torch.testing.assert_close([a.psnr, a.densify_log, a.tau, a.s_threshold, a.final_loss],
                                   [b.psnr, b.densify_log, b.tau, b.s_threshold, b.final_loss], **close)
        for k in ("xy", "log_scale", "angle", "opacity_logit", "color"):
            torch.testing.assert_close(a.params[k], b.params[k], **close)
            if "snapshot" in a.params:
                sa, sb = a.params["snapshot"]["opt"], b.params["snapshot"]["opt"]
                assert sa.t == sb.t
                torch.testing.assert_close([sa.params[k], sa.m[k], sa.v[k]], [sb.params[k], sb.m[k], sb.v[k]], **close)
    assert max(a.count[-1] for a in ref) > 8 and any(a.densify_log[0].get("split", 0) for a in ref)
