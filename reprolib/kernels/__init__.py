"""Hot paths of the collection, each with a plain PyTorch reference that runs on the CPU.
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".dora": ["FusedDoRACompose", "compose_bytes", "compose_eager", "compose_naive", "compose_reference", "dora_compose",
              "row_norm_dense", "row_norm_factored", "triton_ready", "use_triton"],
    ".fake_quant": ["FakeQuantLinear", "quantize_activation", "quantize_linears", "quantize_weight", "ste"],
    ".fp4": ["e2m1_round", "e4m3_round", "hadamard", "mxfp4_quantize", "nvfp4_quantize", "random_hadamard",
             "rht_matrix"],
    ".graphs": ["CapturedCall"],
    ".graphed_step": ["GraphedStep"],
    ".lora_attention": ["adapted_weight", "attention_loss", "attention_svd", "budget_rank", "head_flops",
                        "lora_attention_grads", "relative_error", "scale_to_entry_bound", "svd_factors",
                        "taylor_degree", "taylor_factors", "taylor_features", "taylor_rank"],
    ".nf4": ["NF4_OFFSET", "nf4_code", "nf4_dequantize", "nf4_fake_quant", "nf4_quantize"],
    ".newton_schulz": ["NS5_COEFFICIENTS", "newton_schulz", "newton_schulz_many"],
    ".newton_schulz_schedule": ["NS6_SCHEDULE", "newton_schulz_schedule"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
