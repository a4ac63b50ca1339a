"""FP4 formats and the NVFP4 training recipe's linear layer (reprolib/kernels/fp4.py, reprolib/layers/fp4_linear.py).

Oracles: the E2M1 value table and the E4M3 code table (nearest value, ties to even), an independent
block-by-block transcription of the NVFP4 formulas in float32 scalars, torchao's NVFP4 and MX quantisers
(test-only dependency), scipy's Hadamard matrix, and invariants: power-of-two scale equivariance,
transposition of 2D blocks, unbiased stochastic rounding, RHT leaving products unchanged."""
import itertools

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard as scipy_hadamard
from torch import nn

from reprolib.kernels.fp4 import (E2M1_VALUES, e2m1_round, e4m3_round, hadamard, mxfp4_quantize, nvfp4_quantize,
                                  quantize, random_hadamard, rht_matrix)
from reprolib.layers.fp4_linear import FP4Linear, FP4Recipe, dgrad, fp4_linears, fprop, wgrad
from reprolib.models import GPT, GPTConfig

E4M3_CODES = torch.arange(127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()   # 0x7F is NaN
NAIVE = FP4Recipe(weight_2d=False, rht=False, stochastic_grad=False)


def torchao_mx():
    """torchao's prototype MX/NVFP4 module, or skip (test-only dependency; any import failure skips)."""
    try:
        from torchao.prototype.mx_formats import kernels, mx_tensor, nvfp4_tensor
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
    except Exception as e:  # noqa: BLE001 - a torchao built for another torch fails in many ways
        pytest.skip(f"torchao unavailable: {e}")
    return kernels, mx_tensor, nvfp4_tensor, ScaleCalculationMode


def nearest_even(v: float, table: list[float]) -> float:
    """The nearest table value to v >= 0; a tie goes to the even index (mantissa bit 0)."""
    d = [abs(v - t) for t in table]
    best = min(d)
    idx = [i for i, di in enumerate(d) if di == best]
    return table[next((i for i in idx if i % 2 == 0), idx[0])]


def ref_nvfp4(x: torch.Tensor, two_d: bool) -> torch.Tensor:
    """The NVFP4 formulas block by block in float32 scalars, rounding by the value tables."""
    e2m1, e4m3 = list(E2M1_VALUES), E4M3_CODES.tolist()
    a = x.numpy().astype(np.float32)
    out = np.zeros_like(a)
    f = np.float32
    s_enc = f(6 * 448) / f(np.abs(a).max())
    s_dec = f(1) / s_enc
    br = 16 if two_d else 1
    for i, j in itertools.product(range(0, a.shape[0], br), range(0, a.shape[1], 16)):
        blk = a[i:i + br, j:j + 16]
        s_b = f(nearest_even(float(min(f(f(np.abs(blk).max()) / f(6)) * s_enc, f(448))), e4m3))
        enc = f(1) / f(s_b * s_dec) if s_b > 0 else f(np.finfo(np.float32).max)
        for (r, c), v in np.ndenumerate(blk):
            y = min(abs(float(f(v) * enc)), 6.0)
            out[i + r, j + c] = np.copysign(f(f(nearest_even(y, e2m1)) * s_b) * s_dec, v)
    return torch.from_numpy(out)


def heavy(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.exp(2 * torch.randn(shape[0], 1, generator=g))


# ---- E2M1 and E4M3 rounding --------------------------------------------------------------------
def test_e2m1_grid_ties_saturation_and_nearest():
    grid = torch.tensor([s * v for v in E2M1_VALUES for s in (1, -1)])
    assert torch.equal(e2m1_round(grid), grid)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -2.5, -5.0])
    assert e2m1_round(ties).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -2.0, -4.0]
    assert e2m1_round(torch.tensor([6.01, 1e9, -7.0])).tolist() == [6.0, 6.0, -6.0]
    y = torch.linspace(-7, 7, 2801)
    want = torch.tensor([np.copysign(nearest_even(min(abs(v), 6.0), list(E2M1_VALUES)), v) for v in y.tolist()])
    assert torch.equal(e2m1_round(y), want)


