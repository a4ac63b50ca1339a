"""Training-dynamics metrics: weight spectra, loss curvature, the softmax step radius, and
progress-to-target summaries.
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".curvature": ["block_quadratic_forms", "directional_sharpness", "hvp", "quadratic_form", "taylor_terms",
                   "top_hessian_eigenvalue"],
    ".cost": ["count_flops", "count_passes"],
    ".memory": ["optimizer_state_bytes", "parameter_bytes"],
    ".progress": ["classification_error", "ema", "median_spread", "steps_fraction", "steps_to_target", "tail_drop",
                  "tail_share"],
    ".softmax_radius": ["binary_radius", "log_partition_taylor", "logit_jvp", "logit_spread", "loss_along_line",
                        "partition_radius", "random_direction", "softmax_radius", "taylor_partial_sums",
                        "unit_direction"],
    ".spectra": ["effective_rank", "row_norm_cv", "spectral_norm", "stable_rank"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
