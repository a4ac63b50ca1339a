"""reprolib: the shared, tested library under the collection's notebooks.

    run.py      the harness (scales, seeds, device, timing, figures, claims, results.json)
    data/       synthetic sources with known structure and real offline sets
    models/     one configurable small GPT, an MLP
    optim/      optimizers as pure update functions plus thin torch.optim shells
    kernels/    hot paths with plain PyTorch references
    metrics/    spectra, curvature, training progress
    hyper/      gradient-based hyperparameter tuning (Self-Tuning Networks)
    train.py    one training loop and a multi-seed runner
    plotting.py one figure style
"""
from . import data, hyper, kernels, metrics, models, optim, plotting, train
from .run import Run, show_source

__version__ = "0.1.0"
__all__ = ["Run", "show_source", "data", "hyper", "kernels", "metrics", "models", "optim", "plotting", "train"]
