"""Layer-wise mixed precision: the 16-bit layer is nn.Linear exactly; a p-bit layer's three GEMMs equal
the collection's tested fake-quantised layer (FakeQuantLinear, straight-through) with its output
gradient quantised by the same activation quantiser; plans, FLOP shares and costs."""
import pytest
import torch
from torch import nn

from reprolib.kernels.fake_quant import FakeQuantLinear, quantize_activation
from reprolib.layers.mixed_precision import (COST, PrecisionLinear, gemm_shares, plan_cost, precision_linears,
                                             set_plan)
from reprolib.models import GPT, GPTConfig


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=17, n_layer=2, d_model=64, n_head=2, seq_len=32))


def test_16_bits_is_nn_linear_bitwise():
    torch.manual_seed(0)
    ref = nn.Linear(64, 96, bias=False)
    layer = PrecisionLinear(64, 96)
    layer.weight = ref.weight
    x1 = torch.randn(8, 4, 64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    ref(x1).sin().sum().backward()
    w_grad = ref.weight.grad.clone()
    ref.weight.grad = None
    layer(x2).sin().sum().backward()
    assert torch.equal(layer(x2), ref(x1))
    assert torch.equal(x1.grad, x2.grad) and torch.equal(ref.weight.grad, w_grad)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_gemms_equal_fake_quant_linear_with_quantised_output_gradient(bits):
    """Oracle: FakeQuantLinear (forward on Q_a(x), Q_w(W), straight-through backward) whose output
    gradient is replaced by Q_g(dY) with a tensor hook gives dX = Q_g(dY) Q_w(W), dW = Q_g(dY)^T Q_a(x)."""
    torch.manual_seed(1)
    oracle = FakeQuantLinear(128, 192, bias=False, bits=bits, group_size=256, act_topk=2)
    layer = PrecisionLinear(128, 192, bits=bits, group_size=256, act_topk=2)
    layer.weight = nn.Parameter(oracle.weight.detach().clone())
    x = torch.randn(4, 16, 128) * torch.linspace(0.2, 3, 128)
    target = torch.randn(4, 16, 192)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = oracle(xa)
    ya.register_hook(lambda g: quantize_activation(g, 256, bits, 2))
    (ya * target).square().sum().backward()
    yb = layer(xb)
    (yb * target).square().sum().backward()
    assert torch.equal(ya, yb)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, oracle.weight.grad, rtol=1e-5, atol=1e-6)
    # the gradient really is quantised: at most 2^(bits-1) + 1 levels per group besides the 2 outliers
    g = quantize_activation((2 * yb * target.square()).detach(), 256, bits, 2).reshape(-1, 256)
    assert max(len(row.unique()) for row in g) <= 2 ** bits + 2


def test_precision_linears_keeps_parameters_and_function():
    model = tiny_gpt()
    params = list(model.parameters())
    idx = torch.randint(0, 17, (2, 32))
    ref = model(idx)[0]
    layers = precision_linears(model)
    assert [p is q for p, q in zip(params, model.parameters())] == [True] * len(params)
    assert list(layers) == [f"blocks.{b}.{n}" for b in range(2)
                            for n in ("attn.qkv", "attn.proj", "mlp.w1", "mlp.w3", "mlp.w2")]
    assert not isinstance(model.lm_head, PrecisionLinear)
    assert torch.equal(model(idx)[0], ref)
    set_plan(layers, {n: 4 for n in layers})
    assert not torch.allclose(model(idx)[0], ref, atol=1e-4)


def test_shares_costs_and_plans():
    model = tiny_gpt()
    layers = precision_linears(model)
    shares = gemm_shares(layers)
    assert sum(shares.values()) == pytest.approx(1.0)
    d, h = 64, model.cfg.mlp_hidden
    total = 2 * (3 * d * d + d * d + 3 * d * h)
    assert shares["blocks.0.attn.qkv"] == pytest.approx(3 * d * d / total)
    for bits, cost in COST.items():
        assert plan_cost(layers, {n: bits for n in layers}) == pytest.approx(cost)
    mixed = {n: (16 if "qkv" in n else 4) for n in layers}
    assert plan_cost(layers, mixed) == pytest.approx(shares["blocks.0.attn.qkv"] * 2 * 0.75 + 0.25)
    with pytest.raises(KeyError):
        set_plan(layers, {"blocks.0.attn.qkv": 8})
    with pytest.raises(ValueError):
        layers["blocks.0.attn.qkv"].bits = 6


def test_mixed_plan_trains():
    model = tiny_gpt()
    layers = precision_linears(model)
    set_plan(layers, {n: (8 if i % 2 else 4) for i, n in enumerate(layers)})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (8, 32), generator=gen)
    losses = []
    for _ in range(30):
        loss = model(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
