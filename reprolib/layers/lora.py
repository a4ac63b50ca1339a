"""Low-rank adapters on a frozen linear layer: LoRA, LoRA-XS and LoRA-SB initialisations.

LoRA-SB: "Initialization using Update Approximation is a Silver Bullet for Extremely Efficient
Low-Rank Fine-Tuning", Ponkshe, Singhal, Gorbunov, Tumanov, Horvath, Vepakomma (2024),
https://arxiv.org/abs/2411.19557, code https://github.com/CERT-Lab/lora-sb.
LoRA: Hu et al. (2021), https://arxiv.org/abs/2106.09685. LoRA-XS: Balazy et al. (2024),
https://arxiv.org/abs/2405.17604.

Every variant computes y = x W0^T + s x (B R A)^T with W0 frozen:
  LoRA     R = I (absent), A (r x n) and B (m x r) trained, s = alpha / r, B = 0 at init, so the
           update starts at zero.
  LoRA-XS  B (m x r), A (r x n) frozen from the truncated SVD of W0 (B = U_r, A = S_r V_r^T), only
           the r x r matrix R trained, R ~ N(0, 1e-5^2).
  LoRA-SB  the LoRA-XS architecture initialised from an approximation of the first full
           fine-tuning step: dW ~ -eta_1 sign(sum_i grad_W L_i) (Adam's first step is lr times the
           sign of the gradient), B = U_r, R = S_r / s, A = V_r^T of its truncated SVD (Sec. 4), so
           s B R A is the best rank-r approximation of dW (Eckart-Young). W0 is not offset: the model
           starts from W0 + dW_r, the approximated first step already taken, as in the official code.
"""
import math

import torch
from torch import nn

from .swap import is_linear, swap_modules


class LoRALinear(nn.Module):
    """W0 (frozen) plus s B R A. With R None (LoRA) A and B are trained; otherwise (LoRA-XS / SB)
    B and A are frozen buffers and only R is a parameter."""

    def __init__(self, base: nn.Linear, B: torch.Tensor, A: torch.Tensor, R: torch.Tensor | None = None,
                 scale: float = 1.0):
        super().__init__()
        self.register_buffer("weight", base.weight.detach().clone())
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        self.scale = float(scale)
        if R is None:
            self.A, self.B = nn.Parameter(A.clone()), nn.Parameter(B.clone())
            self.R = None
        else:
            self.register_buffer("A", A.clone())
            self.register_buffer("B", B.clone())
            self.R = nn.Parameter(R.clone())

    def forward(self, x):
        y = nn.functional.linear(x, self.weight, self.bias)
        h = x @ self.A.t()                         # r features: A x
        if self.R is not None:
            h = h @ self.R.t()                     # R A x
        return y + self.scale * (h @ self.B.t())   # + s B R A x

    def delta_weight(self) -> torch.Tensor:
        """The adapter's update to W0: s B R A (s B A for LoRA)."""
        BA = self.B if self.R is None else self.B @ self.R
        return self.scale * BA @ self.A

    def extra_repr(self):
        r = self.A.shape[0]
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, r={r}, scale={self.scale:g}, " \
               f"{'LoRA' if self.R is None else 'R only'}"


def lora_init(W0: torch.Tensor, r: int, generator: torch.Generator | None = None):
    """LoRA (peft's default): A Kaiming-uniform (a = sqrt(5), as nn.Linear), B = 0 -> (B, A)."""
    m, n = W0.shape
    bound = 1.0 / math.sqrt(n)  # kaiming_uniform_ with a = sqrt(5): gain sqrt(1/3), bound sqrt(3) gain / sqrt(n)
    A = (torch.rand(r, n, generator=generator, device=W0.device) * 2 - 1) * bound
    return W0.new_zeros(m, r), A.to(W0.dtype)


def lora_xs_init(W0: torch.Tensor, r: int, generator: torch.Generator | None = None, std: float = 1e-5):
    """LoRA-XS (official find_and_initialize): B = U_r, A = S_r V_r^T of W0, R ~ N(0, std^2) -> (B, R, A)."""
    U, S, Vh = torch.linalg.svd(W0.float(), full_matrices=False)
    R = torch.randn(r, r, generator=generator, device=W0.device) * std
    return U[:, :r].to(W0.dtype), R.to(W0.dtype), (S[:r, None] * Vh[:r]).to(W0.dtype)


def update_approximation(grad_sum: torch.Tensor, lr: float) -> torch.Tensor:
    """The first full fine-tuning step, approximated as Adam's: dW = -eta_1 sign(sum_i grad_i)
    (Adam's first update has magnitude lr in every coordinate)."""
    return -lr * torch.sign(grad_sum)


def lora_sb_init(grad_sum: torch.Tensor, r: int, lr: float, scale: float = 1.0):
    """LoRA-SB: dW = U S V^T (update_approximation); B = U_r, R = S_r / s, A = V_r^T -> (B, R, A), so
    that s B R A is dW's best rank-r approximation. Exact SVD (the official code's svd_lowrank with 10
    iterations approximates the same factors)."""
    dW = update_approximation(grad_sum.float(), lr)
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    dtype = grad_sum.dtype
    return U[:, :r].to(dtype), (torch.diag(S[:r]) / scale).to(dtype), Vh[:r].to(dtype)


def accumulate_grads(model: nn.Module, batches, loss_fn, select=None) -> dict[str, torch.Tensor]:
    """sum_i grad_W L_i over the examples of `batches` for every selected nn.Linear weight:
    loss_fn(model, batch) is a batch's mean loss, so each batch adds its mean times its size. The
    model's gradients are left as they were found (zeroed)."""
    select = select or (lambda name, m: is_linear(m))
    named = {n: m.weight for n, m in model.named_modules() if select(n, m)}
    sums = {n: torch.zeros_like(w) for n, w in named.items()}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        size = batch[0].shape[0]
        (loss_fn(model, batch) * size).backward()
        for n, w in named.items():
            sums[n] += w.grad
    model.zero_grad(set_to_none=True)
    return sums


def lora_linears(model: nn.Module, method: str, r: int, *, alpha: float | None = None, select=None,
                 grads: dict[str, torch.Tensor] | None = None, sb_lr: float | None = None,
                 generator: torch.Generator | None = None) -> dict[str, LoRALinear]:
    """Freeze `model` and swap its selected nn.Linear layers (default: all) for LoRALinear, in place.
    method "lora", "lora_xs" or "lora_sb" (the last needs grads from accumulate_grads and the step size
    sb_lr); scale s = alpha / r, alpha default r (s = 1), as the official code for all three.
    Returns {name: layer}."""
    if method not in ("lora", "lora_xs", "lora_sb"):
        raise ValueError(f"method {method!r}; valid: lora, lora_xs, lora_sb")
    if method == "lora_sb" and (grads is None or sb_lr is None):
        raise ValueError("lora_sb needs grads (accumulate_grads) and sb_lr")
    alpha = alpha if alpha is not None else r
    scale = alpha / r
    for p in model.parameters():
        p.requires_grad_(False)

    def make(name, lin):
        W0 = lin.weight.detach()
        if method == "lora":
            B, A = lora_init(W0, r, generator)
            return LoRALinear(lin, B, A, None, scale)
        B, R, A = lora_xs_init(W0, r, generator) if method == "lora_xs" else lora_sb_init(grads[name], r, sb_lr, scale)
        return LoRALinear(lin, B, A, R, scale)

    return swap_modules(model, select or (lambda name, m: is_linear(m)), make)


def trainable_count(model: nn.Module) -> int:
    """Number of trainable (requires_grad) parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
