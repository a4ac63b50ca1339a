"""Training-dynamics metrics: weight spectra, loss curvature, and progress-to-target summaries."""

from .curvature import (
    block_quadratic_forms,
    directional_sharpness,
    hvp,
    quadratic_form,
    taylor_terms,
    top_hessian_eigenvalue,
)
from .memory import optimizer_state_bytes, parameter_bytes
from .progress import classification_error, ema, median_spread, steps_to_target
from .spectra import effective_rank, row_norm_cv, spectral_norm, stable_rank

__all__ = [
    "spectral_norm",
    "stable_rank",
    "effective_rank",
    "row_norm_cv",
    "hvp",
    "quadratic_form",
    "directional_sharpness",
    "block_quadratic_forms",
    "top_hessian_eigenvalue",
    "taylor_terms",
    "ema",
    "classification_error",
    "steps_to_target",
    "median_spread",
    "optimizer_state_bytes",
    "parameter_bytes",
]
