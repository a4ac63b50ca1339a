"""Spiking-RL parts: LIF neurons (snntorch's Leaky up to the first spike, the official recurrence after),
temporal BN (torch's BatchNorm1d for the vanilla EMA, the official Ca-BN update written out in numpy, exact
pooling for the merge and Re-BN), the spiking actor (encoder closed form, BN folding) and TD3's pieces."""
import copy
import math

import numpy as np
import pytest
import torch

from reprolib.layers import TemporalBatchNorm, lif, merge_moments, temporal_moments
from reprolib.models import StackedMLPActor, StackedSNMLP, StackedSpikingActor
from reprolib.rl import ReplayBuffers, evaluate_policy, recalibrate, td3
from reprolib.rl.td3 import _soft_update
from reprolib.envs import BatchedPendulum


def test_lif_matches_snntorch_until_first_spike_and_official_recurrence():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    I = torch.rand(40, 12, 6) * 0.4                         # [B, T, C]
    spk, volt = lif(I, return_volt=True)
    leaky = snn.Leaky(beta=0.75, threshold=0.5, reset_mechanism="zero")
    mem = torch.zeros(40, 6)
    first = torch.full((40, 6), 12)
    for t in range(12):
        s_ref, mem = leaky(I[:, t], mem)
        same = t <= first                                   # up to and including each neuron's first spike
        assert torch.allclose(volt[:, t][same], mem[same], atol=1e-6)
        assert torch.equal(spk[:, t][same], s_ref[same])
        first = torch.where((spk[:, t] > 0) & (first == 12), torch.full_like(first, t), first)
    assert (first < 12).any()                               # spikes happened, so the comparison above had content
    # the official recurrence written out: v_t = 0.75 v_{t-1} (1 - s_{t-1}) + I_t, s_t = [v_t > 0.5]
    v, s = np.zeros((40, 6)), np.zeros((40, 6))
    for t in range(12):
        v = 0.75 * v * (1 - s) + I[:, t].numpy()
        s = (v > 0.5).astype(float)
        np.testing.assert_allclose(volt[:, t].numpy(), v, atol=1e-6)
        np.testing.assert_array_equal(spk[:, t].numpy(), s)


def test_lif_surrogate_gradient_is_the_rectangle():
    v = torch.tensor([[[0.05], [0.2]]], requires_grad=True)   # currents I_1 = 0.05, I_2 = 0.2 of one neuron
    lif(v).sum().backward()
    # v_1 = 0.05, s_1 = 0; v_2 = 0.75 v_1 (1 - s_1) + I_2 = 0.2375; both inside the window |v - 0.5| < 0.5.
    # d(s_1 + s_2)/dI_1 = 1 + d s_2/d v_1 = 1 + 0.75 (1 - s_1) - 0.75 v_1 * 1 = 1.7125 (the reset is not detached)
    assert v.grad[0, 0, 0].item() == pytest.approx(1.7125) and v.grad[0, 1, 0].item() == 1.0
    w = torch.tensor([[[-0.2]]], requires_grad=True)
    lif(w).sum().backward()
    assert w.grad.item() == 0.0                               # outside the window


def test_merge_and_temporal_moments_are_exact_pooling():
    x = torch.randn(3, 7, 5, 4, dtype=torch.float64) * 2 + 1
    mean, var, n = temporal_moments(x)
    assert n == 5
    torch.testing.assert_close(mean, x.mean((1, 2)))
    torch.testing.assert_close(var, x.var((1, 2), unbiased=False))
    a, b = torch.randn(10, dtype=torch.float64), torch.randn(30, dtype=torch.float64) + 3
    m, v = merge_moments(a.mean(), a.var(unbiased=False), 10, b.mean(), b.var(unbiased=False), 30)
    c = torch.cat([a, b])
    torch.testing.assert_close(m, c.mean())
    torch.testing.assert_close(v, c.var(unbiased=False))


