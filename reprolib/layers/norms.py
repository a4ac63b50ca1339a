"""Normalization layers that replace a built model's RMSNorm in place: SeeDNorm and DyT.

SeeDNorm: Wenrui Cai, Defa Zhu, Qingjie Liu, Qiyang Min, "SeeDNorm: Self-Rescaled Dynamic
Normalization", ICLR 2026, arXiv 2510.22777 (no official code is public). RMSNorm's static gain
gamma becomes input-dependent:

    SeeDNorm(x) = [ sigma(x . beta^T) * alpha + gamma ] (.) x / RMS(x),   RMS(x) = sqrt(mean_i x_i^2 + eps)

with sigma = tanh, alpha, beta, gamma in R^D, and x . beta^T one scalar per token. x / RMS(x) is
unchanged by a rescaling x -> kx, so only sigma(k x . beta^T) carries the input's norm into the
output; the 1/RMS(x) factor keeps RMSNorm's gradient scaling (a k-times larger input gets a
k-times smaller gradient once tanh saturates). Initialisation (the paper's): gamma = 1, beta = 0,
alpha = 1 (its language-model setting), so SeeDNorm starts as RMSNorm exactly. The paper puts
weight decay on alpha and beta: `SeeDNorm.decayed` names them for optim.weight_decay_groups.
Multi-head form (the paper's remedy for Theorem 3.2, the variance of x . beta^T growing with D):
split x and beta into `heads` contiguous slices of D / heads, one tanh(x_h . beta_h) per slice,
each broadcast over its slice's channels of alpha. The paper uses it for vision models; heads=1 is
the equation above. Its vision-only extras (dropout on the dynamic term, alpha . beta^T divided by
D) are not implemented.

DyT: Jiachen Zhu, Xinlei Chen, Kaiming He, Yann LeCun, Zhuang Liu, "Transformers without
Normalization", CVPR 2025, arXiv 2503.10622; official code https://github.com/jiachenzhu/DyT
(dynamic_tanh.py; other_tasks/LLaMA for language models):

    DyT(x) = gamma (.) tanh(alpha x) + b,   alpha a learnable scalar (init alpha0), gamma = 1, b = 0

Its language-model recipe (the official LLaMA code) drops the shift b, starts alpha higher in the
norms before attention than in those before the MLP and at the output, and multiplies the token
embedding by a learnable scalar initialised at sqrt(d): dyt_norms(shift=False, embed_scale=True).

seednorm_norms and dyt_norms swap a built model's norm layers in place, keeping each layer's gain
Parameter, as layers.sigma_reparam_linears does for linear layers.
"""
import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from .swap import swap_modules


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class SeeDNorm(nn.Module):
    """SeeDNorm over the last dimension (module docstring). eps=None uses the input dtype's machine
    epsilon, as torch.nn.RMSNorm does, so that beta = 0 reproduces an nn.RMSNorm exactly."""

    decayed = ("alpha", "beta")   # the paper applies weight decay to these two

    def __init__(self, dim: int, heads: int = 1, eps: float | None = None, alpha_init: float = 1.0,
                 device=None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"SeeDNorm: dim={dim} does not split into heads={heads}")
        self.dim, self.heads, self.eps, self.alpha_init = dim, heads, eps, alpha_init
        self.gamma = nn.Parameter(torch.ones(dim, device=device))
        self.alpha = nn.Parameter(torch.full((dim,), float(alpha_init), device=device))
        self.beta = nn.Parameter(torch.zeros(dim, device=device))

    def dynamic_scale(self, x: Tensor) -> Tensor:
        """sigma(x . beta^T) per head, shape (..., heads), in float32 (float64 for float64 input).
        Elementwise product and sum rather than a matmul, so that autocast does not round x and beta
        to bf16."""
        dtype = _compute_dtype(x)
        xh = rearrange(x.to(dtype), "... (h d) -> ... h d", h=self.heads)
        bh = rearrange(self.beta.to(dtype), "(h d) -> h d", h=self.heads)
        return torch.tanh(reduce(xh * bh, "... h d -> ... h", "sum"))              # sigma(x . beta^T)

    def forward(self, x: Tensor) -> Tensor:
        dtype = _compute_dtype(x)
        x_hat = F.rms_norm(x.to(dtype), (self.dim,), eps=self.eps)                 # x / RMS(x)
        s = repeat(self.dynamic_scale(x), "... h -> ... (h d)", d=self.dim // self.heads)
        scale = s * self.alpha.to(dtype) + self.gamma.to(dtype)                    # sigma(x beta^T) alpha + gamma
        return (scale * x_hat).type_as(x)

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.heads}, eps={self.eps}, alpha_init={self.alpha_init}"


