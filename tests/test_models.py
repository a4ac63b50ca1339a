"""The configurable GPT: every option combination runs, is causal, and counts what it claims."""
import pytest
import torch

from reprolib.models import GPT, MLP, GPTConfig


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, seq_len=24, n_layer=2, d_model=32, n_head=4, **kw))


@pytest.mark.parametrize("attn", ["mha", "mla"])
@pytest.mark.parametrize("mlp", ["dense", "moe"])
@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_forward_backward_and_causality(attn, mlp, norm):
    model = tiny(attn=attn, mlp=mlp, norm=norm)
    x = torch.randint(0, 40, (3, 24))
    logits, loss = model(x, x)
    assert logits.shape == (3, 24, 40) and torch.isfinite(loss)
    (loss + 0.01 * model.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    x2 = x.clone()
    x2[:, 12:] = torch.randint(0, 40, (3, 12))  # change the future only
    assert torch.allclose(model(x2)[0][:, :12], logits[:, :12], atol=1e-5)


def test_initial_loss_is_near_uniform():
    _, loss = tiny()(torch.randint(0, 40, (4, 24)), torch.randint(0, 40, (4, 24)))
    assert abs(loss.item() - torch.log(torch.tensor(40.0)).item()) < 0.1


def test_kv_cache_and_active_params():
    mha, mla = tiny(attn="mha"), tiny(attn="mla", d_latent=8, rope_dim=4)
    assert mha.kv_cache_bytes_per_token() == 2 * 2 * 32 * 2  # layers * (k+v) * d * bf16
    assert mla.kv_cache_bytes_per_token() == 2 * (8 + 4) * 2
    moe = tiny(mlp="moe", n_experts=4, top_k=1)
    expert = sum(p.numel() for n, p in moe.named_parameters() if ".mlp.w" in n)
    assert moe.n_params() - moe.n_params(active=True) == expert - expert // 4


def test_moe_gates_are_topk_and_balance_loss_is_one_when_uniform():
    model = tiny(mlp="moe", n_experts=4, top_k=2)
    moe = model.blocks[0].mlp
    torch.nn.init.zeros_(moe.router.weight)  # uniform router: f_i = P_i = 1/E, so aux = 1
    x = torch.randn(2, 24, 32)
    _, aux = moe(x)
    assert abs(aux.item() - 1.0) < 1e-5


def test_moe_equals_sparse_routing():
    model = tiny(mlp="moe", n_experts=4, top_k=2)
    moe = model.blocks[0].mlp
    x = torch.randn(1, 5, 32)
    y, _ = moe(x)
    probs = moe.router(x).softmax(-1)[0]
    for t in range(5):
        p, idx = probs[t].topk(2)
        ref = sum(w / p.sum() * (moe.w2[e] @ (torch.nn.functional.silu(moe.w1[e] @ x[0, t]) * (moe.w3[e] @ x[0, t])))
                  for w, e in zip(p, idx))
        assert torch.allclose(y[0, t], ref, atol=1e-5)


def test_bad_config_names_valid_choices():
    with pytest.raises(ValueError, match="valid"):
        GPTConfig(vocab_size=10, attn="gqa")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, d_model=30, n_head=4)


def test_mlp_shapes():
    net = MLP(64, [32, 16], 10)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    with pytest.raises(ValueError, match="valid"):
        MLP(4, [4], 2, activation="swish2")


@pytest.mark.parametrize("size", [28, 8])
def test_small_cnn_shapes_and_swappable_first_layer(size):
    from reprolib.models import SmallCNN
    net = SmallCNN(image_size=size)
    assert net(torch.randn(3, 1, size, size)).shape == (3, 10)
    first = torch.nn.Conv2d(1, 32, 3, padding=1)
    assert SmallCNN(image_size=size, first_layer=first).conv1 is first
    with pytest.raises(ValueError, match="too small"):
        SmallCNN(image_size=3)
