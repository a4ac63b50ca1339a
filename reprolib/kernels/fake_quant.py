"""Simulated ("fake") INT4 training of linear layers: quantise, dequantise, straight-through gradients.

As in Stable-SPAM's official simulation (github.com/TianjinYellow/StableSPAM,
utils/act_weight_quantization.py: QLinear, A8Linear, and utils/dummy_quant.py), which this follows.
A tensor is flattened (row-major) and cut into groups of G consecutive entries (official: G = 256,
`--weight_group_size`, which QLinear also writes into the activation quantiser), b = 4 bits:

    weight      asymmetric min-max per group, round to nearest:
                s = max(hi - lo, 1e-5) / (2^b - 1),  z = clamp(-round(lo / s), 0, 2^b - 1)
                q = clamp(round(w / s) + z, 0, 2^b - 1),  w_q = (q - z) s         (16 levels)
    activation  symmetric absmax per group with the k = 2 largest |x| kept exact (top-k outliers):
                s = max(max|x| over the rest, 1e-6),  q = clamp(round(x (2^(b-1) - 1) / s), -2^(b-1), 2^(b-1) - 1)
                x_q = q s / (2^(b-1) - 1)                        (15 levels used, plus the k outliers)
    STE         y = x_q W_q^T; backward treats both quantisers as the identity:
                dL/dx = dL/dy W_q,  dL/dW = (dL/dy)^T x_q     (the official A8Linear.backward)

The matmul itself runs in the surrounding precision (bf16 autocast on CUDA): only the values are
4-bit, as in the paper's simulation. Notes: the zero point is clamped to [0, 2^b - 1], so a weight
group that does not straddle 0 saturates (never the case for zero-mean weights); the official
`--act_group_size`, `--act_topk` and `--act_stochastic` flags are parsed but unused on this path,
so activations use G = 256, k = 2 and round to nearest, as here.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _groups(t: Tensor, group_size: int) -> Tensor:
    if t.numel() % group_size:
        raise ValueError(f"{t.numel()} entries of shape {tuple(t.shape)} do not split into groups of {group_size}")
    return t.float().reshape(-1, group_size)


def quantize_weight(w: Tensor, group_size: int = 256, bits: int = 4) -> Tensor:
    """Asymmetric min-max fake quantisation per group (the official _quantize_tensor + dequantise)."""
    g, qmax = _groups(w, group_size), 2 ** bits - 1
    lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
    s = (hi - lo).clamp(min=1e-5) / qmax
    z = (-torch.round(lo / s)).clamp(0, qmax)
    q = (torch.round(g / s) + z).clamp(0, qmax)
    return ((q - z) * s).reshape(w.shape).to(w.dtype)


def quantize_activation(x: Tensor, group_size: int = 256, bits: int = 4, topk: int = 2) -> Tensor:
    """Symmetric absmax fake quantisation per group, the `topk` largest |x| of each group kept exact
    (the official fake_topk_quantize + fake_topk_dequantize, round to nearest)."""
    g, qmax = _groups(x, group_size), 2 ** (bits - 1) - 1
    if topk:
        idx = g.abs().topk(topk, dim=1).indices
        outliers = g.gather(1, idx)
        g = g.scatter(1, idx, 0.0)
    s = g.abs().amax(1, keepdim=True).clamp(min=1e-6)
    q = torch.round(g * (qmax / s)).clamp(-qmax - 1, qmax) * s / qmax
    if topk:
        q = q.scatter(1, idx, outliers)
    return q.reshape(x.shape).to(x.dtype)


def ste(x: Tensor, x_q: Tensor) -> Tensor:
    """Forward x_q exactly (x - x.detach() is 0, also in bf16), backward the identity (straight-through)."""
    return x_q.detach() + (x - x.detach())


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose weight and input are fake-quantised (module docstring); same parameters."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4,
                 group_size: int = 256, act_topk: int = 2, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.bits, self.group_size, self.act_topk = bits, group_size, act_topk

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w_q = ste(w, quantize_weight(w.detach(), self.group_size, self.bits))
        x_q = ste(x, quantize_activation(x.detach(), self.group_size, self.bits, self.act_topk))
        return F.linear(x_q, w_q, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, group_size={self.group_size}, act_topk={self.act_topk}"


def quantize_linears(model: nn.Module, bits: int = 4, group_size: int = 256, act_topk: int = 2,
                     skip=("lm_head", "router")) -> list[str]:
    """Swap every nn.Linear of `model` whose name does not end with one of `skip` (the official code
    quantises only the attention and MLP projections, not the output head) for a FakeQuantLinear
    holding the same Parameter objects, in place. Returns the names of the swapped layers."""
    swapped = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if type(child) is not nn.Linear or full.endswith(tuple(skip)):
                continue
            q = FakeQuantLinear(child.in_features, child.out_features, child.bias is not None, bits, group_size,
                                act_topk, device="meta")
            q.weight, q.bias = child.weight, child.bias
            setattr(parent, name, q)  # same key in _modules: parameter order is unchanged
            swapped.append(full)
    return swapped