def test_e2m1_matches_torchao_cast():
    kernels, *_ = torchao_mx()
    y = torch.cat([torch.linspace(-8, 8, 20001), torch.randn(5000) * 3])
    assert torch.equal(e2m1_round(y), kernels.f4_unpacked_to_f32(kernels.f32_to_f4_unpacked(y)))


def test_e4m3_round_is_nearest_with_ties_to_even():
    codes = E4M3_CODES
    assert codes.max() == 448 and torch.equal(e4m3_round(codes), codes)
    s = torch.rand(4000, generator=torch.Generator().manual_seed(1)) ** 4 * 460
    r = e4m3_round(s)
    dist = (s[:, None] - codes[None]).abs()
    assert torch.all((s - r).abs() <= dist.min(1).values) and torch.all(r <= 448)
    mids = (codes[1:] + codes[:-1]) / 2                      # exact ties: the even code wins
    idx = torch.arange(1, len(codes))
    want = torch.where(idx % 2 == 0, codes[1:], codes[:-1])
    assert torch.equal(e4m3_round(mids), want)


# ---- NVFP4 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("two_d", [False, True])
def test_nvfp4_equals_the_formulas_block_by_block(two_d):
    x = heavy((32, 48))
    x[3, :16] = 0.0                                          # a zero block
    assert torch.equal(nvfp4_quantize(x, two_d=two_d), ref_nvfp4(x, two_d))


def test_nvfp4_matches_torchao():
    """torchao clamps block scales below E4M3's smallest normal (2^-6) up to it, where the paper's
    reference lets them go subnormal: the data keep every block within 2^-6 / 448 of the tensor's amax."""
    kernels, _, nv, _ = torchao_mx()
    for k, scale in enumerate((1.0, 1e-3, 3e4)):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(128, 256, generator=g) * torch.exp(0.5 * torch.randn(128, 1, generator=g)) * scale
        pts = nv.per_tensor_amax_to_scale(x.abs().max())
        s, data = nv.nvfp4_quantize(x.contiguous(), 16, pts)
        assert s.float().min() >= 2 ** -6
        vals = kernels.f4_unpacked_to_f32(kernels.unpack_uint4(data)).reshape(128, 16, 16)
        theirs = (vals * s.float().reshape(128, 16, 1) * pts).reshape(x.shape)
        # scales and codes agree; the last multiply is ordered differently (one fp32 rounding)
        torch.testing.assert_close(nvfp4_quantize(x), theirs, rtol=1e-6, atol=0)


def test_nvfp4_invariants():
    x = heavy((64, 64), seed=3)
    q = nvfp4_quantize(x)
    for k in (-20, -3, 5, 30):                               # both scale levels shift exactly
        assert torch.equal(nvfp4_quantize(x * 2.0 ** k), q * 2.0 ** k)
    assert torch.equal(nvfp4_quantize(-x), -q)
    assert torch.equal(nvfp4_quantize(torch.zeros(16, 32)), torch.zeros(16, 32))
    # every block's largest entry comes back within E4M3's half step (1/16), at least 6.25% of values
    blocks, qb = x.reshape(-1, 16), q.reshape(-1, 16)
    amax, i = blocks.abs().max(1)
    assert torch.all((qb.abs().gather(1, i[:, None]).squeeze(1) - amax).abs() <= amax / 16 + 1e-6 * amax.max())
    assert torch.allclose(q.abs().max(), x.abs().max(), rtol=1e-6)   # the tensor's amax is kept
    # each block lies on one scaled E2M1 grid: q / (its largest |q| / 6) is a grid value
    units = qb / (qb.abs().amax(1, keepdim=True) / 6)
    assert torch.allclose(e2m1_round(units), units, atol=1e-5)


