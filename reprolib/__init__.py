"""reprolib: the shared, tested library under the collection's notebooks.

    run/        the harness: scales, seeds, device, claims and verdicts, tuning, provenance
    data/       synthetic sources with known structure and real offline sets
    envs/       reinforcement-learning environments as batched torch tensors (Pendulum)
    models/     one configurable small GPT, an MLP, a small CNN, a tiny ViT
    layers/     drop-in replacements for torch.nn building blocks (sigmaReparam)
    optim/      optimizers as pure update functions plus thin torch.optim shells
    kernels/    hot paths with plain PyTorch references
    metrics/    spectra, curvature, attention entropy, the softmax step radius, training progress
    penalties/  regularisers added to a loss (invariance, Hessian alignment)
    rl/         reinforcement-learning algorithms (value iteration, model-based fitted Q iteration, TD3)
    hyper/      gradient-based hyperparameter tuning (Self-Tuning Networks)
    train.py    one training loop and a multi-seed runner
    plotting.py one figure style

Subpackages load on first use (reprolib/_lazy.py says why).
"""
from ._lazy import attach

_EXPORTS = {"bench": ".bench", "data": ".data", "envs": ".envs", "hyper": ".hyper", "kernels": ".kernels", "layers": ".layers",
            "metrics": ".metrics", "models": ".models", "optim": ".optim", "penalties": ".penalties",
            "plotting": ".plotting", "train": ".train", "rl": ".rl", "Run": ".run", "show_source": ".run"}
# a subpackage is exported as itself; adding one adds an entry and nothing else (run/provenance.py says why)
attach(__name__, _EXPORTS, modules=[name for name, module in _EXPORTS.items() if module == f".{name}"])

__version__ = "0.2.0"
__all__ = ["Run", "show_source", "data", "envs", "rl", "hyper", "kernels", "layers", "metrics", "models", "optim", "penalties",
           "plotting", "train"]
