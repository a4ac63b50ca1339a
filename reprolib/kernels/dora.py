"""DoRA's two hot paths: the row norm of W + sBA without the dense product, and the compose in one pass.

"Scaling DoRA: High-Rank Adaptation via Factored Norms and Fused Kernels", Alexandra Zelenin and
Alexandra Zhuravlyova (2026), https://arxiv.org/abs/2603.22276, code https://github.com/sockeye44/dorafactors.
DoRA: Liu et al. (2024), https://arxiv.org/abs/2402.09353.

DoRA in PEFT's form (the paper's Eq. 1, written as PEFT computes it): with W (d_out x d_in) frozen, A (r x d_in),
B (d_out x r), scale s, magnitude m (d_out),

    y = W x + [ (g - 1) * (W x) + g * s * B A x ],     g = m / n,     n_i = ||W_i + s B_i A||_2,

where n is detached from the graph (DoRA Sec. 4.3). The bracket is the "compose" this module fuses.

Factored norm (the paper's first contribution), never forming the d_out x d_in product B A:

    n_i^2 = ||W_i||^2  +  2 s <B_i, (W A^T)_i>  +  s^2 <B_i, (B (A A^T))_i>
            base          cross (U = W A^T, d_out x r)   Gram (G = A A^T, r x r)

U and G are accumulated over chunks of d_in in fp32, so the transient memory is O(d_out r + r^2)
plus one fp32 chunk of W; n^2 is clamped at 0 before the square root (cancellation can make it
slightly negative when W + sBA has a row near zero).

Stable compose: `(g - 1) * base + g * (s * lora)`, with g - 1 formed in fp32, instead of the
algebraically equal `g * (base + s * lora) - base`, which subtracts two nearly equal bf16 numbers
when g is close to 1 (where trained magnitudes sit). The fused kernel reads base, lora and g once and
writes the result once (plus, when m is trained, inner = base + s * lora for the backward), where the
eager expression runs four element-wise kernels. Backward, from out = g * inner - base:
d_lora = g s d_out, d_base = (g - 1) d_out, d_g = sum over rows of inner * d_out.

The Triton kernels run on CUDA only; everywhere else the same autograd function runs the same
formulas in PyTorch (the reference the CUDA tests compare the kernels with).
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:   # CPU machines: the PyTorch formulas below stand in
    triton = None


_enabled = {"triton": True}


def use_triton(enabled: bool) -> None:
    """Switch the Triton kernels on or off; off, the PyTorch formulas run on every device (a notebook turns them
    off when the kernel fails to compile, rather than losing the run)."""
    _enabled["triton"] = bool(enabled)


def triton_ready(device: torch.device | str) -> bool:
    """True when the fused compose runs as a Triton kernel on this device."""
    return triton is not None and _enabled["triton"] and torch.device(device).type == "cuda"


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)   # bf16/fp16/fp32 -> fp32, fp64 stays


# ---- the norm ---------------------------------------------------------------------------------------
def row_norm_dense(W: Tensor, A: Tensor, B: Tensor, scale: float) -> Tensor:
    """||W_i + s B_i A||_2 with the dense d_out x d_in sum formed (the reference), in fp32 or fp64."""
    ct = _compute_dtype(W.dtype)
    return torch.linalg.vector_norm(W.to(ct) + scale * (B.to(ct) @ A.to(ct)), dim=1)


@torch.no_grad()
def row_norm_factored(W: Tensor, A: Tensor, B: Tensor, scale: float, chunk: int = 512) -> Tensor:
    """||W_i + s B_i A||_2 by the factored form (module docstring), accumulated in fp32 (fp64 for fp64
    inputs) over chunks of `chunk` input columns; never forms B A. Returns the norm, detached."""
    ct = _compute_dtype(W.dtype)
    d_out, d_in = W.shape
    r = A.shape[0]
    w_sq = torch.zeros(d_out, device=W.device, dtype=ct)
    U = torch.zeros(d_out, r, device=W.device, dtype=ct)   # W A^T
    G = torch.zeros(r, r, device=W.device, dtype=ct)       # A A^T
    for c in range(0, d_in, chunk):
        Wc, Ac = W[:, c:c + chunk].to(ct), A[:, c:c + chunk].to(ct)
        w_sq += torch.linalg.vector_norm(Wc, dim=1) ** 2      # base term ||W_i||^2
        U.addmm_(Wc, Ac.T)
        G.addmm_(Ac, Ac.T)
    Bc = B.to(ct)
    cross = (Bc * U).sum(dim=1)                                # <B_i, (W A^T)_i>
    gram = ((Bc @ G) * Bc).sum(dim=1)                          # <B_i, (B A A^T)_i> = ||B_i A||^2
    n_sq = w_sq + (2.0 * scale) * cross + (scale * scale) * gram
    return n_sq.clamp_min(0).sqrt()                            # clamp: n^2 >= 0 under rounding


# ---- the compose ------------------------------------------------------------------------------------
def compose_eager(base: Tensor, lora: Tensor, g: Tensor, scale: float) -> Tensor:
    """PEFT's line (DoraLinearLayer.forward): four element-wise kernels, in the operands' dtypes."""
    return (g - 1) * base + g * lora * scale


def compose_naive(base: Tensor, lora: Tensor, g: Tensor, scale: float) -> Tensor:
    """The algebraically equal form g * (base + s lora) - base: it cancels when g is near 1."""
    return g * (base + scale * lora) - base


def compose_reference(base: Tensor, lora: Tensor, g: Tensor, scale: float) -> Tensor:
    """The stable form in fp32 (fp64 for fp64 inputs), rounded once to base's dtype: what the kernel computes."""
    ct = _compute_dtype(base.dtype)
    g = g.to(ct)
    return ((g - 1) * base.to(ct) + g * (scale * lora.to(ct))).to(base.dtype)


