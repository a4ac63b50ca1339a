"""Linear layers whose three GEMMs run in FP4: the NVFP4 pretraining recipe, emulated on any device.

NVIDIA, "Pretraining Large Language Models with NVFP4", 2025, arXiv 2509.25149 (its training methodology:
the quantised linear layer); reprolib/kernels/fp4.py holds the formats. A linear layer y = x W^T runs
three GEMMs, and every GEMM input is quantised along that GEMM's reduction dimension:

    Fprop   y  = Q(x) Q_w(W)^T                    reduces over in_features
    Dgrad   dx = Q_g(dy) Q_w'(W)                  reduces over out_features: W^T quantised along them
    Wgrad   dW = Q_g(dy^T T) Q(x^T T)^T           reduces over the tokens

Q rounds to nearest even in 1 x 16 blocks. The recipe's parts (FP4Recipe; all on is the paper's recipe):
  1. a few layers stay in high precision (here: the layers fp4_linears leaves alone, `keep`);
  2. T, the 16-point random Hadamard transform, on both Wgrad inputs along the tokens (rht);
  3. Q_w with 16 x 16 blocks (weight_2d): then Q_w'(W) = Q_w(W), the same weights in both passes; with
     1 x 16 blocks Dgrad quantises W^T along out_features, which gives different values;
  4. Q_g, stochastic rounding of the output gradient dy, in Dgrad and Wgrad (stochastic_grad).
Weights and activations always round to nearest even. The GEMMs multiply dequantised float32
operands with autocast off, and accumulate in float32, as FP4 tensor cores do. On a GPU float32 matmuls
run in TF32: the dequantised operands are rounded to 11 significant bits first, against E2M1's 2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..kernels.fp4 import compiled_quantize, quantize, random_hadamard
from .swap import is_linear, swap_modules


@dataclass(frozen=True)
class FP4Recipe:
    """Which parts of the recipe are on (module docstring); the defaults are the paper's recipe."""
    fmt: str = "nvfp4"            # "nvfp4" (16-blocks, E4M3 + FP32 scales) or "mxfp4" (32-blocks, E8M0)
    weight_2d: bool = True        # part 3: square weight blocks, the same quantised W in Fprop and Dgrad
    rht: bool = True              # part 2: random Hadamard transform of both Wgrad inputs
    stochastic_grad: bool = True  # part 4: stochastic rounding of the output gradient
    rht_seed: int = 0             # the fixed random sign vector of the Hadamard transform


def fprop(x: Tensor, w: Tensor, r: FP4Recipe, q=quantize) -> Tensor:
    """y = Q(x) Q_w(W)^T; x (tokens, in), w (out, in)."""
    return q(x, r.fmt) @ q(w, r.fmt, r.weight_2d).t()


def dgrad(dy: Tensor, w: Tensor, r: FP4Recipe, q=quantize) -> Tensor:
    """dx = Q_g(dy) Q_w'(W); with 2D blocks Q_w' is Fprop's Q_w, else W^T quantised along out_features."""
    w_q = q(w, r.fmt, True) if r.weight_2d else q(w.t().contiguous(), r.fmt).t()
    return q(dy.contiguous(), r.fmt, stochastic=r.stochastic_grad) @ w_q


def wgrad(dy: Tensor, x: Tensor, r: FP4Recipe, q=quantize) -> Tensor:
    """dW = Q_g(dy^T T) Q(x^T T)^T, both operands quantised along the tokens (T: RHT, or the identity)."""
    dyt, xt = dy.t().contiguous(), x.t().contiguous()
    if r.rht:
        dyt, xt = random_hadamard(dyt, r.rht_seed), random_hadamard(xt, r.rht_seed)
    return q(dyt, r.fmt, stochastic=r.stochastic_grad) @ q(xt, r.fmt).t()


class _FP4Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, recipe, q):
        x, w = x.detach(), w.detach()   # one requires_grad state for the compiled quantiser
        ctx.save_for_backward(x, w)
        ctx.recipe, ctx.q = recipe, q
        return fprop(x, w, recipe, q)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dx = dgrad(dy, w, ctx.recipe, ctx.q) if ctx.needs_input_grad[0] else None
        dw = wgrad(dy, x, ctx.recipe, ctx.q) if ctx.needs_input_grad[1] else None
        return dx, dw, None, None


class FP4Linear(nn.Linear):
    """nn.Linear whose Fprop, Dgrad and Wgrad GEMMs take FP4 inputs (module docstring). The bias, if any,
    is added in float32. compile=True quantises through torch.compile (for CUDA)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, recipe: FP4Recipe = FP4Recipe(),
                 compile: bool = False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.recipe, self.compile = recipe, compile

    def forward(self, x: Tensor) -> Tensor:
        q = compiled_quantize() if self.compile else quantize
        with torch.autocast(x.device.type, enabled=False):
            y = _FP4Matmul.apply(x.reshape(-1, x.shape[-1]).float(), self.weight.float(), self.recipe, q)
            if self.bias is not None:
                y = y + self.bias.float()
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe}"


def fp4_linears(model: nn.Module, recipe: FP4Recipe = FP4Recipe(), keep=("lm_head",),
                compile: bool = False) -> list[str]:
    """Swap every nn.Linear of `model` for an FP4Linear holding the same Parameter objects, in place, except
    the modules named in `keep` and everything inside them ("lm_head", "blocks.3": the recipe's
    high-precision layers). Returns the names of the swapped layers."""
    kept = lambda name: any(name == k or name.startswith(k + ".") for k in keep)
    def make(full, child):
        layer = FP4Linear(child.in_features, child.out_features, child.bias is not None, recipe, compile, device="meta")
        layer.weight, layer.bias = child.weight, child.bias
        return layer
    return list(swap_modules(model, lambda full, m: is_linear(m) and not kept(full), make))
