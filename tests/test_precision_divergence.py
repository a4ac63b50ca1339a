"""SNIP's divergence statistics: the captured operands against autograd, the forward estimate against
the exact loss change of a quantised forward, the backward estimate against the layer's own quantised
wgrad, Adam's second moment against torch.optim.AdamW, and the steady-state noise formula behind the
backward estimate against a simulation."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from reprolib.layers.mixed_precision import QuantisedGemms, precision_linears, set_plan
from reprolib.metrics.precision_divergence import (adam_v_hat, capture_gemm_operands, divergence_table,
                                                   loss_divergence, measured_loss_divergence, weight_divergence)
from reprolib.models import GPT, GPTConfig


def trained_gpt(steps=25, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=23, n_layer=2, d_model=64, n_head=2, seq_len=32))
    layers = precision_linears(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    data = (torch.arange(4096) * 7 % 23 + torch.randint(0, 3, (4096,), generator=gen)) % 23   # learnable stream
    def batch():
        i = torch.randint(0, 4096 - 33, (16,), generator=gen)
        w = torch.stack([data[j:j + 33] for j in i])
        return w[:, :-1], w[:, 1:]
    for _ in range(steps):
        model(*batch())[1].backward()
        opt.step()
        opt.zero_grad()
    return model, layers, opt, batch


def test_captured_operands_are_the_layers_inputs_and_output_gradients():
    model, layers, opt, batch = trained_gpt(steps=3)
    b = batch()
    set_plan(layers, {n: 4 for n in layers})
    ops, loss = capture_gemm_operands(model, layers, b)
    assert all(m.bits == 4 for m in layers.values()) and all(p.grad is None for p in model.parameters())
    set_plan(layers, {n: 16 for n in layers})
    assert loss == pytest.approx(model(*b)[1].item(), abs=1e-6)
    model(*b)[1].backward()   # the oracle: autograd's weight gradient of the BF16 step is G^T X
    for name, layer in layers.items():
        x, g = ops[name]
        assert x.shape[0] == g.shape[0] == 16 * 32
        torch.testing.assert_close(g.t() @ x, layer.weight.grad, rtol=1e-4, atol=1e-7)


def test_forward_estimate_tracks_the_exact_loss_change():
    """At 8 bits the error is small and the Taylor estimate must be close to the exact loss change of
    the same batch; at 4 bits it must still rank the layers."""
    model, layers, opt, batch = trained_gpt()
    b = batch()
    tab = divergence_table(model, layers, b, opt, bits=(16, 8, 4))
    assert (tab["forward"][:, 0] == 0).all() and (tab["backward"][:, 0] == 0).all()
    for j, bits in ((1, 8), (2, 4)):
        exact = np.array(list(measured_loss_divergence(model, layers, b, bits).values()))
        est = tab["forward"][:, j]
        if bits == 8:
            assert np.abs(est - exact).max() <= 0.1 * np.abs(exact).max()
        assert spearmanr(est, exact)[0] > 0.8
    assert (tab["backward"][:, 2] > tab["backward"][:, 1]).all() and (tab["backward"][:, 1] > 0).all()


def test_backward_estimate_is_the_quantised_wgrad_error_through_adam():
    model, layers, opt, batch = trained_gpt(steps=5)
    ops, _ = capture_gemm_operands(model, layers, batch())
    name = "blocks.1.mlp.w2"
    layer, (x, g) = layers[name], ops[name]
    v_hat, (lr, eps) = adam_v_hat(opt, layer.weight)
    for bits in (8, 4):
        w = layer.weight.detach().clone().requires_grad_()
        (grad_w,) = torch.autograd.grad(QuantisedGemms.apply(x, w, bits, 256, 2), w, grad_outputs=g)
        expect = lr / 4 * ((grad_w - g.t() @ x).square() / (v_hat.sqrt() + eps)).sum()
        assert weight_divergence(x, g, v_hat, lr, bits) == pytest.approx(float(expect), rel=1e-4)
    assert loss_divergence(x, layer.weight, g, 16) == 0.0 and weight_divergence(x, g, v_hat, lr, 16) == 0.0


def test_adam_v_hat_equals_adamw_state():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95))
    v = torch.zeros(5)
    for t in range(1, 8):
        p.grad = torch.randn(5)
        v = 0.95 * v + 0.05 * p.grad.square()
        opt.step()
    v_hat, (lr, eps) = adam_v_hat(opt, p)
    torch.testing.assert_close(v_hat, v / (1 - 0.95 ** 7))
    assert (lr, eps) == (1e-2, 1e-8)
    q = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError):
        adam_v_hat(torch.optim.AdamW([q]), q)     # no step taken: no second moment
    with pytest.raises(ValueError):
        adam_v_hat(opt, q)                         # not one of the optimizer's parameters


def test_steady_state_excess_loss_is_lr_tr_PS_over_4():
    """The basis of the backward estimate: theta <- theta - lr P (H theta + e), e ~ N(0, S), on
    L = theta^T H theta / 2 settles at E[L] = lr tr(P S) / 4 (small lr), whatever H is."""
    gen = torch.Generator().manual_seed(0)
    h = torch.tensor([1.0, 4.0, 0.5, 9.0], dtype=torch.float64)
    P = torch.tensor([2.0, 0.5, 1.0, 0.1], dtype=torch.float64)
    s = torch.tensor([0.3, 1.0, 2.0, 0.5], dtype=torch.float64)
    lr, chains = 0.01, 4000
    theta = torch.zeros(chains, 4, dtype=torch.float64)
    losses = []
    for t in range(3000):
        e = torch.randn(chains, 4, generator=gen, dtype=torch.float64) * s.sqrt()
        theta = theta - lr * P * (h * theta + e)
        if t >= 1500:
            losses.append(float((0.5 * h * theta.square()).sum(1).mean()))
    assert np.mean(losses) == pytest.approx(lr * float((P * s).sum()) / 4, rel=0.05)


def test_measured_divergence_restores_the_plan():
    model, layers, opt, batch = trained_gpt(steps=2)
    plan = {n: (8 if i % 2 else 4) for i, n in enumerate(layers)}
    set_plan(layers, plan)
    out = measured_loss_divergence(model, layers, batch(), 16)
    assert all(v == 0.0 for v in out.values())
    assert {n: m.bits for n, m in layers.items()} == plan