def test_vanilla_bn_matches_torch_batchnorm1d():
    C, B, T = 6, 32, 5
    bn = TemporalBatchNorm(1, C, ["ema"])
    ref = torch.nn.BatchNorm1d(C, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        ref.weight.fill_(0.25)
        ref.bias.fill_(0.25)
    for k in range(5):
        x = torch.randn(1, B, T, C) * (k + 1) + k
        y = bn(x, "train")
        y_ref = ref(x[0].reshape(B * T, C)).reshape(B, T, C)
        torch.testing.assert_close(y[0], y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.moving_mean[0], ref.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.moving_var[0], ref.running_var, atol=1e-4, rtol=1e-5)
    ref.eval()
    x = torch.randn(1, B, T, C)
    torch.testing.assert_close(bn(x, "eval")[0], ref(x[0].reshape(B * T, C)).reshape(B, T, C), atol=1e-5, rtol=1e-5)


def test_care_update_matches_the_official_formula():
    C, B, T = 5, 256, 5
    bn = TemporalBatchNorm(2, C, ["care", "none"])
    mu, var, p_mu, p_var = np.zeros(C), np.ones(C), np.zeros(C), np.zeros(C)
    rng = np.random.default_rng(0)
    for k in range(6):
        x = torch.tensor(rng.normal(k * 0.3, 1 + 0.2 * k, size=(2, B, T, C)), dtype=torch.float32)
        y = bn(x, "train")
        xb = x[0].double().numpy().reshape(B * T, C)
        m_b, v_b = xb.mean(0), xb.var(0)
        d_mu, d_v = m_b - mu, v_b - var
        p_mu = 0.8 * p_mu + 0.2 * d_mu ** 2
        p_var = 0.8 * p_var + 0.2 * d_v ** 2
        k_mu, k_v = p_mu / (p_mu + v_b / 255), p_var / (p_var + 2 * v_b ** 2 / 255)
        mu, var = mu + k_mu * d_mu, var + k_v * d_v
        np.testing.assert_allclose(bn.moving_mean[0].numpy(), mu, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_var[0].numpy(), var, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.k_mean[0].numpy(), k_mu, rtol=1e-4, atol=1e-6)
        assert ((bn.k_mean >= 0) & (bn.k_mean <= 1)).all()
        torch.testing.assert_close(y[1], x[1])                  # a "none" member is the identity
        # the training output uses the batch statistics
        np.testing.assert_allclose(y[0].detach().double().numpy().reshape(B * T, C),
                                   0.25 * (xb - m_b) / np.sqrt(v_b + 1e-5) + 0.25, atol=1e-4)
    assert torch.equal(bn.moving_mean[1], torch.zeros(C))       # the "none" member's statistics never move


def test_recalibration_gives_the_exact_pooled_statistics():
    bn = TemporalBatchNorm(2, 3, ["care", "ema"])
    xs = [torch.randn(2, 8, 5, 3) * 3 + 1 for _ in range(4)]
    bn.start_recalibration()
    for x in xs:
        bn(x, "recal")
    mean, var = bn.finish_recalibration()
    allx = torch.cat(xs, 1)
    torch.testing.assert_close(mean, allx.mean((1, 2)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, allx.var((1, 2), unbiased=False), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(bn.moving_mean[0], mean[0])      # written for the CaRe member only
    assert torch.equal(bn.moving_mean[1], torch.zeros(3))


def _actor(modes, dtype=torch.float64):
    a = StackedSpikingActor(3, 1, [torch.Generator().manual_seed(0) for _ in modes], modes, hidden=(16, 16),
                            act_limit=2.0).to(dtype)
    for norm in a.norms:                                        # non-trivial moving statistics
        norm.moving_mean.normal_()
        norm.moving_var.uniform_(0.5, 2.0)
    return a


def test_spiking_actor_encoder_folding_and_batch_independence():
    a = _actor(["none", "ema", "care"])
    # the encoder: activation 1 (observation at a receptive-field centre) spikes at every step
    obs = torch.zeros(3, 1, 3, dtype=torch.float64)
    spikes = a.encode(obs)
    centre = a.pop // 2                                          # mean_range (-1, 1) with 10 neurons: none is at 0
    act = torch.exp(-0.5 * (0 - a.enc_mean[0, 0]) ** 2 / a.enc_std[0, 0] ** 2)
    expected, v = [], torch.zeros_like(act)
    for _ in range(a.T):
        v = v + act
        s = (v > 0.999).double()
        v = v - 0.999 * s
        expected.append(s)
    torch.testing.assert_close(spikes[0, 0, :, :a.pop], torch.stack(expected))
    assert spikes.sum() > 0 and centre >= 0
    obs = torch.randn(3, 50, 3, dtype=torch.float64)
    out = a(obs, "eval")
    assert out.shape == (3, 50, 1) and out.abs().max() <= 2.0
    torch.testing.assert_close(a.folded()(obs, "eval"), out, atol=1e-12, rtol=0)
    alone = torch.cat([a(obs[:, i:i + 1], "eval") for i in range(50)], 1)
    torch.testing.assert_close(alone, out, atol=1e-12, rtol=0)
    # training forwards move the moving statistics of the BN members only
    before = [n.moving_mean.clone() for n in a.norms]
    a(obs, "train")
    assert torch.equal(a.norms[0].moving_mean[0], before[0][0])
    assert not torch.equal(a.norms[0].moving_mean[1], before[0][1])
    assert not torch.equal(a.norms[0].moving_mean[2], before[0][2])


def test_td3_pieces():
    # soft update averages the BN moving statistics with the parameters
    a = _actor(["care", "ema"], torch.float32)
    t = copy.deepcopy(a)
    with torch.no_grad():
        for n in a.norms:
            n.moving_mean.add_(1.0)
        a.dec_bias.add_(1.0)
    _soft_update(t, a, 0.1)
    torch.testing.assert_close(t.norms[0].moving_mean, a.norms[0].moving_mean - 0.9)
    torch.testing.assert_close(t.dec_bias, a.dec_bias - 0.9)
    # replay buffers: per-member samples, shapes
    buf = ReplayBuffers(2, 10, 3, 1)
    for k in range(4):
        buf.add(torch.full((2, 3), float(k)), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 3))
    s, act, r, s2 = buf.sample(5, torch.Generator().manual_seed(0))
    assert s.shape == (2, 5, 3) and set(s[..., 0].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # evaluate_policy of a zero-torque policy equals the environment's own return
    zero = StackedMLPActor(3, 1, [torch.Generator().manual_seed(0)] * 1, hidden=(4,), act_limit=0.0)
    starts = torch.tensor([[0.5, 0.0], [-2.0, 0.3]])
    ret = evaluate_policy(zero, starts, steps=30)
    env = BatchedPendulum(2)
    env.reset(starts)
    total = sum(env.step(torch.zeros(2))[1] for _ in range(30))
    torch.testing.assert_close(ret, total.mean()[None])
    # only random warm-up steps: nothing trains, re-calibration sets the CaRe member's statistics
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    actor = StackedSpikingActor(3, 1, g, ["care", "ema"], hidden=(8, 8), act_limit=2.0)
    w0 = actor.weights[0].detach().clone()
    c1, c2 = (StackedSNMLP([4, 8, 1], g, sn_layers=()) for _ in range(2))
    buffers = td3(actor, c1, c2, torch.tensor([1e-3, 1e-3]), env_steps=40, start_steps=40, batch=8,
                  recal=actor.norms[0].care, recal_every=40, recal_batches=3)
    assert torch.equal(actor.weights[0], w0) and buffers.size == 40
    assert not torch.equal(actor.norms[0].moving_mean[0], torch.zeros_like(actor.norms[0].moving_mean[0]))
    assert torch.equal(actor.norms[0].moving_mean[1], torch.zeros_like(actor.norms[0].moving_mean[1]))
    exact = recalibrate(actor, buffers, 2, 8, commit=torch.tensor([False, False]))
    assert len(exact) == 3 and exact[0][0].shape == (2, 8)


def test_td3_multi_tensor_steps_match_the_per_tensor_ones():
    # _member_step: optim.member_step's arithmetic, bit for bit; _soft_update: one lerp per tensor
    from reprolib.optim.member_step import member_step
    from reprolib.rl.td3 import _member_step
    nets = [StackedSNMLP([4, 8, 1], [torch.Generator().manual_seed(s) for s in (0, 1, 2)], sn_layers=())
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    rates = torch.tensor([1e-3, 3e-3, 0.0])
    opts = [torch.optim.Adam(n.parameters(), lr=1.0) for n in nets]
    for _ in range(3):
        for n in nets:
            n.zero_grad()
            n(torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(7))).pow(2).sum().backward()
        member_step(opts[0], rates)
        ps = list(nets[1].parameters())
        _member_step(opts[1], ps, [rates.view(-1, *[1] * (p.dim() - 1)).expand_as(p).contiguous() for p in ps])
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    a = _actor(["care", "ema"], torch.float32)
    t = copy.deepcopy(a)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p))
        for n in a.norms:
            n.moving_var.mul_(2.0)
    want = [x.lerp(y, 0.005) for x, y in zip(t.parameters(), a.parameters())]
    want_var = t.norms[1].moving_var.lerp(a.norms[1].moving_var, 0.005)
    _soft_update(t, a, 0.005)
    assert all(torch.equal(x, w) for x, w in zip(t.parameters(), want))
    assert torch.equal(t.norms[1].moving_var, want_var)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_td3_graphed_steps_match_the_eager_steps_on_the_gpu():
    """The captured acting, critic and actor parts replay the same arithmetic as the eager calls: 16 updates
    (past the captures' warm-up, so most are replays), Ca-BN, vanilla-BN and no-BN members and a
    re-calibration end with the same weights and moving statistics either way. Short, because spikes are
    thresholds: a last-bit difference from GPU reduction order could flip one and grow over a long run."""
    dev = torch.device("cuda")

    def trained(graphs):
        g = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
        actor = StackedSpikingActor(3, 1, g, ["care", "ema", "none"], hidden=(32, 32), act_limit=2.0, device=dev)
        c1, c2 = (StackedSNMLP([4, 32, 32, 1], g, sn_layers=(), device=dev) for _ in range(2))
        td3(actor, c1, c2, torch.tensor([1e-3, 3e-3, 1e-3], device=dev), env_steps=56, start_steps=40, batch=16,
            recal=actor.norms[0].care, recal_every=48, recal_batches=2,
            generator=torch.Generator(device=dev).manual_seed(0), graphs=graphs)
        return [*actor.parameters(), *c1.parameters(), *(n.moving_mean for n in actor.norms),
                *(n.moving_var for n in actor.norms)]

    eager, graphed = trained(False), trained(True)
    for e, g in zip(eager, graphed):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
