"""FP4 (E2M1) block-scaled formats, NVFP4 and MXFP4, as fake quantisation, and the random Hadamard transform.

NVIDIA, "Pretraining Large Language Models with NVFP4", 2025, arXiv 2509.25149. NVIDIA's Transformer
Engine implements the recipe (its pure-PyTorch NVFP4 reference quantiser is the one this follows).
Every function quantises and dequantises in float32, so an FP4 GEMM becomes an ordinary matmul of
dequantised operands: the numerics are emulated exactly, the speed of FP4 tensor cores is not.

E2M1 (1 sign, 2 exponent, 1 mantissa bit) holds 0, +-0.5, +-1, +-1.5, +-2, +-3, +-4, +-6 (the paper's
format section). A value y in units of its block's scale is rounded to it, saturating at +-6:

    round to nearest, ties to even      0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4
    stochastic (gradients; recipe)      up to the next grid value with probability (|y| - lo) / (hi - lo),
                                        so that E[q] = y for |y| <= 6

NVFP4 (the format section, and the quantisation procedure in the appendix): blocks of 16 consecutive
elements along the GEMM's reduction dimension (the last dim here) share a scale stored in FP8 E4M3, and
one FP32 scale per tensor maps the block scales into E4M3's range:

    s_enc   = 6 * 448 / amax(x)                      global encode scale (E2M1 max x E4M3 max)
    s_dec_b = e4m3(amax_b / 6 * s_enc)               block decode scale, rounded to E4M3 (ties to even)
    q       = e2m1(x * s_enc / s_dec_b)              the 4-bit value
    x_hat   = q * s_dec_b / s_enc                    what the GEMM multiplies (decode scales applied)

MXFP4 (OCP Microscaling v1.0; the paper compares the two formats): blocks of 32 share a power-of-two
(E8M0) scale, no per-tensor scale. The exponent is rounded up, s_b = 2^ceil(log2(amax_b / 6)), so that no element
saturates (as Transformer Engine's reference and cuBLAS's MX block quantisation do);
`scale_rounding="floor"` is the OCP specification's s_b = 2^(floor(log2 amax_b) - 2).

2D blocks (weights; recipe): a 16 x 16 tile (32 x 32 for MXFP4) shares one scale, so W and W^T quantise
to transposes of each other and the forward and backward passes see the same weights.

Random Hadamard transform (Wgrad inputs; recipe): each block of 16 along the last dim is multiplied by
the orthonormal T = diag(s) H_16 / 4, with H_16 the Sylvester-Hadamard matrix and s a random sign vector
drawn once from a fixed seed. Applied to both operands along the reduction dimension it leaves the
exact product unchanged, (A T)(B T)^T = A B^T, while spreading a block's outlier over its 16 entries.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

E2M1_MAX, E4M3_MAX = 6.0, 448.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)   # the non-negative half of the grid
NVFP4_BLOCK, MXFP4_BLOCK, RHT_SIZE = 16, 32, 16
_F32_MAX = torch.finfo(torch.float32).max


def e2m1_round(y: Tensor, stochastic: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """y rounded to the E2M1 grid (module docstring), saturating at +-6; the sign is kept."""
    a = y.abs().clamp(max=E2M1_MAX)
    step = torch.where(a < 2, 0.5, torch.where(a < 4, 1.0, 2.0))   # grid spacing on [0, 2), [2, 4), [4, 6]
    k = a / step
    if stochastic:   # floor(k + u), u ~ U[0, 1): up with probability k - floor(k)
        u = torch.rand_like(k) if generator is None else torch.rand(k.shape, generator=generator, device=k.device)
        k = torch.floor(k + u)
    else:
        k = torch.round(k)   # half to even; a tie's even neighbour is the grid value with mantissa 0
    return torch.copysign(k * step, y)


def e4m3_round(s: Tensor) -> Tensor:
    """Non-negative s to the nearest FP8 E4M3 value (ties to even, saturating at 448), as float32."""
    return s.clamp(max=E4M3_MAX).to(torch.float8_e4m3fn).float()


def _tiles(x: Tensor, block: int, two_d: bool) -> Tensor:
    """x as (rows / b_r, b_r, cols / block, block): 1 x block tiles along the last dim, or block x block."""
    x2 = x.float().reshape(-1, x.shape[-1])
    rows, cols = x2.shape
    br = block if two_d else 1
    if cols % block or rows % br:
        raise ValueError(f"shape {tuple(x.shape)} does not split into {br} x {block} blocks")
    return x2.reshape(rows // br, br, cols // block, block)


def nvfp4_quantize(x: Tensor, two_d: bool = False, stochastic: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
    """x fake-quantised to NVFP4 along its last dim and dequantised (module docstring): 1 x 16 blocks,
    or 16 x 16 with two_d; round to nearest even, or stochastic rounding."""
    t = _tiles(x, NVFP4_BLOCK, two_d)
    amax_b = t.abs().amax(dim=(1, 3), keepdim=True)
    s_enc = (E2M1_MAX * E4M3_MAX / amax_b.amax()).clamp(max=_F32_MAX)    # global encode scale
    s_dec = 1.0 / s_enc
    s_dec_b = e4m3_round(amax_b / E2M1_MAX * s_enc)                         # block decode scale in E4M3
    s_enc_b = (1.0 / (s_dec_b * s_dec)).clamp(max=_F32_MAX)               # a zero block gets the largest finite scale
    q = e2m1_round(t * s_enc_b, stochastic, generator)
    return (q * s_dec_b * s_dec).reshape(x.shape).to(x.dtype)


def mxfp4_quantize(x: Tensor, two_d: bool = False, stochastic: bool = False, scale_rounding: str = "ceil",
                   generator: torch.Generator | None = None) -> Tensor:
    """x fake-quantised to MXFP4 along its last dim and dequantised: 1 x 32 blocks (32 x 32 with two_d),
    power-of-two scales rounded up ("ceil") or by the OCP rule ("floor"; module docstring)."""
    t = _tiles(x, MXFP4_BLOCK, two_d)
    amax_b = t.abs().amax(dim=(1, 3), keepdim=True)
    if scale_rounding == "ceil":
        e = torch.ceil(torch.log2(amax_b / E2M1_MAX))
    elif scale_rounding == "floor":
        e = torch.floor(torch.log2(amax_b)) - 2          # 2 = the exponent of E2M1's largest power of two
    else:
        raise ValueError(f"scale_rounding={scale_rounding!r}; valid: 'ceil', 'floor'")
    # E8M0 reaches 2^-127, but that is a subnormal float32: GPU kernels flush it to zero and a zero block
    # became 0/0 = NaN. 2^-126 is the smallest normal; it changes only blocks whose amax is below 2^-123.
    s_b = torch.exp2(e.clamp(-126, 127))
    q = e2m1_round(t / s_b, stochastic, generator)
    return (q * s_b).reshape(x.shape).to(x.dtype)


def quantize(x: Tensor, fmt: str = "nvfp4", two_d: bool = False, stochastic: bool = False) -> Tensor:
    """nvfp4_quantize or mxfp4_quantize by name."""
    if fmt == "nvfp4":
        return nvfp4_quantize(x, two_d, stochastic)
    if fmt == "mxfp4":
        return mxfp4_quantize(x, two_d, stochastic)
    raise ValueError(f"fmt={fmt!r}; valid: 'nvfp4', 'mxfp4'")


@functools.cache
def compiled_quantize():
    """quantize through torch.compile (one small fused kernel set per format, block shape and rounding
    mode, any tensor shape), for CUDA: the eager version launches some twenty kernels per tensor."""
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    return torch.compile(quantize, dynamic=True, fullgraph=True)


def hadamard(n: int, dtype=torch.float32, device=None) -> Tensor:
    """The n x n Sylvester-Hadamard matrix (entries +-1, H H^T = n I); n a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"n={n} is not a power of two")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def rht_matrix(seed: int = 0, n: int = RHT_SIZE, dtype=torch.float32, device=None) -> Tensor:
    """T = diag(s) H_n / sqrt(n), s a random sign vector drawn from `seed` (fixed for the whole run)."""
    s = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)).to(dtype) * 2 - 1
    return (s[:, None] * hadamard(n, dtype) / n ** 0.5).to(device)


@functools.lru_cache(maxsize=None)
def _rht_matrix_on(seed: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """rht_matrix(seed) built once per (seed, dtype, device) and kept there: building it on the host and
    copying it to a GPU at every call made each call wait for the GPU (a blocking host-to-device copy)."""
    with torch.inference_mode(False), torch.no_grad():
        return rht_matrix(seed, dtype=dtype, device=device)


def random_hadamard(x: Tensor, seed: int = 0) -> Tensor:
    """x with every block of 16 along its last dim multiplied by rht_matrix(seed): x_blocks @ T."""
    n = x.shape[-1]
    if n % RHT_SIZE:
        raise ValueError(f"last dim {n} does not split into blocks of {RHT_SIZE}")
    t = _rht_matrix_on(seed, x.dtype, x.device)
    return (x.reshape(*x.shape[:-1], n // RHT_SIZE, RHT_SIZE) @ t).reshape(x.shape)
