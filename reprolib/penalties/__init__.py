"""Penalties added to a training loss: invariance regularisers for domain generalization.

    invariance.py         the Colored-MNIST objective (annealed, rescaled penalty), the binary risk,
                          IRMv1, V-REx and Fishr
    hessian_alignment.py  HGP and Hutchinson alignment of the classifier head's Hessians and
                          gradients across environments (Hemati et al., ICCV 2023)
    replay.py             continual-learning replay objectives: ER and IDER's idempotence losses
                          (these take one model, not a stack)
    coverage.py           Direct Coverage Optimization, the pass@N-aligned loss of Chen et al. (2025),
                          which replaces cross-entropy rather than adding to it (per item, any stack shape)
    adversarial_smoothness.py  the robust (FGSM) smoothness penalty that keeps a value network's local
                          Lipschitz constant small (Zheng et al., ICLR 2023; SR2L form)

Every function accepts a stack of independent models (leading `stack_dims` dimensions on every
parameter, e.g. one per seed), returning one penalty per model: summing them gives each model its
own gradient. Submodules load on first use (reprolib/_lazy.py says why).
"""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".invariance": ["annealed_objective", "binary_risk", "fishr_penalty", "irm_penalty", "linear_head_sample_grads",
                    "vrex_penalty"],
    ".replay": ["er_loss", "ider_loss", "idempotence_distillation", "two_pass_ce"],
    ".adversarial_smoothness": ["adversarial_smoothness"],
    ".coverage": ["dco_gradient_factor", "dco_loss", "log1mexp", "log_miss_probability"],
    ".hessian_alignment": ["alignment_penalty", "autograd_hvp", "flat", "hessian_gradient_product", "hgp_penalty",
                           "hutchinson_diagonal", "hutchinson_penalty"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
