"""LoRA / LoRA-XS / LoRA-SB adapters (reprolib.layers.lora): plain LoRA against HF peft's LoRA layer
(forward, gradients, initialisation), and all three against the identities they are defined by
(peft has no LoRA-XS or LoRA-SB)."""
import math

import pytest
import torch
from torch import nn

from reprolib.layers import (LoRALinear, accumulate_grads, is_linear, lora_init, lora_linears, lora_sb_init,
                             lora_xs_init, trainable_count, update_approximation)
from reprolib.models import GPT, GPTConfig


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 8))


def _batches(seed=1, n=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 12, generator=g), torch.randn(5, 8, generator=g)) for _ in range(n)]


def _mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_lora_starts_at_zero_update_and_matches_dense_forward():
    net = _net()
    x = torch.randn(7, 12)
    before = net(x)
    layers = lora_linears(net, "lora", r=4, generator=torch.Generator().manual_seed(0))
    assert set(layers) == {"0", "2"}
    torch.testing.assert_close(net(x), before)  # B = 0
    for lay in layers.values():
        assert torch.count_nonzero(lay.delta_weight()) == 0
        with torch.no_grad():
            lay.B.normal_()
    # with B != 0 the layer equals a dense layer of weight W0 + s B A
    lay = layers["0"]
    dense = nn.functional.linear(x, lay.weight + lay.delta_weight(), lay.bias)
    torch.testing.assert_close(lay(x), dense)
    # trainable: A and B only (r (m + n) per layer), W0 and bias frozen
    assert trainable_count(net) == 4 * (12 + 20) + 4 * (20 + 8)


def test_lora_init_a_matches_nn_linear_kaiming_bound():
    W0 = torch.zeros(30, 400)
    B, A = lora_init(W0, 64, torch.Generator().manual_seed(0))
    assert B.shape == (30, 64) and A.shape == (64, 400) and not B.any()
    bound = 1 / 400 ** 0.5
    assert A.abs().max() <= bound and A.abs().max() > 0.95 * bound
    assert abs(A.std().item() - bound / 3 ** 0.5) < 0.02 * bound


def test_lora_xs_is_svd_of_w0_and_trains_only_r():
    net = _net()
    W0 = net[0].weight.detach().clone()
    layers = lora_linears(net, "lora_xs", r=3, generator=torch.Generator().manual_seed(0))
    lay = layers["0"]
    U, S, Vh = torch.linalg.svd(W0)
    torch.testing.assert_close(lay.B @ lay.A, U[:, :3] @ torch.diag(S[:3]) @ Vh[:3])  # B A = W0's rank-3 SVD
    assert lay.R.abs().max() < 1e-4
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["0.R", "2.R"]
    assert trainable_count(net) == 2 * 9


def test_lora_sb_init_is_best_rank_r_approximation_of_first_step():
    net = _net()
    grads = accumulate_grads(net, _batches(), _mse)
    assert net[0].weight.grad is None  # left zeroed
    # the accumulated gradient is the sum of per-example gradients (closed form for one example at a time)
    ref = torch.zeros_like(net[0].weight)
    for x, y in _batches():
        for i in range(len(x)):
            net.zero_grad()
            _mse(net, (x[i:i + 1], y[i:i + 1])).backward()
            ref += net[0].weight.grad
    torch.testing.assert_close(grads["0"], ref, rtol=1e-4, atol=1e-5)
    net.zero_grad(set_to_none=True)
    lr, r = 1e-3, 4
    x = torch.randn(6, 12)
    W0 = net[0].weight.detach().clone()
    layers = lora_linears(net, "lora_sb", r=r, grads=grads, sb_lr=lr, alpha=2.0)  # s = 1/2: R absorbs it
    lay = layers["0"]
    dW = -lr * torch.sign(ref)
    torch.testing.assert_close(update_approximation(ref, lr), dW)
    U, S, Vh = torch.linalg.svd(dW)
    best = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]
    torch.testing.assert_close(lay.delta_weight(), best, rtol=1e-4, atol=1e-7)
    # Eckart-Young: its error is the trailing singular values, and a random rank-r factorisation does worse
    err = torch.linalg.norm(dW - lay.delta_weight())
    torch.testing.assert_close(err, S[r:].square().sum().sqrt(), rtol=1e-4, atol=1e-8)
    Q = torch.linalg.qr(torch.randn(20, r))[0]
    assert err < torch.linalg.norm(dW - Q @ Q.T @ dW)
    # B orthonormal columns, A orthonormal rows
    torch.testing.assert_close(lay.B.T @ lay.B, torch.eye(r), atol=1e-5, rtol=0)
    torch.testing.assert_close(lay.A @ lay.A.T, torch.eye(r), atol=1e-5, rtol=0)
    # W0 is not offset: the model starts at W0 + dW_r
    torch.testing.assert_close(lay(x), nn.functional.linear(x, W0 + best, lay.bias), rtol=1e-5, atol=1e-6)