def test_two_d_blocks_quantise_w_and_w_transpose_alike():
    w = heavy((64, 96), seed=4)
    assert torch.equal(nvfp4_quantize(w.t().contiguous(), two_d=True), nvfp4_quantize(w, two_d=True).t())
    assert torch.equal(mxfp4_quantize(w.t().contiguous(), two_d=True), mxfp4_quantize(w, two_d=True).t())
    assert not torch.equal(nvfp4_quantize(w.t().contiguous()).t(), nvfp4_quantize(w))   # 1 x 16 blocks differ
    tile = nvfp4_quantize(w, two_d=True)[16:32, 32:48]       # one scale per 16 x 16 tile
    units = tile / (tile.abs().max() / 6)
    assert torch.allclose(e2m1_round(units), units, atol=1e-5)
    with pytest.raises(ValueError):
        nvfp4_quantize(torch.randn(20, 32), two_d=True)


# ---- MXFP4 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ["ceil", "floor"])
def test_mxfp4_matches_torchao(rounding):
    _, mx, _, Mode = torchao_mx()
    mode = Mode.RCEIL if rounding == "ceil" else Mode.FLOOR
    for k, scale in enumerate((1.0, 1e-5, 1e5)):
        x = heavy((64, 256), seed=10 + k) * scale
        s, data = mx.to_mx(x.contiguous(), torch.float4_e2m1fn_x2, 32, mode)
        theirs = mx.to_dtype(data, s, torch.float4_e2m1fn_x2, 32, torch.float32)
        assert torch.equal(mxfp4_quantize(x, scale_rounding=rounding), theirs)


def test_mxfp4_scales_are_powers_of_two_and_ceil_never_saturates():
    x = heavy((32, 64), seed=5)
    q = mxfp4_quantize(x).reshape(-1, 32)
    s = 2.0 ** torch.ceil(torch.log2(x.reshape(-1, 32).abs().amax(1, keepdim=True) / 6))
    assert torch.allclose(e2m1_round(q / s), q / s) and torch.all((x.reshape(-1, 32) / s).abs() <= 6)


# ---- stochastic rounding -----------------------------------------------------------------------
def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    g = torch.Generator().manual_seed(0)
    v = torch.tensor([0.1, 0.25, 0.6, 1.3, 1.9, 2.2, 2.5, 3.7, 4.4, 5.0, 5.9, 6.0, -0.7, -3.3, 1.5, 0.0])
    n = 40_000
    draws = e2m1_round(v.expand(n, -1), stochastic=True, generator=g)
    lo = torch.copysign(torch.tensor([max(t for t in E2M1_VALUES if t <= abs(a)) for a in v.tolist()]), v)
    hi = torch.copysign(torch.tensor([min(t for t in E2M1_VALUES if t >= abs(a)) for a in v.tolist()]), v)
    assert torch.all((draws == lo) | (draws == hi))
    p = (v - lo) / torch.where(hi == lo, 1.0, hi - lo)
    se = (hi - lo).abs() * torch.sqrt(p * (1 - p) / n)
    assert torch.all((draws.mean(0) - v).abs() <= 5 * se + 1e-7)
    assert torch.equal(draws[:, [11, 14, 15]], v[[11, 14, 15]].expand(n, -1))   # grid values never move
    assert abs(e2m1_round(torch.tensor(0.2)).item() - 0.2) == pytest.approx(0.2)   # nearest is biased there


def test_nvfp4_stochastic_is_unbiased_when_no_block_saturates():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 64, generator=g)
    blocks = x.reshape(-1, 16)
    e4 = E4M3_CODES[(E4M3_CODES > 32) & (E4M3_CODES <= 448)]
    target = e4[torch.randint(len(e4), (blocks.shape[0],), generator=g)] / 448   # block amax / tensor amax
    target[0] = 1.0
    blocks *= (target / blocks.abs().amax(1))[:, None]      # exact E4M3 block scales: no saturation
    n = 20_000
    mean = torch.stack([nvfp4_quantize(x, stochastic=True, generator=g) for _ in range(n)]).mean(0)
    rtn_err = (nvfp4_quantize(x) - x).abs().mean()
    assert (mean - x).abs().mean() < 0.05 * rtn_err


