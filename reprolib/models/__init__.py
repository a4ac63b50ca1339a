"""Models: one configurable small GPT, an MLP, a small CNN and a tiny ViT; networks stacked for
side-by-side training; the unconstrained features model (`models.ufm`, a submodule).
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({".cnn": ["SmallCNN"], ".gpt": ["GPT", "GPTConfig", "apply_rope", "rope_tables"],
                       ".mlp": ["MLP"], ".vit": ["TinyViT"],
                       ".stacked": ["Stacked", "WithFeatures"]})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
