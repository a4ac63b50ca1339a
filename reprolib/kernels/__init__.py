"""Hot paths of the collection, each with a plain PyTorch reference that runs on the CPU."""
from .fake_quant import FakeQuantLinear, quantize_activation, quantize_linears, quantize_weight, ste
from .graphs import CapturedCall
from .newton_schulz import NS5_COEFFICIENTS, newton_schulz, newton_schulz_many

__all__ = ["NS5_COEFFICIENTS", "CapturedCall", "FakeQuantLinear", "newton_schulz", "newton_schulz_many",
           "quantize_activation", "quantize_linears", "quantize_weight", "ste"]