# ---- random Hadamard transform -----------------------------------------------------------------
def test_hadamard_and_rht_matrix():
    assert torch.equal(hadamard(16), torch.tensor(scipy_hadamard(16), dtype=torch.float32))
    t = rht_matrix(seed=0)
    assert torch.allclose(t @ t.T, torch.eye(16), atol=1e-6)
    assert torch.equal(t, rht_matrix(seed=0)) and not torch.equal(t, rht_matrix(seed=1))
    assert torch.equal(t.abs(), torch.full((16, 16), 0.25))
    with pytest.raises(ValueError):
        hadamard(12)


def test_rht_keeps_products_and_acts_per_block():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(24, 64, generator=g, dtype=torch.float64), torch.randn(40, 64, generator=g, dtype=torch.float64)
    assert torch.allclose(random_hadamard(a) @ random_hadamard(b).T, a @ b.T, rtol=1e-12, atol=1e-12)
    left = random_hadamard(a[:, :16])
    assert torch.allclose(random_hadamard(a)[:, :16], left)
    spike = torch.zeros(1, 16)
    spike[0, 3] = 8.0
    assert torch.allclose(random_hadamard(spike).abs(), torch.full((1, 16), 2.0))   # an outlier spread evenly



def test_random_hadamard_builds_its_matrix_once_per_device_and_dtype():
    """The matrix is built once and kept on the tensor's device: rebuilding it on the host and copying it
    to a GPU at every call made every Wgrad wait for the GPU."""
    from reprolib.kernels import fp4
    fp4._rht_matrix_on.cache_clear()
    x = torch.randn(8, 32, dtype=torch.float64)
    with torch.inference_mode():   # a matrix first built here must still serve autograd later
        random_hadamard(x)
    y = random_hadamard(x)
    assert fp4._rht_matrix_on.cache_info().misses == 1 and fp4._rht_matrix_on.cache_info().hits == 1
    assert torch.equal(fp4._rht_matrix_on(0, torch.float64, x.device), rht_matrix(0, dtype=torch.float64))
    assert torch.equal(y, (x.reshape(8, 2, 16) @ rht_matrix(0, dtype=torch.float64)).reshape(8, 32))
    xr = x.clone().requires_grad_()
    random_hadamard(xr).sum().backward()
    assert xr.grad is not None

# ---- the FP4 linear layer ----------------------------------------------------------------------
def test_fp4_linear_runs_the_three_gemms_of_the_recipe():
    g = torch.Generator().manual_seed(4)
    x, w, dy = torch.randn(64, 32, generator=g), torch.randn(48, 32, generator=g), torch.randn(64, 48, generator=g)
    for recipe in (FP4Recipe(stochastic_grad=False), NAIVE):
        layer = FP4Linear(32, 48, bias=True, recipe=recipe)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(torch.arange(48.0))
        xr = x.clone().requires_grad_()
        y = layer(xr.reshape(4, 16, 32))
        y.backward(dy.reshape(4, 16, 48))
        w_q = nvfp4_quantize(w, two_d=recipe.weight_2d)
        assert torch.equal(y.reshape(64, 48), nvfp4_quantize(x) @ w_q.T + torch.arange(48.0))
        w_dgrad = w_q if recipe.weight_2d else nvfp4_quantize(w.T.contiguous()).T
        assert torch.equal(xr.grad, nvfp4_quantize(dy) @ w_dgrad)
        tr = random_hadamard if recipe.rht else (lambda t: t)
        dyt, xt = tr(dy.T.contiguous()), tr(x.T.contiguous())
        assert torch.allclose(layer.weight.grad, nvfp4_quantize(dyt) @ nvfp4_quantize(xt).T, rtol=1e-6, atol=1e-5)
        assert torch.allclose(layer.bias.grad, dy.sum(0))
    assert not torch.equal(nvfp4_quantize(w.T.contiguous()).T, nvfp4_quantize(w))   # why 2D blocks matter