class DyT(nn.Module):
    """Dynamic Tanh: gamma * tanh(alpha * x) (+ b with shift=True), alpha one learnable scalar."""

    def __init__(self, dim: int, alpha_init: float = 0.5, shift: bool = True, device=None):
        super().__init__()
        self.dim, self.alpha_init = dim, alpha_init
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init), device=device))
        self.gamma = nn.Parameter(torch.ones(dim, device=device))
        self.b = nn.Parameter(torch.zeros(dim, device=device)) if shift else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.gamma * torch.tanh(self.alpha * x)                                # gamma tanh(alpha x)
        return y + self.b if self.b is not None else y

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init}, shift={self.b is not None}"


class ScaledEmbedding(nn.Embedding):
    """nn.Embedding whose output is multiplied by one learnable scalar (DyT's language-model recipe
    initialises it at sqrt(embedding_dim))."""

    def __init__(self, num_embeddings: int, embedding_dim: int, scale_init: float | None = None, device=None):
        super().__init__(num_embeddings, embedding_dim, device=device)
        init = math.sqrt(embedding_dim) if scale_init is None else scale_init
        self.scale = nn.Parameter(torch.full((1,), float(init), device=device))

    def forward(self, idx: Tensor) -> Tensor:
        return super().forward(idx) * self.scale


def _swap(model: nn.Module, kinds: tuple, make, skip=()) -> list[str]:
    """Replace every module of type in `kinds` (exact type) whose name does not end with one of `skip`
    by make(full_name, module), in place; return the replaced names."""
    return list(swap_modules(model, lambda full, m: type(m) in kinds and not full.endswith(tuple(skip)), make))


def _norm_dim(norm: nn.Module) -> int:
    shape = norm.normalized_shape
    if len(shape) != 1:
        raise ValueError(f"only norms over the last dimension are swapped; got normalized_shape={shape}")
    return shape[0]


def seednorm_norms(model: nn.Module, heads: int = 1, alpha_init: float = 1.0, skip=()) -> list[str]:
    """Swap every nn.RMSNorm of `model` (names ending with one of `skip` excepted) for a SeeDNorm with
    the same eps whose gamma is the RMSNorm's weight Parameter, in place. With beta = 0 at
    initialisation the model computes what it computed before. Returns the swapped names."""
    def make(_, norm):
        layer = SeeDNorm(_norm_dim(norm), heads, norm.eps, alpha_init, device=_device(norm))
        if norm.weight is not None:
            layer.gamma = norm.weight
        return layer
    return _swap(model, (nn.RMSNorm,), make, skip)


def dyt_norms(model: nn.Module, alpha_init: float = 0.2, attn_alpha_init: float = 0.8, attn_suffix: str = "norm1",
              shift: bool = False, embed_scale: bool = True, skip=()) -> list[str]:
    """Swap every nn.RMSNorm and nn.LayerNorm of `model` for DyT, in place, with the official LLaMA
    recipe by default: alpha0 = attn_alpha_init in the norms whose names end with `attn_suffix` (the
    GPT's pre-attention norm), alpha_init elsewhere; no shift; each nn.Embedding becomes a
    ScaledEmbedding holding the same weight, its scale starting at sqrt(d). DyT's gamma is the old
    norm's weight Parameter (ones), and b its bias where it has one. Returns the swapped names
    (norms, then embeddings)."""
    def make(name, norm):
        a0 = attn_alpha_init if name.endswith(attn_suffix) else alpha_init
        layer = DyT(_norm_dim(norm), a0, shift, device=_device(norm))
        if norm.weight is not None:
            layer.gamma = norm.weight
        if shift and getattr(norm, "bias", None) is not None:
            layer.b = norm.bias
        return layer

    def scaled(_, emb):
        layer = ScaledEmbedding(emb.num_embeddings, emb.embedding_dim, device=emb.weight.device)
        layer.weight = emb.weight
        return layer

    swapped = _swap(model, (nn.RMSNorm, nn.LayerNorm), make, skip)
    return swapped + (_swap(model, (nn.Embedding,), scaled, skip) if embed_scale else [])


def _device(norm: nn.Module):
    p = next(norm.parameters(), None)
    return p.device if p is not None else None
