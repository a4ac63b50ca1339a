"""ELECTRA pre-training with embedding sharing (reprolib/models/electra.py, layers/embedding_sharing.py),
its diagnostics (metrics/embedding.py) and the class-HMM data (data/class_hmm.py).

Oracles: the official DeBERTa construction of GDES (a forward pre-hook that sets the discriminator's
weight to generator.weight.detach() + _weight, rtd_task.py), rebuilt here; attention written out by hand;
brute-force pairwise cosines; closed-form gradients; the HMM's own parameters (empirical frequencies)."""
import torch
import torch.nn.functional as F
import pytest
from torch import nn

from reprolib import data, metrics
from reprolib.layers import GDESEmbedding, share_embeddings
from reprolib.models import GPT, Electra, GPTConfig, bidirectional, mask_tokens

V = 41


def cfgs(d=16):
    return (GPTConfig(vocab_size=V, seq_len=12, n_layer=1, d_model=d, n_head=2),
            GPTConfig(vocab_size=V, seq_len=12, n_layer=2, d_model=d, n_head=2))


def test_bidirectional_attention_sees_the_future_and_matches_manual():
    model = GPT(cfgs()[1]).eval()
    keys = set(model.state_dict())
    x = torch.randint(V - 1, (3, 12))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % (V - 1)
    with torch.no_grad():
        causal_same = torch.allclose(model(x)[0][:, 0], model(y)[0][:, 0])
        bidirectional(model)
        assert causal_same and not torch.allclose(model(x)[0][:, 0], model(y)[0][:, 0])
        attn = model.blocks[0].attn
        h = torch.randn(3, 12, 16)
        q, k, v = attn.qkv_heads(h)
        w = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).softmax(-1)          # no mask
        manual = attn.proj((w @ v).transpose(1, 2).reshape(3, 12, 16))
        torch.testing.assert_close(attn(h), manual, atol=1e-5, rtol=1e-5)
    assert set(model.state_dict()) == keys


def official_gdes(gen_emb: nn.Embedding) -> nn.Embedding:
    """The official construction: delete D's weight, register _weight = 0, and before every forward set
    weight = G.weight.detach() + _weight as a buffer (rtd_task.py, register_discriminator_fw_hook)."""
    d = nn.Embedding(*gen_emb.weight.shape)
    bias = nn.Parameter(torch.zeros_like(d.weight))
    delattr(d, "weight")
    d.register_parameter("_weight", bias)

    def hook(module, *inputs):
        if hasattr(module, "weight"):
            delattr(module, "weight")
        module.register_buffer("weight", gen_emb.weight.detach() + module._weight)
    d.register_forward_pre_hook(hook)
    return d


def test_gdes_matches_the_official_construction():
    g = nn.Embedding(V, 8)
    ours, theirs = GDESEmbedding(g), official_gdes(g)
    with torch.no_grad():
        ours.delta.normal_()
        theirs._weight.copy_(ours.delta)
    idx = torch.randint(V, (4, 7))
    target = torch.randn(4, 7, 8)
    for emb in (ours, theirs):
        ((emb(idx) - target) ** 2).sum().backward()
    torch.testing.assert_close(ours(idx), theirs(idx))
    torch.testing.assert_close(ours.delta.grad, theirs._weight.grad)
    assert g.weight.grad is None                     # the stop-gradient: nothing reaches E_G
    assert [n for n, _ in ours.named_parameters()] == ["delta"]
    merged = ours.merged()
    torch.testing.assert_close(merged.weight, g.weight + ours.delta)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(V - 1, (6, 12), generator=gen)
    _, masked = mask_tokens(x, V - 1, 0.3, gen)
    return x, masked


