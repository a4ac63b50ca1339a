"""Newton-Schulz kernels: the batched call against a float64 reference of the same iteration."""
import pytest
import torch

from reprolib.kernels import newton_schulz

SHAPES = [(32, 32), (24, 96), (96, 24), (64, 192)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
def test_batched_matches_float64_reference(shape, device):
    G = torch.randn(6, *shape, device=device)  # fresh inputs every run
    ref = torch.stack([newton_schulz(g.double(), dtype=torch.float64) for g in G])
    assert rel(newton_schulz(G, dtype=torch.bfloat16), ref) < 2e-2  # bf16 rounding: 1.1-1.7e-2 measured
    assert rel(newton_schulz(G, dtype=torch.float32), ref) < 1e-5         # fp32: the same function
    poisoned = newton_schulz(G, dtype=torch.float32)
    assert torch.isfinite(poisoned).all() and poisoned.shape == G.shape


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_at_a_time_in_fp32(device):
    G = torch.randn(5, 48, 80, device=device)
    one = torch.stack([newton_schulz(g, dtype=torch.float32) for g in G])
    assert rel(newton_schulz(G, dtype=torch.float32), one) < 1e-5


def test_rejects_vectors():
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(5))
