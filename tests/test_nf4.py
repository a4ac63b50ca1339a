"""NF4 fake quantisation (reprolib.kernels.nf4) against bitsandbytes' NF4 (get_4bit_type, quantize_4bit /
dequantize_4bit on the CPU; a test-only dependency) and against the scheme's own bound."""
import pytest
import torch

from reprolib.kernels import nf4_code, nf4_dequantize, nf4_fake_quant, nf4_quantize

bnbF = pytest.importorskip("bitsandbytes.functional")


def test_code_book_equals_bitsandbytes_nf4_table():
    ref = bnbF.get_4bit_type("nf4", device="cpu")
    code = nf4_code()
    assert code.shape == (16,) and code[7] == 0 and code[0] == -1 and code[-1] == 1
    torch.testing.assert_close(code, ref, rtol=0, atol=2e-7)   # bitsandbytes stores the table as float literals


@pytest.mark.parametrize("shape", [(64, 128), (96, 256), (3, 64)])
def test_fake_quant_equals_bitsandbytes_round_trip(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 0.05
    q, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4")
    ref = bnbF.dequantize_4bit(q, state)
    idx, absmax = nf4_quantize(w)
    torch.testing.assert_close(absmax, state.absmax.float(), rtol=0, atol=0)
    # same level everywhere: a different level would differ by a whole code gap (>= 0.08 absmax)
    torch.testing.assert_close(nf4_fake_quant(w), ref, rtol=0, atol=1e-6 * float(w.abs().max()))


def test_round_trip_error_within_half_the_widest_gap():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(128, 192, generator=g) * torch.rand(128, 1, generator=g)   # blocks of different scales
    idx, absmax = nf4_quantize(w)
    assert idx.dtype == torch.uint8 and int(idx.max()) <= 15
    back = nf4_dequantize(idx, absmax, w.shape)
    code = nf4_code()
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    err = (back - w).abs().view(-1, 64) / absmax[:, None]
    assert float(err.max()) <= half_gap + 1e-6
    # the block's largest |w| is exact (it maps to +-1)
    blocks, bq = w.view(-1, 64), back.view(-1, 64)
    arg = blocks.abs().argmax(1)
    torch.testing.assert_close(bq.gather(1, arg[:, None]), blocks.gather(1, arg[:, None]))
    assert nf4_fake_quant(w.double()).dtype == torch.float64
    with pytest.raises(ValueError):
        nf4_quantize(torch.randn(10, 10))
