"""Layer-wise mixed precision for training: every GEMM of a linear layer runs on fake-quantised
operands of the bit width chosen for that layer, and the width can change during training.

SNIP: An Adaptive Mixed Precision Framework for Subbyte Large Language Model Training
(Pan, Yang, Yang, Mahlke, ASPLOS 2026), https://arxiv.org/abs/2602.01410 : a precision plan gives
each linear layer l one precision p, which its three GEMMs of a training step use:

    fprop   Y  = Q_a(X) Q_w(W)^T
    dgrad   dX = Q_g(dY) Q_w(W)
    wgrad   dW = Q_g(dY)^T Q_a(X)

The paper's precisions are BF16, FP8 and FP4 on real tensor cores. Here they are simulated with the
collection's integer fake quantisers (reprolib/kernels/fake_quant.py, the Stable-SPAM simulation):
Q_w = quantize_weight (asymmetric min-max per group), Q_a = quantize_activation (symmetric absmax per
group, the k largest |x| of a group kept exact), and Q_g = quantize_activation applied to the output
gradient. bits = 16 means no quantiser at all: the plain GEMM, in bf16 under autocast.

The cost of a plan is counted, not timed (fake quantisation is slower than BF16, never faster): a
p-bit GEMM costs COST[p] of a BF16 GEMM (FP8 runs at twice and FP4 at four times the BF16 rate on
the GPUs the paper targets), and all three GEMMs of a linear layer have the same 2 N d_in d_out
FLOPs, so a layer's share of a step's GEMM FLOPs is d_in d_out / sum over layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.fake_quant import quantize_activation, quantize_weight
from .swap import is_linear, swap_modules

COST = {16: 1.0, 8: 0.5, 4: 0.25}   # GEMM cost relative to BF16, by bit width


class QuantisedGemms(torch.autograd.Function):
    """The three GEMMs of a linear layer (no bias) on quantised operands (module docstring)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, w: Tensor, bits: int, group_size: int, act_topk: int) -> Tensor:
        x_q = quantize_activation(x.detach(), group_size, bits, act_topk)
        w_q = quantize_weight(w.detach(), group_size, bits)
        ctx.save_for_backward(x_q, w_q)
        ctx.cfg = (bits, group_size, act_topk)
        return F.linear(x_q, w_q)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_y: Tensor):
        x_q, w_q = ctx.saved_tensors
        bits, group_size, act_topk = ctx.cfg
        g_q = quantize_activation(grad_y, group_size, bits, act_topk)
        grad_x = g_q @ w_q.to(g_q.dtype)                                    # dgrad
        grad_w = g_q.flatten(0, -2).t() @ x_q.flatten(0, -2).to(g_q.dtype)  # wgrad
        return grad_x, grad_w, None, None, None


class PrecisionLinear(nn.Linear):
    """nn.Linear (no bias) whose GEMMs run at `bits` in {16, 8, 4}; set `layer.bits` to change it."""

    def __init__(self, in_features: int, out_features: int, bits: int = 16, group_size: int = 256,
                 act_topk: int = 2, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.group_size, self.act_topk = group_size, act_topk
        self.bits = bits

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, bits: int) -> None:
        if bits not in COST:
            raise ValueError(f"bits={bits}; valid: {sorted(COST)}")
        self._bits = int(bits)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == 16:
            return F.linear(x, self.weight)
        return QuantisedGemms.apply(x, self.weight, self.bits, self.group_size, self.act_topk)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, group_size={self.group_size}, act_topk={self.act_topk}"


def precision_linears(model: nn.Module, group_size: int = 256, act_topk: int = 2,
                      skip=("lm_head", "router")) -> dict[str, PrecisionLinear]:
    """Swap every bias-free nn.Linear of `model` whose name does not end with one of `skip` for a
    PrecisionLinear at 16 bits holding the same weight Parameter, in place (the output head stays
    BF16, as in the collection's fake-quantised training). Returns {name: layer} in model order."""
    def make(full, child):
        layer = PrecisionLinear(child.in_features, child.out_features, 16, group_size, act_topk, device="meta")
        layer.weight = child.weight
        return layer
    return swap_modules(model, lambda full, m: is_linear(m) and m.bias is None and not full.endswith(tuple(skip)),
                        make)


def gemm_shares(layers: dict[str, PrecisionLinear]) -> dict[str, float]:
    """Each layer's share of a training step's GEMM FLOPs over `layers` (d_in d_out / sum)."""
    sizes = {n: m.in_features * m.out_features for n, m in layers.items()}
    total = sum(sizes.values())
    return {n: s / total for n, s in sizes.items()}


def set_plan(layers: dict[str, PrecisionLinear], plan: dict[str, int]) -> None:
    """Give each named layer its bit width (every layer must be named)."""
    missing = set(layers) - set(plan)
    if missing:
        raise KeyError(f"the plan has no precision for {sorted(missing)}")
    for name, layer in layers.items():
        layer.bits = plan[name]


def plan_cost(layers: dict[str, PrecisionLinear], plan: dict[str, int]) -> float:
    """GEMM FLOPs of a training step under `plan`, relative to all-BF16: sum_l share_l COST[p_l]."""
    shares = gemm_shares(layers)
    return sum(shares[n] * COST[plan[n]] for n in layers)
