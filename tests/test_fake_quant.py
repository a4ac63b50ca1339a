"""Fake INT4 quantisation: exact agreement with the official Stable-SPAM simulation (transcribed below
from github.com/TianjinYellow/StableSPAM, utils/act_weight_quantization.py and utils/dummy_quant.py),
the 4-bit grid, idempotence, straight-through gradients, and a quantised GPT that trains."""
import pytest
import torch
from torch import nn

from reprolib.kernels.fake_quant import (FakeQuantLinear, quantize_activation, quantize_linears, quantize_weight,
                                         ste)
from reprolib.models import GPT, GPTConfig


def official_weight(w, group_size=256, n_bit=4):
    """_quantize_tensor, then QLinear.forward's dequantisation."""
    g = w.reshape(-1, group_size)
    max_val, min_val = g.amax(dim=1, keepdim=True), g.amin(dim=1, keepdim=True)
    max_int, min_int = 2 ** n_bit - 1, 0
    scales = (max_val - min_val).clamp(min=1e-5) / max_int
    zeros = (-torch.round(min_val / scales)).clamp_(min_int, max_int)
    q = torch.clamp(torch.round(g / scales) + zeros, min_int, max_int).to(torch.uint8)
    return ((q.to(w.dtype) - zeros) * scales).reshape(w.shape)


def official_activation(x, group_size=256, bit=4, topk=2):
    """fake_topk_quantize then fake_topk_dequantize (without the byte packing), round to nearest."""
    x = x.clone().view(-1, group_size)
    idx = x.abs().topk(topk, dim=-1).indices
    topk_values = torch.gather(x, 1, idx)
    rows = torch.arange(0, x.size(0))[:, None].expand(-1, topk)
    x[rows, idx] = 0
    scale = x.abs().max(dim=-1).values.clamp_min(1e-6)
    x *= (2 ** (bit - 1) - 1) / scale[:, None]
    q = x.round().clamp(-2 ** (bit - 1), 2 ** (bit - 1) - 1).to(torch.int8)
    out = q.to(torch.float32) * scale[:, None] / (2 ** (bit - 1) - 1)
    out[rows, idx] = topk_values
    return out


def test_weight_equals_official_and_lies_on_16_levels():
    w = torch.randn(96, 512) * 0.02
    w_q = quantize_weight(w)
    assert torch.equal(w_q, official_weight(w))
    g, gq = w.reshape(-1, 256), w_q.reshape(-1, 256)
    s = (g.amax(1, keepdim=True) - g.amin(1, keepdim=True)) / 15
    k = gq / s
    assert torch.allclose(k, k.round(), atol=1e-4)                 # integer multiples of the step
    assert max(len(row.unique()) for row in gq) <= 16              # at most 2^4 levels per group
    assert (gq - g).abs().max() <= s.max() / 2 + 1e-7              # round to nearest: error <= s/2
    assert not torch.equal(quantize_weight(w, bits=8), official_weight(w))  # the oracle sees the bits


def test_activation_equals_official_grid_and_outliers():
    x = torch.randn(4, 8, 256) * torch.linspace(0.1, 3, 256)
    x_q = quantize_activation(x)
    assert torch.equal(x_q, official_activation(x).reshape(x.shape))
    g, gq = x.reshape(-1, 256), x_q.reshape(-1, 256)
    top = g.abs().topk(2, dim=1).indices
    assert torch.equal(gq.gather(1, top), g.gather(1, top))        # the two outliers stay exact
    rest = gq.scatter(1, top, 0.0)
    s = g.scatter(1, top, 0.0).abs().amax(1, keepdim=True) / 7
    k = rest / s
    assert torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= 7 + 1e-4
    plain = quantize_activation(x, topk=0).reshape(-1, 256)
    assert not torch.equal(plain, official_activation(x))          # the oracle sees the outliers
    assert max(len(row.unique()) for row in plain) <= 16


def test_idempotent():
    w, x = torch.randn(64, 256) * 0.02, torch.randn(32, 256)
    assert torch.allclose(quantize_weight(quantize_weight(w)), quantize_weight(w), rtol=0, atol=1e-7)
    for topk in (0, 2):
        once = quantize_activation(x, topk=topk)
        assert torch.allclose(quantize_activation(once, topk=topk), once, rtol=0, atol=1e-6)


def test_group_size_must_divide():
    with pytest.raises(ValueError):
        quantize_weight(torch.randn(3, 100), group_size=256)


def test_straight_through_gradients():
    torch.manual_seed(0)
    x = torch.randn(5, 256, requires_grad=True)
    upstream = torch.randn(5, 256)
    ste(x, quantize_activation(x.detach())).backward(upstream)
    assert torch.equal(x.grad, upstream)                           # identity through the quantiser
    layer = FakeQuantLinear(256, 64, bias=True)
    x.grad = None
    y = layer(x)
    w_q, x_q = quantize_weight(layer.weight.detach()), quantize_activation(x.detach())
    assert torch.allclose(y, x_q @ w_q.T + layer.bias, atol=1e-5)
    y.backward(g_out := torch.randn_like(y))
    assert torch.allclose(x.grad, g_out @ w_q, atol=1e-5)          # dL/dx = dL/dy W_q
    assert torch.allclose(layer.weight.grad, g_out.T @ x_q, atol=1e-5)   # dL/dW = dL/dy^T x_q
    assert torch.allclose(layer.bias.grad, g_out.sum(0), atol=1e-5)


def test_quantized_gpt_keeps_parameters_and_trains():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, seq_len=32, n_layer=2, d_model=64, n_head=2)
    model = GPT(cfg)
    before = [(n, p) for n, p in model.named_parameters()]
    x = torch.randint(0, 40, (8, 32))
    ref = model(x, x)[1]
    swapped = quantize_linears(model)
    assert swapped == [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.w1", "mlp.w3", "mlp.w2")]
    assert type(model.lm_head) is nn.Linear
    assert [(n, id(p)) for n, p in model.named_parameters()] == [(n, id(p)) for n, p in before]
    loss = model(x, x)[1]
    assert torch.isfinite(loss) and loss.item() != ref.item() and abs(loss.item() - ref.item()) < 0.1
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ste_forward_is_exact_in_bf16():
    x = torch.randn(4, 256).bfloat16().requires_grad_()
    x_q = quantize_activation(x.detach())
    assert torch.equal(ste(x, x_q), x_q)
