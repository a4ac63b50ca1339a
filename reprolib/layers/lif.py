"""Leaky integrate-and-fire (LIF) neurons with a rectangular surrogate gradient, as in the spiking actors
of PopSAN (Tang et al., CoRL 2020, arXiv 2010.09635) and CaRe-BN (Xu et al., "CaRe-BN: Precise Moving
Statistics for Stabilizing Spiking Neural Networks in Reinforcement Learning", arXiv 2509.23791;
official code github.com/xuzijie32/CaRe-BN, continuous_control/SAN.py `SpikeMLP.neuron_model`):

    v_t = decay * v_{t-1} * (1 - s_{t-1}) + I_t          (leak, hard reset of the leaked part to 0)
    s_t = H(v_t - v_th)                                   (spike: strictly above threshold)
    dS/dv := 1[|v - v_th| < window]                       (rectangular pseudo-gradient)

with v_th = 0.5, decay = 3/4, window = 0.5 and v_0 = s_0 = 0. Currents I [..., T, C] carry the time axis
in dimension -2.
"""
from __future__ import annotations

import torch

NEURON_VTH, NEURON_VDECAY, PSEUDO_GRAD_WINDOW = 0.5, 0.75, 0.5


class RectSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, vth: float, window: float):
        ctx.save_for_backward(v)
        ctx.vth, ctx.window = vth, window
        return (v > vth).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * ((v - ctx.vth).abs() < ctx.window).to(grad.dtype), None, None


def lif(currents: torch.Tensor, vth: float = NEURON_VTH, decay: float = NEURON_VDECAY,
        window: float = PSEUDO_GRAD_WINDOW, return_volt: bool = False):
    """Spikes [..., T, C] of LIF neurons driven by currents [..., T, C] (and the membrane potentials)."""
    volt = torch.zeros_like(currents[..., 0, :])
    spike = torch.zeros_like(volt)
    spikes, volts = [], []
    for t in range(currents.size(-2)):
        volt = volt * decay * (1.0 - spike) + currents[..., t, :]
        spike = RectSpike.apply(volt, vth, window)
        spikes.append(spike)
        volts.append(volt)
    out = torch.stack(spikes, -2)
    return (out, torch.stack(volts, -2)) if return_volt else out
