"""Tests for the data-variation stopping rule (metrics/stopping.py) and the per-layer activation
statistics it reads (metrics/activation_stats.py): closed forms on hand-built activations and traces,
and an independent transcription of the official solver_cbs.py decision loop as the oracle."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from reprolib.metrics import LayerStats, batch_std, patience_stop, round_like_pandas, variation_stop
from reprolib.models import SmallCNN


# ---------------------------------------------------------------- activation statistics

class Emit(nn.Module):
    """Returns a preset tensor per call (ignores its input): hand-built activations."""

    def __init__(self):
        super().__init__()
        self.queue = []

    def forward(self, x):
        return self.queue.pop(0)


class Twice(nn.Module):
    """Calls one module twice per forward pass, as SmallCNN calls its pool and ReLU."""

    def __init__(self):
        super().__init__()
        self.emit = Emit()

    def forward(self, x):
        return self.emit(x) + self.emit(x)


def arange_std(n):   # unbiased s.d. of 0, 1, ..., n - 1: sqrt(n (n + 1) / 12)
    return math.sqrt(n * (n + 1) / 12)


def test_epoch_mean_of_batch_std_closed_form():
    """Batches c_b * arange(n) + k_b: sigma(b) = |c_b| sqrt(n(n+1)/12), whatever the shift k_b and the
    tensor's shape; v(e) is their plain mean over the epoch's batches."""
    net = Twice()
    stats = LayerStats(net, {"first": (net.emit, 0), "second": (net.emit, 1)})
    n, shape = 2 * 3 * 4 * 5, (2, 3, 4, 5)
    scales = [(0.5, -3.0), (2.0, 7.0)]
    scales_b = [(-4.0, 1.0), (1.0, 0.0)]
    for (c1, k1), (c2, k2) in zip(scales, scales_b):
        base = torch.arange(n, dtype=torch.float32).reshape(shape)
        net.emit.queue = [c1 * base + k1, c2 * base + k2]
        net(None)
    v = stats.epoch_means()
    assert v["first"] == pytest.approx((0.5 + 2.0) / 2 * arange_std(n), rel=1e-6)
    assert v["second"] == pytest.approx((4.0 + 1.0) / 2 * arange_std(n), rel=1e-6)
    # the sums restart: a new epoch of one batch
    net.emit.queue = [torch.full(shape, 3.0), torch.arange(n, dtype=torch.float32).reshape(shape)]
    net(None)
    v = stats.epoch_means()
    assert v["first"] == 0.0 and v["second"] == pytest.approx(arange_std(n), rel=1e-6)


def test_eval_mode_forwards_are_not_recorded_and_empty_epoch_raises():
    net = Twice()
    stats = LayerStats(net, {"a": net.emit})
    net.eval()
    net.emit.queue = [torch.ones(4), torch.ones(4)]
    net(None)
    with pytest.raises(RuntimeError, match="no training forward"):
        stats.epoch_means()
    net.train()
    net.emit.queue = [torch.tensor([0.0, 2.0]), torch.ones(2)]
    net(None)
    assert stats.epoch_means() == {"a": pytest.approx(math.sqrt(2.0))}


def test_bf16_activations_are_reduced_in_float32():
    x = (torch.arange(4096, dtype=torch.float32) / 7).to(torch.bfloat16)
    assert batch_std(x).dtype == torch.float32
    assert float(batch_std(x)) == pytest.approx(float(x.float().std()), rel=1e-6)
    assert batch_std(torch.arange(5, dtype=torch.float64)).dtype == torch.float64


def test_smallcnn_block_outputs_and_hooks_leave_outputs_unchanged():
    torch.manual_seed(0)
    model = SmallCNN(1, 10, (4, 6), 12)
    x = torch.randn(8, 1, 28, 28)
    ref = model(x)
    stats = LayerStats(model, {"block1": (model.pool, 0), "block2": (model.pool, 1), "hidden": model.head[2]})
    out = model(x)
    assert torch.equal(out, ref)
    v = stats.epoch_means()
    b1 = model.pool(model.act(model.norm1(model.conv1(x))))
    b2 = model.pool(model.act(model.norm2(model.conv2(b1))))
    h = model.head[2](model.head[1](model.head[0](b2)))
    for name, a in (("block1", b1), ("block2", b2), ("hidden", h)):
        assert v[name] == pytest.approx(float(a.detach().std()), rel=1e-6), name
    stats.remove()
    assert not model._forward_hooks and not model._forward_pre_hooks and not model.pool._forward_hooks
    assert torch.equal(model(x), ref)


def test_bad_points_raise():
    net = Twice()
    with pytest.raises(ValueError):
        LayerStats(net, {})
    with pytest.raises(ValueError):
        LayerStats(net, {"a": (net.emit, -1)})
    stats = LayerStats(net, {"a": (net.emit, 2)})   # a third call that never happens
    net.emit.queue = [torch.ones(2), torch.ones(2)]
    net(None)
    with pytest.raises(RuntimeError):
        stats.epoch_means()


# ---------------------------------------------------------------- the stopping rule

def official_rule(epochs, precision=2):
    """The decision loop of the official solver_cbs.py (CNN branch), transcribed with pandas as it uses
    it: each epoch's per-iteration table is averaged and rounded (df[col].mean().round(decimals=p));
    epochs 0-4 only append their row; from epoch 5 on, if every layer's value equals the previous
    epoch's, the last five rows of the per-epoch table (tail(5)) must show no change between
    consecutive rows; then epoch_limit = epoch_count + 1. epochs: one [iterations, layers] array each."""
    cols = [f"layer{k + 1}" for k in range(epochs[0].shape[1])]
    rows, prev = [], None   # the rows of the official per-epoch table (MeanData/data.csv)
    for epoch_count, iters in enumerate(epochs):
        df = pd.DataFrame(iters, columns=cols)
        cur = [df[c].mean().round(decimals=precision) for c in cols]
        rows.append(cur)
        if epoch_count >= 5 and all(p - c == 0 for p, c in zip(prev, cur)):
            tail = pd.DataFrame(rows, columns=cols).tail(5)
            first, flag = tail.index[0], False
            for i in tail.index:
                if i == first:
                    continue
                if all(tail[c][i] - tail[c][i - 1] == 0 for c in cols):
                    flag = True
                else:
                    flag = False
                    break
            if flag:
                return epoch_count + 1
        prev = cur
    return None


def quantized_walk(rng, epochs, layers, step):
    """Per-epoch values near 0.4 that often repeat at the precision `step`: a random walk with many zero
    steps, plus a jitter too small to cross a rounding boundary."""
    moves = rng.choice([-step, 0.0, 0.0, 0.0, step], size=(epochs, layers))
    jitter = rng.uniform(-0.2 * step, 0.2 * step, size=(epochs, layers))
    return 0.4 + np.cumsum(moves, axis=0) + jitter


@pytest.mark.parametrize("precision", [1, 2, 3])
def test_rule_matches_official_loop_on_random_traces(precision):
    rng = np.random.default_rng(precision)
    fired = 0
    for _ in range(150):
        layers, iters = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        trace = quantized_walk(rng, int(rng.integers(3, 50)), layers, 10.0 ** -precision)
        noise = rng.normal(0, 0.1 * 10.0 ** -precision, size=(len(trace), iters, layers))
        epochs = list(trace[:, None, :] + noise - noise.mean(1, keepdims=True))   # per-iteration values
        ours = variation_stop(np.stack([e.mean(0) for e in epochs]), precision)
        assert ours == official_rule(epochs, precision)
        fired += ours is not None
    assert 15 < fired < 135   # both outcomes are exercised


def test_rule_closed_forms():
    moving = np.linspace(0.10, 0.30, 12)          # changes by ~0.018 per epoch: never equal at 2 decimals
    flat_from_12 = np.concatenate([moving, np.full(20, 0.5)])
    assert variation_stop(flat_from_12) == 12 + 4 + 1    # rows 12..16 identical -> e* = 16, 17 epochs
    assert variation_stop(np.full(20, 0.5)) == 6          # already flat: fires at start, e* = 5
    assert variation_stop(np.full(20, 0.5), window=2, start=1) == 2   # solver_cbs_2Epoch.py
    assert variation_stop(moving) is None
    assert variation_stop(np.full(5, 0.5)) is None        # epochs 0-4 are only recorded
    # every layer must be stable: a second layer still moving delays the stop to its own plateau
    two = np.stack([flat_from_12, np.concatenate([moving, moving[:6], np.full(14, 0.9)])], 1)
    assert variation_stop(two) == 18 + 4 + 1
    # below the precision a change does not count, at the precision it does
    wiggle = np.full(12, 0.441) + np.tile([0.0, 0.003], 6)    # 0.441 / 0.444 -> 0.44
    assert variation_stop(wiggle) == 6
    assert variation_stop(wiggle, precision=3) is None


def test_rule_is_causal_online_equals_post_hoc():
    rng = np.random.default_rng(7)
    trace = quantized_walk(rng, 120, 2, 0.01)
    n = variation_stop(trace)
    assert n is not None
    for k in range(1, len(trace) + 1):
        assert variation_stop(trace[:k]) == (n if k >= n else None)


def test_rounding_is_pandas_half_even():
    x = np.array([0.125, 0.135, 0.445, 0.4449999, 2.675, -0.125, 1.005])
    for d in (1, 2, 3):
        assert np.array_equal(round_like_pandas(x, d), pd.Series(x).round(d).to_numpy())
        assert all(round_like_pandas(v, d) == pd.Series([v]).mean().round(decimals=d) for v in x)
    assert round_like_pandas(0.125, 2) == 0.12 and round_like_pandas(0.135, 2) == 0.14


def test_rule_rejects_bad_parameters():
    with pytest.raises(ValueError):
        variation_stop(np.ones(10), window=1)
    with pytest.raises(ValueError):
        variation_stop(np.ones(10), start=0)


# ---------------------------------------------------------------- validation early stopping

def test_patience_stop_closed_forms():
    val = [5.0, 4.0, 3.0, 3.5, 2.9, 3.0, 3.0, 3.1, 3.2, 3.3]
    assert patience_stop(val, patience=3) == (8, 5)        # best at epoch 5 (2.9), three without a gain
    assert patience_stop(val, patience=10) == (None, 5)    # never stopped inside the trace
    assert patience_stop(val, patience=3, min_delta=0.15) == (6, 3)   # 2.9 is not 0.15 below 3.0
    acc = [-v for v in val]
    assert patience_stop(acc, patience=3, mode="max") == (8, 5)
    assert patience_stop([1.0, float("nan"), float("nan"), 0.5], patience=2) == (3, 1)
    assert patience_stop([2.0, 2.0, 2.0], patience=2) == (3, 1)   # a tie is no improvement
    with pytest.raises(ValueError):
        patience_stop(val, patience=0)
    with pytest.raises(ValueError):
        patience_stop(val, mode="best")
