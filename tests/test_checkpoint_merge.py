"""Metrics-weighted averaging (reprolib.layers.checkpoint_merge) against closed forms."""
import pytest
import torch
from torch import nn

from reprolib.layers import (adapter_state, load_adapter_state, lora_linears, mwa_metric, mwa_weights,
                             weighted_average)


def _states(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x.A": torch.randn(3, 5, generator=g), "x.B": torch.randn(4, 3, generator=g)} for _ in range(n)]


def test_weights_sum_to_one_and_are_nonnegative():
    for p in [0, 0.5, 1, 2, 10, 1000]:
        w = mwa_weights(mwa_metric("loss", losses=[2.0, 1.7, 1.6, 1.55]), p)
        assert all(x >= 0 for x in w)
        assert sum(w) == pytest.approx(1.0, abs=1e-12)


def test_closed_form_power_weights():
    L = [2.0, 1.5, 1.25]
    w = mwa_weights(mwa_metric("loss", losses=L), 2.0)
    z = sum(l ** -2 for l in L)
    assert w == pytest.approx([l ** -2 / z for l in L], rel=1e-12)
    w = mwa_weights(mwa_metric("step", steps=[10, 20, 30]), 1.0)
    assert w == pytest.approx([1 / 6, 2 / 6, 3 / 6], rel=1e-12)


def test_p_zero_is_uniform_and_large_p_concentrates_on_best():
    assert mwa_weights([3.0, 1.0, 2.0], 0) == pytest.approx([1 / 3] * 3)
    w = mwa_weights(mwa_metric("loss", losses=[2.0, 1.5, 1.6]), 500)
    assert w[1] == pytest.approx(1.0, abs=1e-9)
    w_prev = None
    for p in [0, 1, 2, 5, 10]:  # the best checkpoint's weight grows with p
        w = mwa_weights(mwa_metric("step", steps=[1, 2, 3, 4]), p)
        if w_prev is not None:
            assert w[-1] > w_prev
        w_prev = w[-1]


def test_uniform_weights_give_plain_average():
    s = _states()
    m = weighted_average(s, [0.25] * 4)
    for k in s[0]:
        assert torch.allclose(m[k], torch.stack([x[k] for x in s]).mean(0), atol=1e-6)


def test_one_hot_weight_gives_that_checkpoint():
    s = _states()
    m = weighted_average(s, [0.0, 0.0, 1.0, 0.0])
    for k in s[0]:
        assert torch.equal(m[k], s[2][k])


def test_weighted_average_rejects_unnormalised_weights():
    with pytest.raises(ValueError):
        weighted_average(_states(2), [0.5, 0.6])
    with pytest.raises(ValueError):
        mwa_weights([1.0, 2.0], -1.0)


def test_state_roundtrip_through_lora_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))
    ad = lora_linears(net, "lora", 2)
    x = torch.randn(5, 6)
    s0 = adapter_state(ad)
    with torch.no_grad():
        for a in ad.values():
            a.B.normal_()
    s1 = adapter_state(ad)
    y1 = net(x)
    load_adapter_state(ad, s0)
    assert not torch.allclose(net(x), y1)
    load_adapter_state(ad, weighted_average([s0, s1], [0.0, 1.0]))  # one-hot: the second checkpoint
    assert torch.equal(net(x), y1)
