"""Layers: drop-in replacements for torch.nn building blocks, each with a function that swaps them into
a built model in place (swap.py: swap_modules under all of them): sigmaReparam linear layers; SeeDNorm
and DyT norms; simulated low-precision linear layers (NVFP4/MXFP4, per-layer mixed precision);
score-masked layers for mask search over frozen weights; low-rank adapters (LoRA, LoRA-XS, LoRA-SB) and DoRA layers.
Also what acts on those layers' weights: rank-k SVD compression with WeLore's per-matrix rank
allocation (rank_reduction.py) and metrics-weighted averaging of adapter checkpoints (checkpoint_merge.py).
Spiking networks: LIF neurons with a surrogate gradient (lif.py) and batch normalisation over spike
timesteps with vanilla or CaRe-BN moving statistics (care_bn.py).
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".care_bn": ["TemporalBatchNorm", "merge_moments", "temporal_moments"],
    ".lif": ["RectSpike", "lif"],
    ".checkpoint_merge": ["adapter_state", "load_adapter_state", "mwa_metric", "mwa_weights", "weighted_average"],
    ".embedding_sharing": ["GDESEmbedding", "MODES", "discriminator_table", "share_embeddings"],
    ".dora": ["DoRALinear", "dora_linears", "set_dora_mode"],
    ".fp4_linear": ["FP4Linear", "FP4Recipe", "fp4_linears"],
    ".mask_swap": ["swap_mask", "swap_masks"],
    ".lora": ["LoRALinear", "accumulate_grads", "lora_init", "lora_linears", "lora_sb_init", "lora_xs_init",
              "trainable_count", "update_approximation"],
    ".mixed_precision": ["COST", "PrecisionLinear", "QuantisedGemms", "gemm_shares", "plan_cost", "precision_linears",
                         "set_plan"],
    ".norms": ["DyT", "ScaledEmbedding", "SeeDNorm", "dyt_norms", "seednorm_norms"],
    ".pruning": ["apply_masks", "damped", "input_grams", "obs_reference", "reconstruction_error", "row_masks",
                 "sequential_prune", "sparsegpt_prune"],
    ".rank_reduction": ["low_rank_factors", "normalised_spectrum", "rank_reduction", "uniform_ranks", "welore_ranks"],
    ".score_mask": ["ScoreMasked", "StraightThroughMask", "magnitude_masks", "mask_iou", "score_masked",
                    "short_restriction_rate", "topk_mask", "update_masks"],
    ".sigma_reparam": ["SigmaReparamLinear", "sigma_reparam_linears"],
    ".swap": ["is_linear", "swap_modules"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
