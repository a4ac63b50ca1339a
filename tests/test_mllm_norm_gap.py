"""The miniature MLLM, the norm-aligning LayerNorm, the token-dynamics metrics and the VQA questions."""
import math

import numpy as np
import pytest
import torch

from reprolib import metrics
from reprolib.data import vqa
from reprolib.models import GPT, GPTConfig, RandomPatchEncoder, TinyMLLM, aligned_layernorm


def small_mllm(d=32, layers=2, seed=0):
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=len(vqa.VOCAB), seq_len=32, n_layer=layers, d_model=d, n_head=4))
    return TinyMLLM(gpt, RandomPatchEncoder(d, seed=seed))


def images(n, seed=0):
    return torch.rand(n, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scale", [1e-2, 1.0, 300.0])
def test_aligned_layernorm_output_norm_is_the_target(scale):
    d, target = 64, 0.37
    ln = aligned_layernorm(d, target)
    x = scale * torch.randn(100, d, dtype=torch.float64) + 3.0 * scale
    y = ln.double()(x)
    # closed form: (x - mean) / sqrt(var + eps) has norm sqrt(d) up to eps, times gamma_0 = target / sqrt(d)
    var = x.var(-1, unbiased=False)
    expect = target * torch.sqrt(var / (var + ln.eps))
    torch.testing.assert_close(y.norm(dim=-1), expect, rtol=1e-6, atol=0)   # the gain is stored in float32
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (d,), ln.weight.double(), ln.bias.double()))


def test_token_dynamics_match_an_explicit_loop():
    g = torch.Generator().manual_seed(1)
    states = [torch.randn(3, 5, 8, generator=g) * (l + 1) for l in range(4)]
    rho, cos, norms = metrics.relative_update(states), metrics.direction_change(states), metrics.token_norms(states)
    S = [s.numpy().astype(np.float64) for s in states]
    for l in range(3):
        for i in range(3):
            for t in range(5):
                a, b = S[l][i, t], S[l + 1][i, t]
                assert rho[l, i, t] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-5)
                assert cos[l, i, t] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)
                assert norms[l, i, t] == pytest.approx(np.linalg.norm(a), rel=1e-6)
    means = metrics.group_means(rho, {"a": slice(0, 2), "b": slice(2, None)})
    torch.testing.assert_close(means["a"], rho[:, :, :2].reshape(3, -1).mean(1))


def test_hooked_states_equal_the_models_own_states():
    m = small_mllm().eval()
    q, _ = vqa.multimodal_questions(torch.arange(6) % 10, "or", torch.Generator().manual_seed(0))
    x = images(6)
    with torch.no_grad():
        logits, own = m(x, q, states=True)
        hooked = metrics.block_states(m.gpt.blocks, lambda: m(x, q))
    assert len(own) == len(hooked) == m.gpt.cfg.n_layer + 1
    for a, b in zip(own, hooked):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(logits, m.gpt.lm_head(m.gpt.norm_f(own[-1][:, -1])))


def test_text_only_path_is_the_plain_gpt():
    m = small_mllm().eval()
    q, _ = vqa.sum_questions(torch.tensor([[1, 2, 3], [9, 9, 9]]))
    with torch.no_grad():
        torch.testing.assert_close(m(None, q), m.gpt(q)[0][:, -1])


def test_visual_tokens_come_first_and_post_norm_applies_to_them_only():
    m = small_mllm()
    m.insert_post_norm("aligned")
    x = images(4)
    q, _ = vqa.multimodal_questions(torch.arange(4), "what")
    with torch.no_grad():
        h0 = m.embed(x, q)
        torch.testing.assert_close(h0[:, :16], m.post_norm(m.projector(m.encoder(x))))
        torch.testing.assert_close(h0[:, 16:], m.gpt.tok_emb(q))
        norms = h0[:, :16].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, m.text_norm()), rtol=1e-3, atol=0)