def test_stochastic_wgrad_is_unbiased_around_its_quantised_operand():
    g = torch.Generator().manual_seed(5)
    x, dy = torch.randn(64, 32, generator=g), torch.randn(64, 16, generator=g) * 1e-3
    r = FP4Recipe(rht=False)
    target = dy.T @ nvfp4_quantize(x.T.contiguous()).T       # E[Q_sr(dy^T)] = dy^T where nothing saturates
    torch.manual_seed(0)
    mean = torch.stack([wgrad(dy, x, r) for _ in range(1000)]).mean(0)
    rtn = wgrad(dy, x, FP4Recipe(rht=False, stochastic_grad=False))
    assert (mean - target).norm() < 0.25 * (rtn - target).norm()


def test_fprop_dgrad_wgrad_approximate_the_exact_gemms():
    g = torch.Generator().manual_seed(6)
    x, w, dy = torch.randn(256, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(256, 32, generator=g)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    for fmt in ("nvfp4", "mxfp4"):
        r = FP4Recipe(fmt=fmt)
        assert rel(fprop(x, w, r), x @ w.T) < 0.3     # a 4-bit product of Gaussians: 0.13-0.23 here
        assert rel(dgrad(dy, w, r), dy @ w) < 0.3
        assert rel(wgrad(dy, x, r), dy.T @ x) < 0.3
    nv, mx = FP4Recipe(stochastic_grad=False), FP4Recipe(fmt="mxfp4", stochastic_grad=False)
    assert rel(wgrad(dy, x, nv), dy.T @ x) < rel(wgrad(dy, x, mx), dy.T @ x)   # finer blocks and scales


def test_fp4_linears_swaps_in_place_and_trains():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, n_layer=2, d_model=32, n_head=2, seq_len=32)
    model = GPT(cfg)
    params = list(model.parameters())
    ref = GPT(cfg)
    ref.load_state_dict(model.state_dict())
    swapped = fp4_linears(model, keep=("lm_head", "blocks.1"))
    assert swapped == [f"blocks.0.{n}" for n in ("attn.qkv", "attn.proj", "mlp.w1", "mlp.w3", "mlp.w2")]
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert type(model.blocks[1].attn.qkv) is nn.Linear and type(model.lm_head) is nn.Linear
    idx = torch.randint(0, 40, (4, 32))
    logits, loss = model(idx, idx)
    assert logits.shape == (4, 32, 40) and ((logits - ref(idx)[0]).norm() / ref(idx)[0].norm()) < 0.3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(30):
        _, loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first - 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled path is for CUDA")
def test_compiled_quantize_matches_eager_on_cuda():
    from reprolib.kernels.fp4 import compiled_quantize, quantize
    x = heavy((256, 512)).cuda()
    for fmt, two_d in itertools.product(("nvfp4", "mxfp4"), (False, True)):
        torch.testing.assert_close(compiled_quantize()(x, fmt, two_d), quantize(x, fmt, two_d), rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_a_zero_block_stays_zero_when_subnormals_flush(fmt):
    """GPU kernels flush subnormal floats to zero; a scale that only exists as a subnormal turned an
    all-zero block (an unused embedding row's gradient) into 0/0 = NaN in the first MXFP4 GPU run."""
    x = torch.randn(4, 64)
    x[1] = 0.0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        q = quantize(x, fmt)
    finally:
        torch.set_flush_denormal(False)
    assert torch.isfinite(q).all() and (q[1] == 0).all()
