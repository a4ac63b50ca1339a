"""Models: one configurable small GPT, an MLP, a small CNN and a tiny ViT; stacks trained as one model
(ModelStack: R copies of any architecture through vmap; StackedMLP: a bias-free MLP with a leading
stack dimension); a classifier's penultimate features (WithFeatures); re-initialisation (fresh draws,
shrink-and-perturb); domain-specific heads with their test-time selection (DomainHeads, DRM); the unconstrained features model (`models.ufm`, a submodule).
Submodules load on first use (reprolib/_lazy.py says why)."""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({".cnn": ["SmallCNN"], ".gpt": ["GPT", "GPTConfig", "apply_rope", "rope_tables"],
                       ".mlp": ["MLP"], ".stacked_mlp": ["StackedMLP", "relu_half"], ".vit": ["TinyViT"],
                       ".init": ["fresh_init", "shrink_perturb"], ".stack": ["ModelStack"], ".stacked_sn_mlp": ["StackedSNMLP"],
                       ".stacked_sn_mlp_fixed": ["StackedSNMLPFixed"],
                       ".spiking_actor": ["StackedMLPActor", "StackedSpikingActor"],
                       ".features": ["WithFeatures"],
                       ".projector": ["MultiHeadProjector", "projection_mlp"],
                       ".generate": ["NGramBlocker", "generate", "greedy_complete", "top_p_filter"],
                       ".electra": ["BidirectionalAttention", "Electra", "ElectraOut", "bidirectional", "mask_tokens"],
                       ".splat2d": ["SplatAdam", "init_splats", "pixel_grid", "render"],
                       ".idempotent": ["IdempotentMLP"],
                       ".ntk_two_layer": ["ntk_two_layer", "ntk_two_layer_init"],
                       ".sequence_input": ["vector_input_gpt"],
                       ".mllm": ["RandomPatchEncoder", "TinyMLLM", "aligned_layernorm"],
                       ".domain_heads": ["DomainHeads", "drm_loss", "select_batch", "select_sample", "softmax_entropy"]})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
