"""Gradient-based hyperparameter tuning: Self-Tuning Networks (stn.py)."""
from .stn import (Hyperparameter, STNLinear, STNMLP, STNTuner, dropout, entropy_term, is_hyper_step,
                  perturb, scale_jitter, stn_linear)

__all__ = ["Hyperparameter", "STNLinear", "STNMLP", "STNTuner", "dropout", "entropy_term", "is_hyper_step",
           "perturb", "scale_jitter", "stn_linear"]
