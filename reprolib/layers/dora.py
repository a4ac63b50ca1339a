"""DoRA linear layers: PEFT's dense path beside the factored-norm + fused-compose path of
"Scaling DoRA: High-Rank Adaptation via Factored Norms and Fused Kernels", Zelenin and Zhuravlyova
(2026), https://arxiv.org/abs/2603.22276, code https://github.com/sockeye44/dorafactors.
DoRA: Liu et al. (2024), https://arxiv.org/abs/2402.09353.

y = W x + b + [(g - 1) * (W x) + g * s * B A x],  g = m / n,  n_i = ||W_i + s B_i A|| (detached):
the kernels (reprolib/kernels/dora.py) say how each mode computes n and the bracket.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.dora import compose_eager, dora_compose, row_norm_factored
from .lora import lora_init
from .swap import is_linear, swap_modules

MODES = ("peft", "factored", "fused")


class DoRALinear(nn.Module):
    """A frozen nn.Linear with a DoRA adapter: A (r x d_in, Kaiming-uniform) and B (d_out x r, zero),
    as LoRA, and the magnitude m, initialised to the row norms of W (so the layer starts as W).
    mode: "peft"      HF PEFT's DoRA Linear (peft 0.21), line for line: the input cast to the adapter's
                      dtype, B A formed as lora_B(lora_A(I)), the norm of the dense W + s B A in that
                      dtype, the compose as four eager element-wise kernels, the sum cast back to the
                      base output's dtype (the tests check it against peft);
          "factored"  the factored norm (fp32) and the stable compose in eager PyTorch;
          "fused"     the factored norm and the fused compose (a Triton kernel on CUDA)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, mode: str = "fused",
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; valid: {MODES}")
        self.mode = mode
        self.register_buffer("weight", base.weight.detach().clone())
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        self.scale = float(alpha if alpha is not None else r) / r
        B, A = lora_init(self.weight, r, generator)
        self.A, self.B = nn.Parameter(A), nn.Parameter(B)
        self.m = nn.Parameter(torch.linalg.vector_norm(self.weight.float(), dim=1).to(self.weight.dtype))

    def weight_norm(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """n, detached (DoRA Sec. 4.3). peft mode: PEFT's get_lora_weight + get_weight_norm, in `dtype`
        (the input's dtype after PEFT's cast to the adapter dtype; default W's); otherwise the factored norm
        in fp32, autocast off."""
        if self.mode == "peft":
            dtype = dtype or self.weight.dtype
            eye = torch.eye(self.A.shape[1], device=self.A.device, dtype=self.A.dtype)
            lora_weight = F.linear(F.linear(eye, self.A), self.B).T.to(dtype)   # peft: lora_B(lora_A(x_eye)).T
            weight = self.weight.to(dtype)
            total = weight + self.scale * lora_weight.detach()
            return torch.linalg.norm(total, dim=1).to(total.dtype).detach()
        with torch.autocast(self.weight.device.type, enabled=False):
            return row_norm_factored(self.weight, self.A.detach(), self.B.detach(), self.scale)

    def forward(self, x):
        base = F.linear(x, self.weight, self.bias)                          # peft: result = base_layer(x)
        x = x.to(self.A.dtype)                                              # peft: _cast_input_dtype(x, lora_A dtype)
        lora = F.linear(F.linear(x, self.A), self.B)                        # B A x
        n = self.weight_norm(x.dtype)
        g = (self.m / n).view(1, -1)                                        # g = m / n, n detached
        base_nb = base if self.bias is None else base - self.bias           # peft: base_result - bias
        compose = dora_compose if self.mode == "fused" else compose_eager
        return (base + compose(base_nb, lora, g, self.scale)).to(base.dtype)   # peft: result.to(torch_result_dtype)

    def delta_weight(self) -> torch.Tensor:
        """The merged update: diag(g) (W + s B A) - W."""
        ct = torch.promote_types(self.weight.dtype, torch.float32)
        with torch.no_grad():
            n = self.weight_norm(ct).to(ct)
        W = self.weight.to(ct)
        total = W + self.scale * (self.B.to(ct) @ self.A.to(ct))
        return (self.m.to(ct) / n)[:, None] * total - W

    def extra_repr(self):
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, r={self.A.shape[0]}, " \
               f"scale={self.scale:g}, mode={self.mode}"


def dora_linears(model: nn.Module, r: int, mode: str = "fused", *, alpha: float | None = None, select=None,
                 generator: torch.Generator | None = None) -> dict[str, DoRALinear]:
    """Freeze `model` and swap its selected nn.Linear layers (default: all) for DoRALinear, in place.
    Returns {name: layer}."""
    for p in model.parameters():
        p.requires_grad_(False)
    return swap_modules(model, select or (lambda name, m: is_linear(m)),
                        lambda name, lin: DoRALinear(lin, r, alpha, mode, generator))


def set_dora_mode(model: nn.Module, mode: str) -> None:
    """Switch every DoRALinear of `model` to `mode` (the same weights, another computation)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; valid: {MODES}")
    for mod in model.modules():
        if isinstance(mod, DoRALinear):
            mod.mode = mode
