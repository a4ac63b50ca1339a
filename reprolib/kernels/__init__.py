"""Hot paths of the collection, each with a plain PyTorch reference that runs on the CPU."""
from .newton_schulz import NS5_COEFFICIENTS, newton_schulz

__all__ = ["NS5_COEFFICIENTS", "newton_schulz"]
