"""Attention entropy, its Theorem 3.1 lower bound, and the GPT's attention logits and norm positions."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy as scipy_entropy

from reprolib.metrics.attention import (attention_entropy, attention_logits, entropy_lower_bound, head_stats,
                                        row_logit_norm)
from reprolib.models import GPT, GPTConfig


def causal_logits(b=2, h=3, t=9, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(b, h, t, t, generator=g)
    return z.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))


def test_entropy_matches_scipy_row_by_row():
    z = causal_logits()
    ent = attention_entropy(z)
    for idx in np.ndindex(*z.shape[:3]):
        row = z[idx][: idx[-1] + 1]
        assert ent[idx].item() == pytest.approx(scipy_entropy(row.softmax(-1).double().numpy()), abs=1e-5)


def test_row_logit_norm_is_the_centred_norm_of_the_seen_keys():
    z = causal_logits()
    s = row_logit_norm(z)
    for idx in np.ndindex(*z.shape[:3]):
        row = z[idx][: idx[-1] + 1].double().numpy()
        assert s[idx].item() == pytest.approx(np.linalg.norm(row - row.mean()), rel=1e-5, abs=1e-6)


def two_level(s, n):
    """The extremal logits: one a, n - 1 b, centred, norm s."""
    gap = s * math.sqrt(n / (n - 1))
    z = torch.full((n,), -gap / n, dtype=torch.float64)
    z[0] += gap
    return z


@pytest.mark.parametrize("n", [2, 3, 8, 128])
@pytest.mark.parametrize("s", [0.0, 0.5, 3.0, 12.0])
def test_bound_is_attained_by_the_two_level_logits(s, n):
    z = two_level(s, n)
    assert z.norm().item() == pytest.approx(s, abs=1e-12)
    assert attention_entropy(z).item() == pytest.approx(entropy_lower_bound(s, n).item(), abs=1e-10)


def test_no_logits_of_that_norm_go_below_the_bound():
    """Random logits rescaled to norm s, and a projected-gradient search for the least entropy on the
    sphere ||z|| = s of centred logits (softmax ignores shifts): never below the bound, and the
    search gets close to it (tightness)."""
    def project(z):
        z = z - z.mean(-1, keepdim=True)
        return s * z / z.norm(dim=-1, keepdim=True)

    g = torch.Generator().manual_seed(0)
    for n in (3, 5, 16):
        for s in (0.7, 2.0, 6.0):
            bound = entropy_lower_bound(s, n).item()
            z = torch.randn(4000, n, generator=g, dtype=torch.float64)
            z = s * z / z.norm(dim=-1, keepdim=True)
            assert attention_entropy(z).min().item() >= bound - 1e-12
            z = torch.randn(64, n, generator=g, dtype=torch.float64)
            for _ in range(1000):
                z = project(z).requires_grad_(True)
                (gz,) = torch.autograd.grad(attention_entropy(z).sum(), z)
                z = (z - 0.02 * s * gz / gz.norm(dim=-1, keepdim=True).clamp(min=1e-30)).detach()   # normalised step
            least = attention_entropy(project(z)).min().item()
            assert bound - 1e-9 <= least <= bound * 1.01 + 1e-6, (n, s, least, bound)


def test_bound_edges():
    assert entropy_lower_bound(5.0, 1).item() == 0.0
    assert entropy_lower_bound(0.0, 64).item() == pytest.approx(math.log(64))
    b = entropy_lower_bound(torch.linspace(0, 20, 50), 128)
    assert torch.all(b[1:] <= b[:-1])   # falls with the logit norm


@pytest.mark.parametrize("attn", ["mha", "mla"])
def test_logits_give_the_attention_the_model_applies(attn):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, seq_len=16, n_layer=2, d_model=32, n_head=4, attn=attn))
    x = torch.randint(0, 30, (2, 16))
    with torch.no_grad():
        logits = attention_logits(model, x)
        assert len(logits) == 2 and logits[0].shape == (2, 4, 16, 16)
        att = model.blocks[0].attn
        h = model.tok_emb(x)
        q, k, v = att.qkv_heads(model.blocks[0].norm1(h))
        ours = logits[0].softmax(-1) @ v.float()
        assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
        assert torch.isinf(logits[0][..., 0, 1:]).all()


def test_head_stats_on_a_model_respect_the_bound():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, seq_len=16, n_layer=2, d_model=32, n_head=4))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)   # sharp attention, far from uniform
        stats = [head_stats(z) for z in attention_logits(model, torch.randint(0, 30, (3, 16)))]
    for st in stats:
        assert st["entropy"].shape == (4,) and st["last_row_norm"].shape == (3, 4)
        assert (st["bound_margin"] >= -1e-6).all()
        assert (st["entropy"] < math.log(16)).all()


@pytest.mark.parametrize("norm_position", ["post", "none"])
def test_norm_positions_run_backward_and_stay_causal(norm_position):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, seq_len=16, n_layer=2, d_model=32, n_head=4, norm="layer",
                          norm_position=norm_position))
    x = torch.randint(0, 30, (2, 16))
    logits, loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    x2 = x.clone()
    x2[:, 8:] = torch.randint(0, 30, (2, 8))
    assert torch.allclose(model(x2)[0][:, :8], logits[:, :8], atol=1e-5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == (2 * 2 if norm_position == "post" else 0)


def test_post_norm_block_normalises_its_output():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, seq_len=16, n_layer=1, d_model=32, n_head=4, norm="layer",
                          norm_position="post"))
    h = torch.randn(2, 16, 32)
    y, _ = model.blocks[0](h)
    assert torch.allclose(y.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)
