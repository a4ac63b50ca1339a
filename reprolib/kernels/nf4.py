"""NF4 ("4-bit NormalFloat") blockwise quantisation of frozen weights, simulated in floating point.

QLoRA: "QLoRA: Efficient Finetuning of Quantized LLMs", Dettmers, Pagnoni, Holtzman, Zettlemoyer
(2023), https://arxiv.org/abs/2305.14314; the code book and the blockwise absmax scheme as in
bitsandbytes (functional.py: create_normal_map, get_4bit_type("nf4"), quantize_4bit with
quant_type="nf4"), which the tests check this against.

Code book (Sec. 3, "4-bit NormalFloat"): the quantiles of N(0, 1), split so that 0 is exact, with 8
positive and 7 negative levels, scaled to [-1, 1]:
    q+_i = Phi^{-1}(p_i),  p = linspace(delta, 1/2, 9)[:-1]   (8 values),
    q-_i = -Phi^{-1}(p_i), p = linspace(delta, 1/2, 8)[:-1]   (7 values),
    code = sorted({q-} u {0} u {q+}) / max q+,   delta = 0.9677083 (bitsandbytes' offset).
Blockwise absmax quantisation (block size B = 64 consecutive entries of the flattened tensor):
    c_b = max_{i in b} |w_i|,   idx_i = argmin_j |w_i / c_b - code_j|,   w~_i = code[idx_i] c_b.
Double quantisation of the constants c_b (QLoRA's second step) is not simulated: it changes the
stored bytes, not the dequantised weights beyond the 8-bit error of c_b.
"""
import torch
from torch import Tensor

NF4_OFFSET = 0.9677083


def nf4_code(offset: float = NF4_OFFSET, dtype=torch.float32) -> Tensor:
    """The 16 NF4 levels, ascending, from the normal quantiles (module docstring)."""
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    code = torch.cat([pos, neg, torch.zeros(1, dtype=torch.float64)]).sort().values
    return (code / code.max()).to(dtype)


def nf4_quantize(w: Tensor, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """(indices uint8 [n], absmax float32 [n / B]) of the flattened w; n must divide into blocks."""
    flat = w.detach().float().reshape(-1)
    if flat.numel() % block_size:
        raise ValueError(f"{flat.numel()} entries do not split into blocks of {block_size}")
    blocks = flat.view(-1, block_size)
    absmax = blocks.abs().amax(1)
    x = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]    # in [-1, 1]
    code = nf4_code().to(w.device)
    idx = (x[..., None] - code).abs().argmin(-1)                                  # nearest level
    return idx.to(torch.uint8).reshape(-1), absmax


def nf4_dequantize(idx: Tensor, absmax: Tensor, shape, block_size: int = 64, dtype=torch.float32) -> Tensor:
    """w~ = code[idx] * absmax of its block, reshaped to `shape`."""
    code = nf4_code().to(idx.device)
    return (code[idx.long()].view(-1, block_size) * absmax[:, None]).reshape(shape).to(dtype)


def nf4_fake_quant(w: Tensor, block_size: int = 64) -> Tensor:
    """Quantise to NF4 and dequantise (same shape and dtype as w): what a frozen QLoRA base computes with."""
    idx, absmax = nf4_quantize(w, block_size)
    return nf4_dequantize(idx, absmax, w.shape, block_size, w.dtype)
