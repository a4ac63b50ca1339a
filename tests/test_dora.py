"""DoRA's factored norm, the fused compose and the DoRA layer (reprolib/kernels/dora.py,
reprolib/layers/dora.py): against the dense norm in float64, against closed forms, against autograd of
the plain expression, and against HF PEFT's DoRA layer (a test-only oracle). The Triton kernels are
checked against the PyTorch formulas on CUDA only."""
import copy

import pytest
import torch
from torch import nn

from reprolib.kernels import dora as K
from reprolib.layers import DoRALinear, dora_linears, set_dora_mode


def factors(d_out=24, d_in=40, r=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    A = torch.randn(r, d_in, generator=g, dtype=dtype) / d_in ** 0.5
    B = torch.randn(d_out, r, generator=g, dtype=dtype)
    return W, A, B


@pytest.mark.parametrize("chunk", [7, 512])
def test_factored_norm_equals_dense_in_float64(chunk):
    W, A, B = factors()
    for s in (0.0, 0.5, 2.0):
        n_f = K.row_norm_factored(W, A, B, s, chunk=chunk)
        n_d = torch.linalg.vector_norm(W + s * B @ A, dim=1)
        assert n_f.dtype == torch.float64
        torch.testing.assert_close(n_f, n_d, rtol=1e-12, atol=0)


def test_factored_norm_float32_and_bf16_inputs_accumulate_in_float32():
    W, A, B = factors()
    exact = torch.linalg.vector_norm(W + 0.7 * B @ A, dim=1)
    n32 = K.row_norm_factored(W.float(), A.float(), B.float(), 0.7, chunk=16)
    assert n32.dtype == torch.float32
    assert ((n32.double() - exact).abs() / exact).max() < 1e-5
    Wb, Ab, Bb = W.bfloat16(), A.bfloat16(), B.bfloat16()
    nb = K.row_norm_factored(Wb, Ab, Bb, 0.7, chunk=16)
    assert nb.dtype == torch.float32   # fp32 accumulation for bf16 weights
    exact_b = torch.linalg.vector_norm(Wb.double() + 0.7 * Bb.double() @ Ab.double(), dim=1)
    assert ((nb.double() - exact_b).abs() / exact_b).max() < 1e-5


def test_factored_norm_clamps_a_cancelled_row_to_zero():
    W, A, B = factors(dtype=torch.float32)
    W[3] = -2.0 * (B[3] @ A)            # row 3 of W + 2 B A is exactly zero: n^2 may round below 0
    n = K.row_norm_factored(W, A, B, 2.0)
    assert torch.isfinite(n).all() and (n >= 0).all()
    assert n[3] < 1e-2 * n.median()


def test_stable_compose_beats_the_naive_form_near_unity_in_bf16():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(256, 64, generator=g).bfloat16()
    lora = torch.randn(256, 64, generator=g).bfloat16() * 1e-3
    for eps in (1e-5, 1e-4, 1e-3):
        gvec = 1 + eps * torch.randn(64, generator=g, dtype=torch.float64)
        exact = (gvec - 1) * base.double() + gvec * (0.5 * lora.double())
        stable = K.compose_reference(base, lora, gvec.float(), 0.5).double()
        naive = K.compose_naive(base, lora, gvec.bfloat16(), 0.5).double()
        err = lambda y: float((y - exact).norm() / exact.norm())
        assert err(stable) < 1e-2          # one bf16 rounding of the result
        assert err(naive) > 10 * err(stable)   # the cancellation costs more than a factor 10


@pytest.mark.parametrize("need_g", [True, False])
def test_fused_compose_autograd_equals_autograd_of_the_expression(need_g):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    lora = torch.randn(3, 5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    gv = (1 + 0.1 * torch.randn(1, 16, generator=g, dtype=torch.float64)).requires_grad_(need_g)
    d = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    out = K.dora_compose(base, lora, gv, 0.7)
    ref = (gv - 1) * base + gv * (0.7 * lora)
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
    inputs = [base, lora] + ([gv] if need_g else [])
    got = torch.autograd.grad(out, inputs, d)
    want = torch.autograd.grad(ref, inputs, d)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(lambda b_, l_: K.dora_compose(b_, l_, gv.detach(), 0.7), (base, lora))


def test_compose_eager_is_peft_line_and_bytes_count():
    base, lora, gv = torch.randn(4, 8), torch.randn(4, 8), torch.rand(8) + 0.5
    torch.testing.assert_close(K.compose_eager(base, lora, gv, 2.0), (gv - 1) * base + gv * lora * 2.0)
    b = K.compose_bytes(8192, 4096)
    assert b["eager"] == 3 * b["fused"] == 9 * 8192 * 4096 * 2


# ---- the layer against HF PEFT ------------------------------------------------------------------------
peft = pytest.importorskip("peft")


def peft_dora(d_in=20, d_out=12, r=4, alpha=8, bias=True, seed=0):
    """A peft DoRA layer with a trained-looking adapter, and our DoRALinear with the same numbers."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, d_out, bias=bias)).double()
    pm = get_peft_model(net, LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"], use_dora=True, lora_dropout=0.0))
    layer = pm.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.3)        # B = 0 at init: move it so B A counts
        layer.lora_magnitude_vector["default"].weight.mul_(1 + 0.05 * torch.randn(d_out, dtype=torch.float64))
    ours = DoRALinear(layer.base_layer, r, alpha=alpha, mode="peft").double()
    with torch.no_grad():
        ours.A.copy_(layer.lora_A["default"].weight)
        ours.B.copy_(layer.lora_B["default"].weight)
        ours.m.copy_(layer.lora_magnitude_vector["default"].weight)
    return pm, layer, ours


def test_magnitude_starts_at_the_row_norms_of_w():
    pm, layer, ours = peft_dora()
    fresh = DoRALinear(layer.base_layer, 4, alpha=8)
    torch.testing.assert_close(fresh.m.double(), torch.linalg.vector_norm(layer.base_layer.weight, dim=1))
    x = torch.randn(3, 20, dtype=torch.float64)
    torch.testing.assert_close(fresh.double()(x), layer.base_layer(x))   # B = 0, g = 1: the layer is W


@pytest.mark.parametrize("mode", ["peft", "factored", "fused"])
@pytest.mark.parametrize("bias", [True, False])
def test_every_mode_matches_peft_forward_and_gradients(mode, bias):
    pm, layer, ours = peft_dora(bias=bias)
    ours.mode = mode
    x = torch.randn(2, 5, 20, dtype=torch.float64)
    y_peft, y = pm(x), ours(x)
    torch.testing.assert_close(y, y_peft, rtol=1e-12, atol=1e-12)
    d = torch.randn_like(y)
    theirs = [layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.lora_magnitude_vector["default"].weight]
    g_peft = torch.autograd.grad(y_peft, theirs, d)
    g_ours = torch.autograd.grad(y, [ours.A, ours.B, ours.m], d)
    for a, b in zip(g_ours, g_peft):   # the norm is detached in both: no gradient through n
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_weight_norm_is_detached_and_equal_across_modes():
    _, _, ours = peft_dora()
    n = {}
    for mode in ("peft", "factored"):
        ours.mode = mode
        n[mode] = ours.weight_norm(torch.float64)
        assert not n[mode].requires_grad
    torch.testing.assert_close(n["peft"], n["factored"], rtol=1e-12, atol=0)


def test_dora_linears_swaps_freezes_and_modes_agree():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    layers = dora_linears(net, r=2, mode="peft", generator=torch.Generator().manual_seed(3))
    assert list(layers) == ["0", "2"]
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"0.A", "0.B", "0.m", "2.A", "2.B", "2.m"}
    with torch.no_grad():
        for lay in layers.values():
            lay.B.normal_()
    x = torch.randn(5, 8)
    y_peft = net(x)
    other = copy.deepcopy(net)
    set_dora_mode(other, "fused")
    torch.testing.assert_close(other(x), y_peft, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        set_dora_mode(net, "dense")


def test_delta_weight_reproduces_the_layer():
    _, layer, ours = peft_dora(bias=False)
    x = torch.randn(7, 20, dtype=torch.float64)
    merged = x @ (ours.weight + ours.delta_weight().double()).T
    torch.testing.assert_close(ours(x), merged, rtol=1e-10, atol=1e-10)


# ---- the Triton kernels (CUDA only) -------------------------------------------------------------------
cuda = pytest.mark.skipif(not (torch.cuda.is_available() and K.triton is not None), reason="needs CUDA and Triton")


@cuda
@pytest.mark.parametrize("shape", [(37, 300), (2048, 4096)])
def test_triton_compose_matches_the_pytorch_formulas(shape):
    g = torch.Generator(device="cuda").manual_seed(0)
    base = torch.randn(*shape, device="cuda", generator=g).bfloat16().requires_grad_()
    lora = torch.randn(*shape, device="cuda", generator=g).bfloat16().requires_grad_()
    gv = (1 + 1e-3 * torch.randn(shape[1], device="cuda", generator=g)).requires_grad_()
    out = K.dora_compose(base, lora, gv, 0.5)
    ref = K.compose_reference(base, lora, gv, 0.5)
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)   # one bf16 rounding apart at most
    assert (out.float() - ref.float()).abs().max() <= 2 ** -7 * ref.float().abs().max()
    d = torch.randn_like(out)
    got = torch.autograd.grad(out, [base, lora, gv], d)
    ref32 = (gv - 1) * base.float() + gv * (0.5 * lora.float())
    want = torch.autograd.grad(ref32, [base, lora, gv], d.float())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_interleaved_timing_and_peak_memory_off_cuda():
    from reprolib.metrics import interleaved_ms, peak_transient_bytes, timing_spread
    calls = []
    t = interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, samples=3, warmup=2,
                       inner=2, cuda=False)
    assert set(t) == {"a", "b"} and all(len(v) == 3 and min(v) >= 0 for v in t.values())
    assert calls[:4] == ["a", "a", "b", "b"] and calls[4:8] == ["a", "a", "b", "b"]   # warm-up, then alternation
    assert len(calls) == 2 * 2 + 3 * 2 * 2
    assert timing_spread([1.0, 1.0, 1.0]) == 0.0
    assert abs(timing_spread(list(range(1, 12))) - (10.0 - 2.0) / 6.0) < 1e-12   # q10 2, q50 6, q90 10
    import math
    assert math.isnan(peak_transient_bytes(lambda: torch.zeros(3), torch.device("cpu")))


def test_use_triton_switch(monkeypatch):
    monkeypatch.setattr(K, "triton", object())          # pretend Triton is importable
    assert K.triton_ready("cuda") and not K.triton_ready("cpu")
    K.use_triton(False)
    try:
        assert not K.triton_ready("cuda")
    finally:
        K.use_triton(True)
    assert K.triton_ready("cuda")


def test_peft_mode_follows_peft_dtypes_with_fp32_adapters_on_a_bf16_layer():
    """peft upcasts a bf16 layer's adapter to fp32, casts the input to it, and casts the sum back to bf16."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 24, bias=True)).bfloat16()
    pm = get_peft_model(net, LoraConfig(r=4, lora_alpha=8, target_modules=["0"], use_dora=True, lora_dropout=0.0))
    layer = pm.base_model.model[0]
    assert layer.lora_A["default"].weight.dtype == torch.float32      # peft's autocast_adapter_dtype
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.3)
    ours = DoRALinear(layer.base_layer, 4, alpha=8, mode="peft")
    ours.A = nn.Parameter(layer.lora_A["default"].weight.detach().clone())
    ours.B = nn.Parameter(layer.lora_B["default"].weight.detach().clone())
    ours.m = nn.Parameter(layer.lora_magnitude_vector["default"].weight.detach().clone())
    x = torch.randn(6, 32).bfloat16()
    y_peft = pm(x)
    y = ours(x)
    assert y.dtype == y_peft.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_peft, rtol=0, atol=0)
    for mode in ("factored", "fused"):   # fp32 factored norm: within a bf16 rounding of PEFT's
        ours.mode = mode
        torch.testing.assert_close(ours(x).float(), y_peft.float(), rtol=1e-2, atol=1e-2)
