"""Optimizers: each a pure update function plus a thin torch.optim.Optimizer.

`make_optimizer(name, model, lr, ...)` builds any of them from the registry `OPTIMIZERS`. The
matrix optimizers (Muon family, SinkGD, AuON) update hidden matrices and hand embeddings, the
head, gains and routers to AdamW at `adamw_lr`; Conda projects hidden matrices and gives the rest
its own unprojected Adam, as its official code does; AdamW, Lion and Stable-SPAM update everything.
"""
import torch

from .adamw import adamw_update
from .auon import AuON, auon_update
from .conda import Conda, conda_basis, conda_update
from .grad_noise import GradientNoise, add_gradient_noise, noise_std
from .lion import Lion, lion_update
from .muon import LR_SCALES, Muon, is_hidden_matrix, muon_lr_scale, muon_param_groups, muon_update
from .normuon import NorMuon, normuon_update
from .sinkgd import SinkGD, sinkhorn_normalize
from .stable_spam import StableSPAM, cosine_scale, stable_spam_update
from .sven import Sven, residual_jacobian, sven_step, truncated_pinv_solve
from .tract import TrActConv2d, TrActLinear, tract, tract_grad

MATRIX_OPTIMIZERS = {"muon": Muon, "normuon": NorMuon, "sinkgd": SinkGD, "auon": AuON}
OPTIMIZERS = ("adamw", "lion", "stable_spam", "conda", *MATRIX_OPTIMIZERS)


def make_optimizer(name: str, model: torch.nn.Module, lr: float, adamw_lr: float | None = None,
                   weight_decay: float = 0.0, **kwargs) -> torch.optim.Optimizer:
    """Build optimizer `name` for `model`. kwargs go to the optimizer (e.g. betas, lr_scale);
    the matrix optimizers need `adamw_lr` for the non-matrix parameters (AdamW betas (0.9, 0.95))."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        kwargs.setdefault("betas", (0.9, 0.95))
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=all(p.is_cuda for p in params), **kwargs)
    if name == "lion":
        return Lion(params, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "stable_spam":
        return StableSPAM(params, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "conda":
        groups = muon_param_groups(model, lr, lr, weight_decay, weight_decay)
        for g in groups:
            g["use_conda"] = g.pop("use_muon")
        return Conda(groups, lr=lr, **kwargs)
    if name in MATRIX_OPTIMIZERS:
        if adamw_lr is None:
            raise ValueError(f"{name} needs adamw_lr for the non-matrix parameters")
        kwargs.setdefault("betas", (0.9, 0.95))
        return MATRIX_OPTIMIZERS[name](muon_param_groups(model, lr, adamw_lr, weight_decay), lr=lr, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; valid: {OPTIMIZERS}")


__all__ = ["OPTIMIZERS", "MATRIX_OPTIMIZERS", "LR_SCALES", "AuON", "Conda", "GradientNoise", "Lion", "Muon",
           "NorMuon", "SinkGD", "StableSPAM", "Sven", "TrActConv2d", "TrActLinear", "adamw_update",
           "add_gradient_noise", "auon_update", "conda_basis", "conda_update", "cosine_scale", "is_hidden_matrix",
           "lion_update", "make_optimizer", "muon_lr_scale", "muon_param_groups", "muon_update", "noise_std",
           "normuon_update", "residual_jacobian", "sinkhorn_normalize", "stable_spam_update", "sven_step",
           "tract", "tract_grad", "truncated_pinv_solve"]