def test_r_gradient_is_projected_weight_gradient():
    """dL/dR = s B^T (dL/dW) A^T: one step on R moves W by s B dR A (the LoRA-XS/SB subspace)."""
    net = _net()
    grads = accumulate_grads(net, _batches(), _mse)
    lay = lora_linears(net, "lora_sb", r=3, grads=grads, sb_lr=1e-2, alpha=6.0)["2"]
    x, y = _batches(seed=5, n=1)[0]
    _mse(net, (x, y)).backward()
    # the same loss through a dense weight W = W0 + s B R A
    W = (lay.weight + lay.delta_weight()).detach().requires_grad_(True)
    h = torch.tanh(net[0](x)).detach()
    ((nn.functional.linear(h, W, lay.bias) - y) ** 2).mean().backward()
    s = lay.scale
    torch.testing.assert_close(lay.R.grad, s * lay.B.T @ W.grad @ lay.A.T, rtol=1e-4, atol=1e-7)
    assert lay.B.grad is None and lay.A.grad is None and lay.weight.grad is None


def test_lora_linears_on_gpt_blocks_only():
    cfg = GPTConfig(vocab_size=11, seq_len=8, n_layer=1, d_model=32, n_head=2)
    model = GPT(cfg)
    idx = torch.randint(0, 11, (2, 8))
    before = model(idx)[0]
    sel = lambda n, m: is_linear(m) and n.startswith("blocks.")
    layers = lora_linears(model, "lora", r=2, select=sel)
    assert "lm_head" not in layers and len(layers) == 5  # qkv, proj, w1, w2, w3
    torch.testing.assert_close(model(idx)[0], before)
    assert all(isinstance(m, LoRALinear) for m in layers.values())
    assert trainable_count(model) == sum(2 * sum(m.weight.shape) for m in layers.values())


def test_bad_method_and_missing_grads_raise():
    import pytest
    with pytest.raises(ValueError):
        lora_linears(_net(), "dora", r=2)
    with pytest.raises(ValueError):
        lora_linears(_net(), "lora_sb", r=2)
    B, R, A = lora_sb_init(torch.randn(5, 4), 2, 0.1)
    assert B.shape == (5, 2) and R.shape == (2, 2) and A.shape == (2, 4)
    B, R, A = lora_xs_init(torch.randn(5, 4), 2)
    assert B.shape == (5, 2) and R.shape == (2, 2) and A.shape == (2, 4)


# ---- plain LoRA against HF peft ------------------------------------------------------------------------
def test_lora_matches_peft_forward_gradients_and_init():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    d_in, d_out, r, alpha = 20, 12, 4, 8
    net = nn.Sequential(nn.Linear(d_in, d_out)).double()
    pm = peft.get_peft_model(net, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"], lora_dropout=0.0))
    layer = pm.base_model.model[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    # peft's init, which lora_init follows: B = 0, A Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(n), 1/sqrt(n))
    assert torch.count_nonzero(B) == 0 and A.abs().max() <= 1 / math.sqrt(d_in)
    B_ours, A_ours = lora_init(layer.base_layer.weight, r, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(B_ours) == 0 and A_ours.shape == A.shape
    assert A_ours.abs().max() <= 1 / math.sqrt(d_in) and A_ours.abs().max() > 0.8 / math.sqrt(d_in)
    with torch.no_grad():
        B.normal_(0, 0.3)                                     # B = 0 at init: move it so B A counts
    ours = LoRALinear(layer.base_layer, B.detach(), A.detach(), scale=alpha / r).double()
    x = torch.randn(2, 5, d_in, dtype=torch.float64)
    y_peft, y = pm(x), ours(x)
    torch.testing.assert_close(y, y_peft, rtol=1e-12, atol=1e-12)
    d = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [ours.A, ours.B], d), torch.autograd.grad(y_peft, [A, B], d)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(ours.delta_weight(), layer.get_delta_weight("default"))
