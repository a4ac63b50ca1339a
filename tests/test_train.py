"""The training loop: schedule, evaluation schedule, probes that see the exact step, the
tune-then-repeat protocol, and the figures runner's skip rule."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from reprolib import figures
from reprolib.models import GPT, GPTConfig
from reprolib.optim import make_optimizer
from reprolib.run import source_hash
from reprolib.train import lr_multiplier, stacked_cross_entropy, train, train_lm, tune_then_repeat


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


def recording_run(loss_of_lr, calls):
    """A stand-in for a training run: records (lr, seed) and returns a history with one val loss."""
    def fn(lr, seed):
        calls.append((lr, seed))
        return SimpleNamespace(val_loss=[loss_of_lr(lr)])
    return fn


def test_tune_then_repeat_reuses_the_tuning_run():
    calls = []
    fn = recording_run(lambda lr: abs(math.log10(lr) + 2.5) if lr != 1.0 else float("nan"), calls)

    t = tune_then_repeat(fn, [1e-3, 3e-3, 1.0], [0, 1, 2])
    assert t.best_lr == 3e-3 and len(t.runs) == 3 and t.runs[0] is t.sweep[3e-3]
    assert calls == [(1e-3, 0), (3e-3, 0), (1.0, 0), (3e-3, 1), (3e-3, 2)]  # NaN never wins


def test_tune_then_repeat_extends_an_edge_grid():
    """The optimum (lr 1e-4) lies below the grid: two extensions by the grid's ratio 2 reach it,
    the third is not taken once the best lr is interior; without extend the edge lr wins."""
    calls = []
    fn = recording_run(lambda lr: abs(math.log2(lr / 1e-4)), calls)

    grid = [8e-4, 4e-4, 1.6e-3]
    plain = tune_then_repeat(fn, grid, [0])
    assert plain.best_lr == 4e-4 and list(plain.sweep) == grid
    calls.clear()
    t = tune_then_repeat(fn, grid, [0, 1], extend=5)
    assert t.best_lr == pytest.approx(1e-4) and len(t.sweep) == 6
    assert list(t.sweep) == sorted(t.sweep) and [s for _, s in calls].count(0) == 6
    assert calls[-1] == (t.best_lr, 1)
    assert tune_then_repeat(fn, [1e-3], [0], extend=3).best_lr == 1e-3  # one lr: nothing to extend


def test_figures_skip_rule(tmp_path):
    (tmp_path / "reprolib").mkdir()
    (tmp_path / "reprolib" / "x.py").write_text("a = 1\n")
    nb = tmp_path / "notebooks" / "t" / "s.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text(json.dumps(dict(cells=[dict(cell_type="code", source="x = 1", metadata={}, outputs=[])])))
    assert figures.notebooks(tmp_path) == [nb]
    assert not figures.up_to_date(tmp_path, nb)  # no results yet
    res = tmp_path / "figures" / "s" / "results.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps(dict(scale="full", source_hash=source_hash("s", tmp_path))))
    assert figures.up_to_date(tmp_path, nb)
    (tmp_path / "reprolib" / "x.py").write_text("a = 2\n")
    assert not figures.up_to_date(tmp_path, nb)
    with pytest.raises(SystemExit, match="no notebook"):
        figures.notebooks(tmp_path, "nope")


def test_stacked_cross_entropy_is_each_runs_own_mean():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 7, 4), torch.randint(0, 4, (3, 7))
    per_run = stacked_cross_entropy(logits, labels)
    torch.testing.assert_close(per_run, torch.stack([torch.nn.functional.cross_entropy(logits[r], labels[r])
                                                     for r in range(3)]))
    shared = stacked_cross_entropy(logits, labels[0])   # one label vector for every run
    torch.testing.assert_close(shared[2], torch.nn.functional.cross_entropy(logits[2], labels[0]))
