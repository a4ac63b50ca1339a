"""The training loop: schedule, evaluation schedule, probes that see the exact step,
and the selection split the tuning protocol scores (Run.tune is tested in test_run_harness.py)."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from reprolib.models import GPT, GPTConfig
from reprolib.optim import make_optimizer
from reprolib.train import lr_multiplier, stacked_cross_entropy, train, train_lm


def test_lr_multiplier_shapes():
    assert lr_multiplier(0, 100, warmup=10) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, warmup=10) == pytest.approx(1.0)
    assert lr_multiplier(10, 100, warmup=10) == pytest.approx(1.0)
    assert lr_multiplier(55, 100, warmup=10, kind="cosine") == pytest.approx(0.5)
    assert lr_multiplier(55, 100, warmup=10, kind="linear", final=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(99, 100, kind="constant") == 1.0
    with pytest.raises(ValueError, match="valid"):
        lr_multiplier(0, 10, kind="step")


def test_train_linear_regression_and_probe_sees_the_step():
    torch.manual_seed(0)
    w_true = torch.randn(5, 1)
    X = torch.randn(256, 5)
    Y = X @ w_true
    model = torch.nn.Linear(5, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def probe(step, m, before, batch):
        delta = m.weight.detach() - before[0]
        seen.append(step)
        return dict(step_norm=float(delta.norm()))

    loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
    hist = train(model, opt, lambda step: (X, Y), loss_fn, steps=40, evaluate=lambda m: loss_fn(m, (X, Y)),
                 eval_every=10, schedule="constant", probe=probe, probe_every=20, progress=False)
    assert hist.steps == [0, 10, 20, 30, 40] and seen == [20, 40]
    assert hist.val_loss[-1] < 1e-2 * hist.val_loss[0]
    assert all(p["step_norm"] > 0 for p in hist.probes) and math.isfinite(hist.step_time_s)
    assert hist.train_loss[0] != hist.train_loss[0]  # NaN before any step: nothing to average yet


def test_train_lm_counts_tokens():
    torch.manual_seed(0)
    tokens = torch.randint(0, 16, (2000,))
    model = GPT(GPTConfig(vocab_size=16, seq_len=8, n_layer=1, d_model=16, n_head=2))
    opt = make_optimizer("muon", model, lr=0.02, adamw_lr=3e-3)
    hist = train_lm(model, opt, tokens, tokens[:400], steps=6, batch_size=4, seq_len=8,
                    generator=torch.Generator().manual_seed(0), eval_every=3, eval_batches=2, progress=False)
    assert hist.tokens == [0, 96, 192]


def test_train_lm_scores_the_selection_split_once_at_the_end():
    torch.manual_seed(0)
    tokens = torch.randint(0, 16, (3000,))
    model = GPT(GPTConfig(vocab_size=16, seq_len=8, n_layer=1, d_model=16, n_head=2))
    opt = make_optimizer("adamw", model, lr=3e-3)
    kw = dict(steps=4, batch_size=4, seq_len=8, eval_every=2, eval_batches=2, progress=False)
    hist = train_lm(model, opt, tokens[:2000], tokens[2000:2400], select_tokens=tokens[2400:],
                    generator=torch.Generator().manual_seed(0), **kw)
    from reprolib.train import evaluate_lm
    from reprolib.data import lm_eval_batches
    with torch.no_grad():
        expected = evaluate_lm(model.eval(), lm_eval_batches(tokens[2400:], 4, 8, 2))
    assert hist.select_loss == pytest.approx(expected, rel=1e-5)
    assert hist.select_loss != pytest.approx(hist.val_loss[-1])        # a different split from the reported one
    plain = train_lm(GPT(GPTConfig(vocab_size=16, seq_len=8, n_layer=1, d_model=16, n_head=2)), opt, tokens[:2000],
                     tokens[2000:2400], generator=torch.Generator().manual_seed(0), **kw)
    assert plain.select_loss is None