if triton is not None:
    @triton.jit
    def _compose_fwd_kernel(base_ptr, lora_ptr, g_ptr, out_ptr, inner_ptr, scale, T, D,
                            WRITE_INNER: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = (rows[:, None] < T) & (cols[None, :] < D)
        offs = rows[:, None].to(tl.int64) * D + cols[None, :]
        base = tl.load(base_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        lora = tl.load(lora_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + cols, mask=cols < D, other=1.0).to(tl.float32)[None, :]
        slora = scale * lora
        out = (g - 1.0) * base + g * slora                     # stable form, g - 1 in fp32
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
        if WRITE_INNER:                                        # inner = base + s lora, for d_g
            tl.store(inner_ptr + offs, (base + slora).to(inner_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _compose_bwd_kernel(d_ptr, inner_ptr, g_ptr, dbase_ptr, dlora_ptr, dg_part_ptr, scale, T, D,
                            NEED_G: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_t = tl.program_id(0)
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = (rows[:, None] < T) & (cols[None, :] < D)
        offs = rows[:, None].to(tl.int64) * D + cols[None, :]
        d = tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + cols, mask=cols < D, other=1.0).to(tl.float32)[None, :]
        tl.store(dlora_ptr + offs, (g * scale * d).to(dlora_ptr.dtype.element_ty), mask=mask)
        tl.store(dbase_ptr + offs, ((g - 1.0) * d).to(dbase_ptr.dtype.element_ty), mask=mask)
        if NEED_G:                                             # per-tile column sums of inner * d_out
            inner = tl.load(inner_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(dg_part_ptr + pid_t * D + cols, tl.sum(inner * d, axis=0), mask=cols < D)

_BLOCK_T, _BLOCK_D = 32, 128


_KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)   # float64 stays with the PyTorch formulas


def _on_triton(x: Tensor) -> bool:   # called per launch: attribute checks only
    return triton is not None and _enabled["triton"] and x.is_cuda and x.dtype in _KERNEL_DTYPES


def _grid(T, D):
    return (triton.cdiv(T, _BLOCK_T), triton.cdiv(D, _BLOCK_D))


def _forward(base2, lora2, g, scale, need_inner):
    """(out, inner or None) for [T, D] operands and g [D] in fp32."""
    if _on_triton(base2):
        T, D = base2.shape
        out = torch.empty_like(base2)
        inner = torch.empty_like(base2) if need_inner else out   # a dummy pointer when unused
        _compose_fwd_kernel[_grid(T, D)](base2, lora2, g, out, inner, float(scale), T, D, WRITE_INNER=need_inner,
                                         BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D)
        return out, (inner if need_inner else None)
    ct = _compute_dtype(base2.dtype)
    slora = scale * lora2.to(ct)
    out = ((g - 1) * base2.to(ct) + g * slora).to(base2.dtype)
    return out, ((base2.to(ct) + slora).to(base2.dtype) if need_inner else None)


def _backward(d, inner, g, scale, need_g):
    """(d_base, d_lora, d_g or None) for d_out [T, D]."""
    if _on_triton(d):
        T, D = d.shape
        dbase, dlora = torch.empty_like(d), torch.empty_like(d)
        grid = _grid(T, D)
        part = torch.empty(grid[0], D, device=d.device, dtype=torch.float32) if need_g else dbase
        _compose_bwd_kernel[grid](d, inner if need_g else d, g, dbase, dlora, part, float(scale), T, D,
                                  NEED_G=need_g, BLOCK_T=_BLOCK_T, BLOCK_D=_BLOCK_D)
        return dbase, dlora, (part.sum(0) if need_g else None)
    ct = _compute_dtype(d.dtype)
    df = d.to(ct)
    dg = (inner.to(ct) * df).sum(0) if need_g else None
    return ((g - 1) * df).to(d.dtype), (g * scale * df).to(d.dtype), dg


class FusedDoRACompose(torch.autograd.Function):
    """out = (g - 1) * base + g * (s * lora) in one pass forward and one pass backward (module docstring)."""

    @staticmethod
    def forward(ctx, base, lora, g, scale):
        shape, D = base.shape, base.shape[-1]
        gf = _g_vector(g, base)
        need_g = ctx.needs_input_grad[2]
        out, inner = _forward(base.reshape(-1, D).contiguous(), lora.reshape(-1, D).contiguous(), gf, scale, need_g)
        ctx.save_for_backward(inner, gf)
        ctx.scale, ctx.g_shape, ctx.g_dtype, ctx.need_g = scale, g.shape, g.dtype, need_g
        return out.reshape(shape)

    @staticmethod
    def backward(ctx, d_out):
        inner, gf = ctx.saved_tensors
        shape, D = d_out.shape, d_out.shape[-1]
        dbase, dlora, dg = _backward(d_out.reshape(-1, D).contiguous(), inner, gf, ctx.scale, ctx.need_g)
        dg = dg.to(ctx.g_dtype).reshape(ctx.g_shape) if dg is not None else None
        return dbase.reshape(shape), dlora.reshape(shape), dg, None


def _g_vector(g: Tensor, base: Tensor) -> Tensor:
    return g.reshape(base.shape[-1]).to(_compute_dtype(base.dtype)).contiguous()


def dora_compose(base: Tensor, lora: Tensor, g: Tensor, scale: float) -> Tensor:
    """The fused compose (a Triton kernel on CUDA, the same formulas in PyTorch elsewhere): base and
    lora [..., D] of one dtype, g [D] or [1, D] (kept in fp32 inside, so g - 1 does not round to bf16).
    Without gradients it launches the forward kernel directly (no autograd node, no inner)."""
    if torch.is_grad_enabled() and (base.requires_grad or lora.requires_grad or g.requires_grad):
        return FusedDoRACompose.apply(base, lora, g, float(scale))
    D = base.shape[-1]
    out, _ = _forward(base.reshape(-1, D).contiguous(), lora.reshape(-1, D).contiguous(), _g_vector(g, base),
                      float(scale), False)
    return out.reshape(base.shape)


def compose_bytes(tokens: int, d_out: int, itemsize: int = 2) -> dict:
    """Bytes of [tokens, d_out] activations each compose reads and writes (g, a d_out vector, left out):
    eager (g-1)*base, g*lora, *s, + : 2 + 2 + 2 + 3 passes; fused: read base and lora, write out (3
    passes), and inner when m is trained (4)."""
    one = tokens * d_out * itemsize
    return dict(eager=9 * one, fused=3 * one, fused_train=4 * one)
