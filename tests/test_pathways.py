"""Expert pathways (reprolib/metrics/pathways.py), rank correlation (metrics/correlation.py) and the
modular-arithmetic groups (data/modular.py).

Oracles: rapidfuzz's Levenshtein distance and a brute-force recursion (edit distance); scipy's spearmanr
(rank correlation); the MoE layer's own output (the traced gates rebuild it); Python integer arithmetic
(the labels); closed forms for the pathway metrics on constructed routings."""
import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from rapidfuzz.distance import Levenshtein as RF
from scipy.stats import spearmanr

from reprolib import data, metrics
from reprolib.models import GPT, GPTConfig


def brute_levenshtein(a, b):
    @lru_cache(maxsize=None)
    def d(i, j):   # the definition: the cheapest of the three last operations, recursively
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


def test_levenshtein_known_pairs():
    enc = lambda s: torch.tensor([[ord(c) for c in s]])
    for x, y, want in (("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "abc", 0), ("abcd", "dcba", 4)):
        assert int(metrics.levenshtein(enc(x), enc(y))[0]) == want


def test_levenshtein_against_rapidfuzz_and_brute_force():
    g = torch.Generator().manual_seed(1)
    for n, m, alphabet in ((8, 8, 3), (5, 7, 4), (1, 6, 2), (6, 6, 8)):
        a, b = torch.randint(alphabet, (200, n), generator=g), torch.randint(alphabet, (200, m), generator=g)
        got = metrics.levenshtein(a, b).tolist()
        assert got == [RF.distance(x, y) for x, y in zip(a.tolist(), b.tolist())]
        assert got[:40] == [brute_levenshtein(tuple(x), tuple(y)) for x, y in zip(a.tolist()[:40], b.tolist()[:40])]


def test_pathway_distance_closed_forms():
    same = torch.tensor([[[0, 1], [2, 3]]]).repeat(5, 1, 1)          # 5 samples, 2 layers, top-2
    assert metrics.pathway_distance(same) == 0.0
    disjoint = torch.stack([torch.full((2, 2), 2 * i) + torch.tensor([0, 1]) for i in range(4)])  # no shared id
    assert metrics.pathway_distance(disjoint) == 1.0
    # the order of the top-k ids within a layer does not matter; the mean is over all pairs
    ids = torch.tensor([[[1, 0]], [[0, 1]], [[0, 2]]])
    assert metrics.pathway_distance(ids) == pytest.approx((0 + 1 + 1) / 3 / 2)
    brute = np.mean([brute_levenshtein(tuple(x), tuple(y)) / 2 for x, y in itertools.combinations([(0, 1), (0, 1), (0, 2)], 2)])
    assert metrics.pathway_distance(ids) == pytest.approx(brute)


def test_pathway_consistency_closed_forms():
    d, E, L = 6, 4, 3
    r = torch.randn(E, d)
    ids = torch.randint(E, (10, L, 2)).sort(-1).values
    ids[..., 1] = torch.where(ids[..., 1] == ids[..., 0], (ids[..., 0] + 1) % E, ids[..., 1])
    gates = torch.rand(10, L, 2)
    gates = gates / gates.sum(-1, keepdim=True)
    # every layer routes to experts with identical embeddings, with the same gates: C = 1
    same_route = ids[:, :1].expand(-1, L, -1)
    same_gate = gates[:, :1].expand(-1, L, -1)
    assert metrics.pathway_consistency(same_route, same_gate, [r] * L) == pytest.approx(1.0, abs=1e-6)
    # orthogonal expert embeddings in consecutive layers: C = 0
    eye = torch.eye(2 * E)[:, :]
    routers = [eye[:E], eye[E:], eye[:E]]
    assert metrics.pathway_consistency(ids, gates, routers) == pytest.approx(0.0, abs=1e-7)
    # against the formula written out for one sample
    routers = [torch.randn(E, d) for _ in range(L)]
    e = [sum(gates[0, l, i] * routers[l][ids[0, l, i]] for i in range(2)) for l in range(L)]
    want = np.mean([float(torch.nn.functional.cosine_similarity(e[l], e[l + 1], dim=0)) for l in range(L - 1)])
    got = metrics.pathway_consistency(ids[:1], gates[:1], routers)
    assert got == pytest.approx(want, abs=1e-6)


def _moe_gpt():
    cfg = GPTConfig(vocab_size=20, seq_len=5, n_layer=3, d_model=32, n_head=2, mlp="moe", n_experts=6, top_k=2)
    model = GPT(cfg).eval()
    with torch.no_grad():   # larger router weights than the init, so that the routing is far from ties
        for b in model.blocks:
            b.mlp.router.weight.normal_(0, 1.0)
    return model


def test_router_trace_matches_manual_routing_and_rebuilds_moe_output():
    model = _moe_gpt()
    idx = torch.randint(20, (7, 5))
    tr = metrics.router_trace(model, idx)
    assert tr.ids.shape == (7, 5, 3, 2) and tr.gates.shape == (7, 5, 3, 2) and tr.probs.shape == (7, 5, 3, 6)
    assert torch.all(tr.ids[..., 0] < tr.ids[..., 1])
    torch.testing.assert_close(tr.gates.sum(-1), torch.ones(7, 5, 3))
    x = model.tok_emb(idx)
    with torch.no_grad():
        for l, block in enumerate(model.blocks):
            h = x + block.attn(block.norm1(x))
            u = block.norm2(h)
            probs = (u @ block.mlp.router.weight.T).softmax(-1)
            assert torch.equal(probs.topk(2, dim=-1).indices.sort(-1).values, tr.ids[:, :, l])
            # the traced gates, scattered back to all experts, give the MoE layer's own output
            full = torch.zeros_like(probs).scatter(-1, tr.ids[:, :, l], tr.gates[:, :, l])
            m = block.mlp
            hidden = torch.nn.functional.silu(torch.einsum("btd,ehd->bteh", u, m.w1)) * torch.einsum("btd,ehd->bteh", u, m.w3)
            rebuilt = torch.einsum("bteh,edh,bte->btd", hidden, m.w2, full)
            torch.testing.assert_close(rebuilt, m(u)[0], atol=1e-5, rtol=1e-4)
            x, _ = block(x)
    # hooks are removed: a second trace sees the same routing, and no hook is left behind
    assert torch.equal(metrics.router_trace(model, idx).ids, tr.ids)
    assert all(not b.mlp.router._forward_hooks for b in model.blocks)


def test_expert_share_and_at():
    model = _moe_gpt()
    tr = metrics.router_trace(model, torch.randint(20, (9, 5)))
    share = tr.expert_share()
    torch.testing.assert_close(share.sum(-1), torch.ones(3))
    assert float(share.max()) <= 0.5 + 1e-6    # top-2: an expert holds at most one of a token's two slots
    last = tr.at(-1)
    assert torch.equal(last.ids, tr.ids[:, -1]) and last.expert_share().shape == (3, 6)


def test_spearman_against_scipy():
    rng = np.random.default_rng(0)
    for n in (3, 7, 40):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert metrics.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
        xt, yt = rng.integers(0, 3, size=n).astype(float), rng.integers(0, 4, size=n).astype(float)   # ties
        if len(set(xt)) > 1 and len(set(yt)) > 1:
            assert metrics.spearman(xt, yt) == pytest.approx(spearmanr(xt, yt).statistic, abs=1e-12)
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert math.isnan(metrics.spearman([1, 2], [1, 2])) and math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
    assert metrics.spearman([1, 2, np.nan, 3], [3, 2, 5, 1]) == pytest.approx(-1.0)


def test_modular_arithmetic_labels_and_splits():
    p, ops = 11, ("x+y", "x-y", "x*y", "x2+y2")
    d = data.modular_arithmetic(p, ops, train_frac=0.4, select_frac=0.5, seed=3)
    assert d.vocab_size == p + 5 and d.x.shape == (4 * p * p, 4)
    ref = {"x+y": lambda a, b: (a + b) % p, "x-y": lambda a, b: (a - b) % p, "x*y": lambda a, b: a * b % p,
           "x2+y2": lambda a, b: (a * a + b * b) % p}
    for (a, op, b, eq), y, g in zip(d.x.tolist(), d.y.tolist(), d.group.tolist()):
        assert op == p + g and eq == p + 4 and y == ref[ops[g]](a, b)
    parts = torch.cat([d.train, d.select, d.test])
    assert torch.equal(parts.sort().values, torch.arange(4 * p * p))      # a partition
    n_train = round(0.4 * p * p)
    for g in range(4):   # every group has the same share in each split
        assert int((d.group[d.train] == g).sum()) == n_train
        assert int((d.group[d.select] == g).sum()) == round(0.5 * (p * p - n_train))
    again, other = data.modular_arithmetic(p, ops, 0.4, 0.5, seed=3), data.modular_arithmetic(p, ops, 0.4, 0.5, seed=4)
    assert torch.equal(again.train, d.train) and not torch.equal(other.train, d.train)
    with pytest.raises(ValueError):
        data.modular_arithmetic(p, ("x/y",))
