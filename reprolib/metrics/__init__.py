"""Training-dynamics metrics: weight spectra, loss curvature and exact Hessians, attention entropy, the
softmax step radius, neural collapse, and progress-to-target summaries.
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".activation_stats": ["LayerStats", "batch_std"],
    ".attention": ["attention_entropy", "attention_logits", "entropy_lower_bound", "head_stats", "row_logit_norm"],
    ".curvature": ["block_quadratic_forms", "directional_sharpness", "hvp", "quadratic_form", "taylor_terms",
                   "top_hessian_eigenvalue"],
    ".calibration": ["ece", "reliability_bins"],
    ".continual": ["final_accuracy", "forgetting"],
    ".cost": ["count_flops", "count_passes"],
    ".hessian": ["hessian_matrix", "linear_head_hessian", "linear_head_hvp", "logit_hessian"],
    ".lipschitz": ["frontier_gap", "lipschitz_bound", "local_lipschitz", "pareto_frontier", "rms_operator_norm",
                   "shared_bound_grid"],
    ".memory": ["optimizer_state_bytes", "parameter_bytes"],
    ".neural_collapse": ["class_means", "collapse_metrics", "covariance_traces", "covariances", "nc1",
                         "nc1_trace_ratio", "nc2_etf_distance", "nc3_self_duality"],
    ".precision_divergence": ["adam_v_hat", "capture_gemm_operands", "divergence_table", "loss_divergence",
                              "measured_loss_divergence", "weight_divergence"],
    ".pass_at_n": ["correct_probability", "pass_at_n", "pass_at_n_curve", "pass_at_n_monte_carlo"],
    ".rank": ["average_ranks", "spearman"],
    ".progress": ["classification_error", "ema", "median_spread", "steps_fraction", "steps_to_target", "tail_drop",
                  "tail_share"],
    ".softmax_radius": ["binary_radius", "log_partition_taylor", "logit_jvp", "logit_spread", "loss_along_line",
                        "partition_radius", "random_direction", "softmax_radius", "taylor_partial_sums",
                        "unit_direction"],
    ".sparsity": ["drop_rates", "essential_sparsity"],
    ".spectra": ["effective_rank", "row_norm_cv", "spectral_norm", "stable_rank"],
    ".stopping": ["Stop", "patience_stop", "round_like_pandas", "variation_stop"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