@pytest.mark.parametrize("mode", ["nes", "es", "gdes"])
def test_sharing_modes_route_gradients_as_the_paper_says(mode):
    torch.manual_seed(0)
    model = Electra(*cfgs(), mode, mask_id=V - 1, rtd_weight=50.0)
    g_emb = model.generator.tok_emb.weight
    d_emb = model.discriminator.tok_emb
    if mode == "es":
        assert d_emb is model.generator.tok_emb and d_emb.weight.data_ptr() == g_emb.data_ptr()
    elif mode == "gdes":
        assert torch.equal(d_emb.weight, g_emb) and not d_emb.delta.any()     # E_Delta = 0: E_D = E_G at init
    else:
        assert d_emb.weight.data_ptr() != g_emb.data_ptr()
    x, masked = _batch()
    torch.manual_seed(1)
    out = model(x, masked)
    assert torch.equal(out.loss, out.mlm + 50.0 * out.rtd)
    # a step on L_RTD alone: under GDES and NES it leaves E_G bitwise unchanged; under ES it moves it
    before = g_emb.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out.rtd.backward()
    opt.step()
    assert torch.equal(g_emb.detach(), before) == (mode != "es")
    if mode == "gdes":   # and a step on L_MLM alone leaves E_Delta unchanged
        opt.zero_grad()
        delta_before = d_emb.delta.detach().clone()
        torch.manual_seed(1)
        model(x, masked).mlm.backward()
        assert d_emb.delta.grad is None or not d_emb.delta.grad.any()
        torch.optim.SGD([d_emb.delta], lr=1.0).step()
        assert torch.equal(d_emb.delta.detach(), delta_before)


def test_rtd_labels_and_corruption():
    torch.manual_seed(0)
    model = Electra(*cfgs(), "gdes", mask_id=V - 1)
    x, masked = _batch(3)
    out = model(x, masked)
    assert torch.equal(out.corrupted[~masked], x[~masked])            # only masked positions change
    assert not out.labels[~masked].any()                                  # labels never set outside the mask
    assert torch.equal(out.labels.bool(), out.corrupted != x)
    assert out.rtd_logits.shape == x.shape


def test_a_diverged_generator_gives_a_nan_loss_not_an_error():
    """An lr sweep's largest rate can blow the generator up: the step must return a NaN loss (which
    ends the run) rather than fail in torch.multinomial (a device-side assert on CUDA)."""
    torch.manual_seed(0)
    model = Electra(*cfgs(), "gdes", mask_id=V - 1)
    with torch.no_grad():
        model.generator.tok_emb.weight[:5] = float("nan")
    x, masked = _batch(3)
    out = model(x, masked)
    assert not torch.isfinite(out.loss)
    assert torch.equal(out.corrupted[~masked], x[~masked])


@pytest.mark.parametrize("mode", ["es", "nes", "gdes"])
def test_forward_equals_boolean_indexing_bitwise(mode):
    """The forward gathers the masked rows through one flat index (one host sync); the step it computes is
    bit for bit the one written with boolean indexing (the official make_electra_data), gradients too."""
    def reference(m, x, masked):
        x_in = torch.where(masked, torch.full_like(x, m.mask_id), x)
        logits = m.generator(x_in)[0].float()
        mlm = F.cross_entropy(logits[masked], x[masked])
        with torch.no_grad():
            sample = torch.multinomial(logits[masked].softmax(-1), 1)[:, 0]
            corrupted = x_in.clone()
            corrupted[masked] = sample
            labels = (corrupted != x).float()
        rtd = F.binary_cross_entropy_with_logits(m.discriminator(corrupted)[0][..., 0].float(), labels)
        return mlm + m.rtd_weight * rtd, mlm, rtd, corrupted

    torch.manual_seed(0)
    model = Electra(*cfgs(), mode, mask_id=V - 1)
    x = torch.randint(V - 1, (4, 12))
    masked = mask_tokens(x, V - 1, 0.3)[1]
    grads = []
    for fn in (lambda: reference(model, x, masked), lambda: model(x, masked)):
        torch.manual_seed(1)                                   # the same generator samples
        out = fn()
        loss, mlm, rtd, corrupted = out if isinstance(out, tuple) else (out.loss, out.mlm, out.rtd, out.corrupted)
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads.append(([loss.detach(), mlm.detach(), rtd.detach(), corrupted],
                      [p.grad.clone() for p in model.parameters()]))
    (v_ref, g_ref), (v_new, g_new) = grads
    assert all(torch.equal(a, b) for a, b in zip(v_ref, v_new))
    assert all(torch.equal(a, b) for a, b in zip(g_ref, g_new))


def test_mask_tokens_rate():
    x = torch.randint(V - 1, (200, 64))
    x_in, masked = mask_tokens(x, V - 1, 0.15, torch.Generator().manual_seed(0))
    assert abs(masked.float().mean().item() - 0.15) < 0.01
    assert torch.equal(x_in == V - 1, masked) and torch.equal(x_in[~masked], x[~masked])


