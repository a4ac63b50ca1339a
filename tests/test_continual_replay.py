"""Tests for the continual-learning parts: the reservoir buffer (Algorithm R's uniform inclusion
probability M/N, chi-square), ECE (closed forms on hand-built predictions), forgetting (a toy matrix by
hand), the idempotent model and IDER's losses (the loss recomputed term by term from the official
models/ider.py on a fixed batch; invariants: a model that ignores its label input is idempotent)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from reprolib.data import ReservoirBuffer
from reprolib.metrics import ece, final_accuracy, forgetting, reliability_bins
from reprolib.models import IdempotentMLP
from reprolib.penalties import er_loss, idempotence_distillation, ider_loss, two_pass_ce


# ---- reservoir ------------------------------------------------------------------------------------
def test_reservoir_fills_then_keeps_size():
    buf = ReservoirBuffer(5, seed=0)
    buf.add(torch.arange(3).float()[:, None], torch.arange(3))
    assert len(buf) == 3 and buf.y[:3].tolist() == [0, 1, 2]
    buf.add(torch.arange(3, 5).float()[:, None], torch.arange(3, 5))
    assert buf.y.tolist() == [0, 1, 2, 3, 4]                       # the first M items fill the slots in order
    buf.add(torch.arange(5, 50).float()[:, None], torch.arange(5, 50))
    assert len(buf) == 5 and buf.seen == 50
    assert torch.equal(buf.x[:, 0].long(), buf.y)                  # images and labels move together


@pytest.mark.parametrize("batch", [1, 4])
def test_reservoir_inclusion_is_uniform(batch):
    """After N items each is stored with probability M/N (chi-square over the items, 3000 streams)."""
    M, N, trials = 6, 24, 3000
    counts = np.zeros(N)
    for t in range(trials):
        buf = ReservoirBuffer(M, seed=t)
        for i in range(0, N, batch):
            ids = torch.arange(i, min(i + batch, N))
            buf.add(ids[:, None].float(), ids)
        counts[buf.y.numpy()] += 1
    assert counts.sum() == trials * M
    p = stats.chisquare(counts, np.full(N, trials * M / N)).pvalue
    assert p > 1e-3, (p, counts)
    # a wrong rule (e.g. j ~ U{0..M-1}: always replace) keeps the last items far too often
    assert counts[-batch:].mean() < 1.5 * trials * M / N


def test_reservoir_same_slot_twice_keeps_the_later_item():
    class Fixed(ReservoirBuffer):
        def slots(self, n):
            self.seen += n
            return torch.tensor([0, 2, 0, -1, 2])
    buf = Fixed(3)
    buf.add(torch.arange(5).float()[:, None] + 10, torch.arange(5))
    assert buf.y.tolist() == [2, 0, 4] and buf.x[:, 0].tolist() == [12, 0, 14]


def test_reservoir_sample_without_replacement():
    buf = ReservoirBuffer(10, seed=1)
    buf.add(torch.arange(10).float()[:, None], torch.arange(10))
    _, y = buf.sample(10)
    assert sorted(y.tolist()) == list(range(10))
    _, y = buf.sample(4)
    assert len(set(y.tolist())) == 4
    with pytest.raises(ValueError):
        ReservoirBuffer(3).sample(1)


# ---- ECE ------------------------------------------------------------------------------------------
def logits_with_confidence(conf, n_classes=10):
    """Logits whose softmax puts `conf` on class 0 and the rest evenly on the others."""
    conf = torch.as_tensor(conf, dtype=torch.float64)
    rest = (1 - conf) / (n_classes - 1)
    return torch.log(torch.cat([conf[:, None], rest[:, None].expand(-1, n_classes - 1)], 1))


def test_ece_constant_confidence_is_the_gap():
    """Every prediction at confidence 0.8, 60% correct: one bin, ECE = |0.6 - 0.8| = 0.2."""
    n = 1000
    logits = logits_with_confidence(torch.full((n,), 0.8, dtype=torch.float64))
    labels = torch.where(torch.arange(n) < 600, 0, 3)
    assert ece(logits, labels) == pytest.approx(0.2, abs=1e-9)


def test_ece_hand_built_two_bins():
    """Confidences 0.95 (4 samples, 3 right) and 0.55 (6 samples, 6 right):
    ECE = 0.4 |0.75 - 0.95| + 0.6 |1 - 0.55| = 0.08 + 0.27 = 0.35."""
    conf = torch.tensor([0.95] * 4 + [0.55] * 6, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 5] + [0] * 6)
    assert ece(logits_with_confidence(conf), labels) == pytest.approx(0.35, abs=1e-9)
    b = reliability_bins(conf, labels == 0, 15)
    assert b["count"].sum() == 10 and b["count"][14] == 4 and b["count"][8] == 6   # 0.55 in (8/15, 9/15]


def test_ece_bins_are_right_closed():
    conf = torch.tensor([1 / 15, 1 / 15 + 1e-6, 1.0], dtype=torch.float64)
    b = reliability_bins(conf, torch.ones(3, dtype=torch.bool), 15)
    assert b["count"][0] == 1 and b["count"][1] == 1 and b["count"][14] == 1


def test_ece_calibrated_predictor_is_near_zero():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    conf = 0.1 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    correct = torch.rand(n, generator=g, dtype=torch.float64) < conf
    labels = torch.where(correct, 0, 1)
    assert ece(logits_with_confidence(conf), labels) < 0.01
    assert ece(logits_with_confidence(conf), torch.zeros(n, dtype=torch.long)) > 0.4   # always right: badly under-confident


# ---- continual-learning summaries ----------------------------------------------------------------
def test_forgetting_and_final_accuracy_by_hand():
    A = [[90, 0, 0],
         [70, 95, 0],
         [60, 80, 85]]
    assert final_accuracy(A) == pytest.approx((60 + 80 + 85) / 3)
    assert forgetting(A) == pytest.approx(((90 - 60) + (95 - 80)) / 2)   # best earlier value, not the first
    assert forgetting([[50.0]]) == 0.0
    assert forgetting([[50, 0], [70, 90]]) == pytest.approx(-20.0)         # backward transfer counts negative


# ---- the idempotent model and IDER's losses -------------------------------------------------------
def model_and_batch(seed=0, n=8):
    torch.manual_seed(seed)
    model = IdempotentMLP(12, [16, 16], 5).double()
    x = torch.randn(n, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 5, (n,))
    return model, x, y


def test_empty_label_is_uniform():
    model, x, _ = model_and_batch()
    y0 = torch.full((len(x), 5), 0.2, dtype=torch.float64)
    assert torch.equal(model(x), model.f2(model.f1(x.flatten(1)), y0))


def test_ider_loss_matches_the_official_terms():
    """models/ider.py `observe` written out term by term (weightmask = 1: the empty label always)."""
    model, x, y = model_and_batch(0)
    old, _, _ = model_and_batch(1)
    _, xb, yb = model_and_batch(2)
    _, xa, _ = model_and_batch(3)
    C, w_a, w_b, w_c = 5, 0.05, 0.05, 0.5

    def passes(net, inputs):
        z = net.f1(inputs.flatten(1))
        y1 = net.f2(z, torch.ones(len(inputs), C, dtype=torch.float64) / C)
        return y1, net.f2(z, y1.softmax(-1))

    y1, y2 = passes(model, x)
    ref = 0.5 * (F.cross_entropy(y1, y) + F.cross_entropy(y2, y))
    ref = ref + w_b * F.mse_loss(y1, old.f2(old.f1(x.flatten(1)), y1.softmax(-1)))
    b1, b2 = passes(model, xb)
    ref = ref + w_c * (F.cross_entropy(b1, yb) + F.cross_entropy(b2, yb))
    a1, _ = passes(model, xa)
    ref = ref + w_a * F.mse_loss(a1, old.f2(old.f1(xa.flatten(1)), a1.softmax(-1)))
    got = ider_loss(model, old, x, y, buf=(xb, yb), buf_id=(xa, None))
    assert got.item() == pytest.approx(ref.item(), abs=1e-12)
    # first task: no old model, no buffer: only the two supervised passes
    assert ider_loss(model, None, x, y).item() == pytest.approx(0.5 * (F.cross_entropy(y1, y) + F.cross_entropy(y2, y)).item())


def test_old_model_gets_no_gradient_but_the_softmax_path_does():
    model, x, y = model_and_batch(0)
    old = copy.deepcopy(model)
    before = [p.detach().clone() for p in old.parameters()]
    idempotence_distillation(model, old, x).backward()
    assert all(p.grad is None for p in old.parameters())
    assert all(torch.equal(p, b) for p, b in zip(old.parameters(), before))
    # f_cur's label projection never enters L_id (pass 1 reads y_0 = const through it, so only its bias
    # does), while f_cur's head gets gradient through both sides of the MSE
    assert model.head[-1].weight.grad.abs().sum() > 0


def test_pass_two_reads_pass_one_softmax():
    model, x, y = model_and_batch(0)
    seen = []
    model.y_proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    two_pass_ce(model, x, y)
    assert torch.allclose(seen[0], torch.full_like(seen[0], 0.2))
    assert torch.allclose(seen[1], model(x).softmax(-1))


def test_a_model_that_ignores_its_label_is_idempotent():
    """W_y = 0: f(x, y) = f(x, y_0) for every y, so both passes agree and the distillation against an
    identical copy is exactly 0; ER's loss is then plain CE."""
    model, x, y = model_and_batch(0)
    with torch.no_grad():
        model.y_proj[0].weight.zero_()
    ce = F.cross_entropy(model(x), y)
    assert two_pass_ce(model, x, y).item() == pytest.approx(2 * ce.item(), abs=1e-12)
    assert idempotence_distillation(model, copy.deepcopy(model), x).item() == 0.0
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).double()
    xb, yb = x[:3], y[:3]
    assert er_loss(plain, x, y, (xb, yb)).item() == pytest.approx(
        F.cross_entropy(plain(torch.cat([x, xb])), torch.cat([y, yb])).item())