def test_calibrate_sets_the_mean_visual_norm():
    m = small_mllm()
    x = images(64)
    m.calibrate(x, 50.0)
    with torch.no_grad():
        assert float(m.projector(m.encoder(x)).norm(dim=-1).mean()) == pytest.approx(50.0, rel=1e-4)
    assert not any(p.requires_grad for p in m.encoder.parameters())   # the encoder holds buffers only


def test_prenorm_update_ignores_a_tokens_scale():
    """The paper's mechanism: a pre-norm sub-layer's update reads norm(h) only, so scaling some tokens'
    states by c leaves the attention update of every token unchanged (up to the norm's eps) and divides
    those tokens' relative update by c. The MLP sub-layer reads h + attention update, so for the whole
    block this holds only approximately, better as c grows."""
    m = small_mllm(layers=1).double().eval()
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 7, 32, generator=g, dtype=torch.float64)
    c = 40.0
    h2 = h.clone()
    h2[:, :3] *= c
    block = m.gpt.blocks[0]
    with torch.no_grad():
        u1, u2 = block.attn(block.norm1(h)), block.attn(block.norm1(h2))
        torch.testing.assert_close(u1, u2, rtol=1e-9, atol=1e-12)
        r1, r2 = metrics.relative_update([h, h + u1]), metrics.relative_update([h2, h2 + u2])
        torch.testing.assert_close(r2[:, :, :3] * c, r1[:, :, :3], rtol=1e-9, atol=0)
        big = [block(s)[0] - s for s in (h * 1e3, h * 1e4)]   # whole block: the update converges as c grows
        assert (big[0] - big[1]).abs().max() < 1e-2 * big[1].abs().max()


def test_questions_have_the_right_answers():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=g)
    c0 = vqa.TOKEN["c0"]
    q, a = vqa.multimodal_questions(labels, "what", g)
    assert torch.equal(a, labels + c0) and (q[:, 0] == vqa.TOKEN["what"]).all() and (q[:, -1] == vqa.TOKEN["?"]).all()
    q, a = vqa.multimodal_questions(labels, "is", g)
    yes = q[:, 1] - c0 == labels
    assert torch.equal(a == vqa.TOKEN["yes"], yes) and 0.45 < yes.float().mean() < 0.55
    q, a = vqa.multimodal_questions(labels, "or", g)
    asked = q[:, 1:3] - c0
    assert torch.equal(a, labels + c0)
    assert ((asked == labels[:, None]).sum(1) == 1).all()           # exactly one option is the true class
    assert 0.45 < (asked[:, 0] == labels).float().mean() < 0.55      # and it is first half the time
    triples = torch.tensor([[1, 2, 3], [9, 9, 9], [0, 0, 7]])
    q, a = vqa.sum_questions(triples)
    assert [vqa.VOCAB[t] for t in a] == ["6", "7", "7"]
    assert [vqa.VOCAB[t] for t in q[0]] == ["sum", "1", "2", "3", "?"]


def test_triple_splits_partition_the_thousand_triples():
    s = vqa.triple_splits()
    keys = [set(map(tuple, s[k].tolist())) for k in ("train", "val", "test")]
    assert [len(k) for k in keys] == [700, 100, 200]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert len(keys[0] | keys[1] | keys[2]) == 1000


def test_batches_and_eval_set_shapes():
    g = torch.Generator().manual_seed(0)
    x, y = images(50), torch.randint(0, 10, (50,), generator=g)
    tr = vqa.triple_splits()
    b = vqa.vqa_batch(x, y, tr["train"], 32, 8, g)
    assert b.images.shape == (32, 28, 28) and b.questions.shape == (32, 5) and b.text_questions.shape == (8, 5)
    assert set(b.kinds.tolist()) <= {0, 1, 2}
    e = vqa.vqa_eval_set(x, y, tr["test"])
    assert e.questions.shape == (150, 5) and e.text_questions.shape == (200, 5)
    assert torch.equal(e.images[:50], x) and torch.equal(e.images[100:], x)
    m = small_mllm()
    assert m(b.images, b.questions).shape == (32, len(vqa.VOCAB))
    assert math.isfinite(float(m(None, b.text_questions).detach().sum()))