def test_mean_pairwise_cosine_and_grad_cosine():
    E = torch.randn(9, 5)
    u = F.normalize(E, dim=-1)
    brute = sum(float(u[i] @ u[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    assert metrics.mean_pairwise_cosine(E) == pytest.approx(brute, abs=1e-6)
    assert metrics.mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)
    w = torch.randn(6, requires_grad=True)
    a, b = torch.randn(6), torch.randn(6)
    got = metrics.grad_cosine((w * a).sum(), (w * b).sum(), w)      # gradients are a and b
    assert got == pytest.approx(float(F.cosine_similarity(a, b, dim=0)), abs=1e-6)
    assert metrics.grad_cosine((w * a).sum(), (w * -a).sum() * 3, w) == pytest.approx(-1.0, abs=1e-6)


def test_class_hmm_follows_its_parameters():
    torch.set_num_threads(1)
    h = data.class_hmm(vocab_size=120, n_classes=6, n_topics=3, classes_per_word=2, successors=3, seed=1)
    torch.testing.assert_close(h.trans.sum(-1), torch.ones(3, 6, dtype=torch.float64))
    assert ((h.emit > 0).sum(0) <= 2).all() and ((h.emit > 0).sum(0) >= 1).all()
    w, c, z = h.sample(6000, 20, torch.Generator().manual_seed(0))
    assert (h.emit[c.flatten(), w.flatten()] > 0).all()                  # every word is in its class's lexicon
    for topic in range(3):                                               # empirical transitions match A_z
        sel = z == topic
        prev, nxt = c[sel, :-1].flatten(), c[sel, 1:].flatten()
        counts = torch.zeros(6, 6, dtype=torch.float64).index_put_((prev, nxt), torch.ones(len(prev), dtype=torch.float64), accumulate=True)
        freq = counts / counts.sum(1, keepdim=True)
        assert (freq - h.trans[topic]).abs().max() < 0.03
    k = 2   # emissions of one class follow its row of B
    emp = torch.bincount(w[c == k], minlength=120).double()
    assert (emp / emp.sum() - h.emit[k]).abs().max() < 0.02
    w2, _, _ = h.sample(10, 20, torch.Generator().manual_seed(0))
    assert torch.equal(w2, h.sample(10, 20, torch.Generator().manual_seed(0))[0])


def test_roc_auc_against_sklearn():
    from sklearn.metrics import roc_auc_score
    g = torch.Generator().manual_seed(0)
    for n in (10, 200):
        y = torch.rand(n, generator=g) < 0.3
        s = torch.randn(n, generator=g) + y.float()
        assert metrics.roc_auc(s, y) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)
        s_tied = torch.randint(0, 3, (n,), generator=g).float()            # many ties
        assert metrics.roc_auc(s_tied, y) == pytest.approx(roc_auc_score(y.numpy(), s_tied.numpy()), abs=1e-12)
    assert metrics.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    assert metrics.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 1])) != metrics.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 1]))


def test_class_hmm_posteriors_against_enumeration():
    import itertools
    h = data.class_hmm(vocab_size=5, n_classes=3, n_topics=2, classes_per_word=2, successors=2, topic_mix=0.6, seed=4)
    w = torch.tensor([[0, 3, 1, 4], [2, 2, 0, 1]])
    p_z, p_c = h.posteriors(w)
    for i in range(2):   # p(w, c, z) summed over every class sequence and topic
        joint_z = torch.zeros(2, dtype=torch.float64)
        joint_c = torch.zeros(4, 3, dtype=torch.float64)
        for z in range(2):
            for cs in itertools.product(range(3), repeat=4):
                p = h.start[cs[0]] * h.emit[cs[0], w[i, 0]] / 2
                for t in range(1, 4):
                    p = p * h.trans[z, cs[t - 1], cs[t]] * h.emit[cs[t], w[i, t]]
                joint_z[z] += p
                for t in range(4):
                    joint_c[t, cs[t]] += p
        torch.testing.assert_close(p_z[i], joint_z / joint_z.sum())
        torch.testing.assert_close(p_c[i], joint_c / joint_c.sum(1, keepdim=True))
    acc = h.bayes_accuracy(*h.sample(400, 4, torch.Generator().manual_seed(0)))
    assert 0 <= acc["topic"] <= 100 and 0 <= acc["tag"] <= 100 and acc["mean"] == (acc["tag"] + acc["topic"]) / 2


