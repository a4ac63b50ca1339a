"""Gradient-based hyperparameter tuning: Self-Tuning Networks (stn.py).
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({".stn": ["Hyperparameter", "STNLinear", "STNMLP", "STNTuner", "dropout", "entropy_term",
                                "is_hyper_step", "perturb", "scale_jitter", "stn_linear"]})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