@pytest.mark.parametrize("mode", ["nes", "es", "gdes"])
def test_clip_grad_norms_clips_each_model_by_its_own_norm(mode):
    """DeBERTaV3's decoupled training clips each model's gradient by itself; a table shared under ES is
    the generator's. Oracle: the norms computed by hand before clipping, and the global clip."""
    from reprolib.models.electra import clip_grad_norms_
    torch.manual_seed(0)
    model = Electra(*cfgs(), mode, mask_id=V - 1, rtd_weight=50.0)
    x, masked = _batch()
    torch.manual_seed(1)
    model(x, masked).loss.backward()
    gen = list(model.generator.parameters())
    disc = [p for p in model.discriminator.parameters() if all(p is not q for q in gen)]
    if mode == "es":
        assert all(q is not model.generator.tok_emb.weight for q in disc)      # the shared table: generator's
    if mode == "gdes":
        assert any(p is model.discriminator.tok_emb.delta for p in disc)
    norm = lambda ps: float(torch.stack([p.grad.norm() for p in ps if p.grad is not None]).norm())
    before = [p.grad.clone() for p in model.parameters()]
    g0, d0 = norm(gen), norm(disc)
    assert d0 > 1.0                                                        # lambda = 50: the clip acts
    got = clip_grad_norms_(model, 1.0)
    assert float(got[0]) == pytest.approx(g0, rel=1e-5) and float(got[1]) == pytest.approx(d0, rel=1e-5)
    assert norm(gen) == pytest.approx(min(1.0, g0), rel=1e-4)
    assert norm(disc) == pytest.approx(1.0, rel=1e-4)
    for p, b in zip(model.parameters(), before):                         # each group only rescaled
        own = any(p is q for q in gen)
        scale = min(1.0, 1.0 / (g0 if own else d0))
        torch.testing.assert_close(p.grad, b * scale, rtol=1e-4, atol=1e-7)


def test_context_free_replace():
    from reprolib.models.electra import context_free_replace
    x, masked = _batch(2)
    probs = torch.zeros(V, dtype=torch.float64)
    probs[[3, 7]] = 0.5
    corrupted, labels = context_free_replace(x, masked, probs, torch.Generator().manual_seed(0))
    assert torch.equal(corrupted[~masked], x[~masked]) and not labels[~masked].any()
    assert torch.equal(labels, corrupted != x)
    assert set(corrupted[masked].tolist()) <= {3, 7}


def test_rtd_bayes_posterior_against_enumeration():
    """p(label_t = 1 | corrupted) by summing the joint over every topic, class sequence and original word
    sequence: p(z) p(c | z) p(w | c) prod_s [(1 - p) 1(o_s = w_s) + p r(o_s)], with the factor at t
    replaced by p r(o_t) 1(o_t != w_t) for label_t = 1."""
    import itertools
    from reprolib.models.electra import rtd_bayes_posterior
    h = data.class_hmm(vocab_size=4, n_classes=3, n_topics=2, classes_per_word=2, successors=2, topic_mix=0.6, seed=4)
    r = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    p, T = 0.3, 3
    o = torch.tensor([[0, 3, 1], [2, 2, 0]])
    post = rtd_bayes_posterior(h, o, r, p)
    for i in range(2):
        total, repl = 0.0, torch.zeros(T, dtype=torch.float64)
        for z in range(2):
            for cs in itertools.product(range(3), repeat=T):
                pc = h.start[cs[0]] / 2
                for t in range(1, T):
                    pc = pc * h.trans[z, cs[t - 1], cs[t]]
                for ws in itertools.product(range(4), repeat=T):
                    pw = pc * torch.prod(torch.stack([h.emit[cs[t], ws[t]] for t in range(T)]))
                    ch = [(1 - p) * (int(o[i, t]) == ws[t]) + p * r[o[i, t]] for t in range(T)]
                    total = total + pw * torch.prod(torch.stack([torch.as_tensor(c) for c in ch]))
                    for t in range(T):
                        if int(o[i, t]) != ws[t]:
                            rest = [torch.as_tensor(ch[s]) for s in range(T) if s != t]
                            repl[t] += pw * p * r[o[i, t]] * torch.prod(torch.stack(rest))
        torch.testing.assert_close(post[i], repl / total)
